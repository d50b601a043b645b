"""Each `mailticket serve` says it is alive: a row in ``instances`` it refreshes every few seconds.

`mailticket status` reads the rows: an instance whose last beat is recent runs; one
whose beats stopped (kill -9, a crashed host) is stale. A clean stop removes its row.
Times come from the injected clock.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from mailticket.clock import Clock
from mailticket.store import readmodel
from mailticket.store.db import Database
from mailticket.store.models import ServeInstance

log = logging.getLogger("mailticket.heartbeat")

INTERVAL = readmodel.HEARTBEAT_INTERVAL  # `mailticket status` (the read model) judges staleness by it
STALE_AFTER = readmodel.STALE_AFTER  # three missed beats
FORGET_AFTER = dt.timedelta(days=1)  # a stale row older than this is removed by the next beat


class Heartbeat:
    """Writes this instance's row; a failure is logged, never raised (a beat must not stop mail)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self.started_at = clock.now()

    def beat(self) -> None:
        now = self._clock.now()
        try:
            with self._db.transaction() as session:
                row = session.get(ServeInstance, self.id)
                if row is None:
                    session.add(ServeInstance(id=self.id, host=self.host, pid=self.pid,
                                              started_at=self.started_at, last_seen=now))
                else:
                    row.last_seen = now
                session.execute(delete(ServeInstance).where(ServeInstance.last_seen < now - FORGET_AFTER))
        except Exception as exc:
            log.warning("heartbeat not recorded: %s", exc)

    def remove(self) -> None:
        """On a clean stop: this instance no longer runs."""
        try:
            with self._db.transaction() as session:
                session.execute(delete(ServeInstance).where(ServeInstance.id == self.id))
        except Exception as exc:
            log.warning("heartbeat row not removed (status will show it stale): %s", exc)


def instances(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    """Every instance that beat recently or not so recently, oldest first, each running or stale."""
    return readmodel.instances(session, now)


def ago(now: dt.datetime, then: dt.datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def describe(instance: dict[str, Any], now: dt.datetime) -> str:
    """One line for `mailticket status`."""
    last = dt.datetime.fromisoformat(instance["last_seen"])
    started = instance["started_at"][:19].replace("T", " ")
    where = f"on {instance['host']} pid {instance['pid']} since {started}"
    if instance["running"]:
        return f"serve: running {where}, last beat {ago(now, last)}"
    return f"serve: stale {where}: last beat {ago(now, last)} (killed?)"
