"""Each mail source's health, kept in the database so `mailticket status` can show it."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from typing import Any

from mailticket.clock import Clock
from mailticket.store import repo
from mailticket.store.db import Database

log = logging.getLogger("mailticket.status")

CONNECTING = "connecting"
IDLE = "idle"  # connected, waiting in IMAP IDLE
WAITING = "waiting"  # connected, polling at an interval
POLLING = "polling"
ERROR = "error"  # failed; next_retry_at says when it tries again
STOPPED = "stopped"


class StatusBoard:
    """Writes state changes; a failure to write is logged, never raised (status must not stop mail)."""

    def __init__(self, db: Database, clock: Clock, instance: str | None = None) -> None:
        self._db = db
        self.clock = clock
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"

    def set(
        self,
        name: str,
        state: str,
        detail: str = "",
        *,
        success: bool = False,
        error: str | None = None,
        next_retry_at: dt.datetime | None = None,
    ) -> None:
        now = self.clock.now()
        values: dict[str, Any] = {
            "kind": name.partition(":")[0],
            "state": state,
            "detail": detail[:2000],
            "instance": self.instance,
            "next_retry_at": next_retry_at,
            "updated_at": now,
        }
        if success:
            values["last_success_at"] = now
        if error is not None:
            values["last_error"] = error[:2000]
            values["last_error_at"] = now
        try:
            with self._db.transaction() as session:
                repo.save_source_status(session, name, values)
        except Exception as exc:  # the database is down: the source's own retry handles it
            log.debug("could not record status of %s: %s", name, exc)
