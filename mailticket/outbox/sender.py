"""The outbox worker: delivers queued rows exactly once, eventually.

A row is marked 'sending' (with a lease) and committed before the transport
is called; the outcome is committed after. A crash in between leaves the
row 'sending': when its lease runs out it becomes 'uncertain' and is never
re-sent automatically, since the server may have taken it. 4xx and
connection errors retry with exponential backoff and jitter; 5xx and
exhausted retries fail with the server's reply.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from mailticket.clock import Clock
from mailticket.domain import OutboxState
from mailticket.errors import PermanentError, TemporaryError
from mailticket.outbox.transport import Transport
from mailticket.settings import OutboundSettings
from mailticket.store import repo
from mailticket.store.db import Database
from mailticket.store.models import OutboxRow

log = logging.getLogger("mailticket.sender")

UNCERTAIN_REASON = (
    "delivery was interrupted after the mail was handed to the transport; it is not re-sent "
    "automatically to avoid a duplicate. Check the server's log, then `mailticket outbox retry {id}`"
)
UNEXPECTED_REASON = (
    "unexpected error from the transport: {error}; whether the server took the mail is unknown, so it is "
    "not re-sent automatically. Check the server's log, then `mailticket outbox retry {id}`"
)


@dataclass(frozen=True)
class FlushResult:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    uncertain: int = 0


class Sender:
    def __init__(
        self,
        db: Database,
        transport_factory: Callable[[], Transport],
        settings: OutboundSettings,
        clock: Clock,
        envelope_from: str,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self._transport_factory = transport_factory
        self._settings = settings
        self._clock = clock
        self._envelope_from = envelope_from
        self._rng = rng or random.Random()

    @property
    def lease(self) -> dt.timedelta:
        """How long one send may take before its row counts as interrupted."""
        timeout = self._settings.smtp.timeout if self._settings.smtp else 30.0
        return dt.timedelta(seconds=timeout * 3 + 60)

    def flush(self, limit: int = 20) -> FlushResult:
        uncertain = self._expire_leases()
        with self._db.transaction() as session:
            due = [row.id for row in repo.due_outbox(session, self._clock.now(), limit)]
        if not due:
            return FlushResult(uncertain=uncertain)
        transport = self._transport_factory()
        sent = retried = failed = 0
        try:
            for row_id in due:
                # Each row is claimed right before its send: a row is 'sending' only while
                # it really is with the transport, so a crash strands at most that one.
                claimed = self._claim(row_id)
                if claimed is None:
                    continue  # another instance took it
                to_addr, content, attempts = claimed
                outcome = self._send_one(transport, row_id, to_addr, content, attempts)
                sent += outcome == "sent"
                retried += outcome == "retry"
                failed += outcome == "failed"
                if outcome == "uncertain":
                    uncertain += 1
                    # After an unexpected error the connection's state is unknown: start afresh.
                    transport.close()
                    transport = self._transport_factory()
        finally:
            transport.close()
        return FlushResult(sent, retried, failed, uncertain)

    def _claim(self, row_id: int) -> tuple[str, bytes, int] | None:
        now = self._clock.now()
        with self._db.transaction() as session:
            row = repo.claim_outbox(session, row_id, now)
            if row is None:
                return None
            row.state = OutboxState.SENDING
            row.attempts += 1
            row.next_attempt_at = now + self.lease
            return row.to_addr, row.content, row.attempts

    def _send_one(self, transport: Transport, row_id: int, to_addr: str, content: bytes, attempts: int) -> str:
        try:
            transport.send(self._envelope_from, [to_addr], content)
        except PermanentError as exc:
            self._finish(row_id, OutboxState.FAILED, str(exc))
            log.warning("outbox #%d to %s failed: %s", row_id, to_addr, exc)
            return "failed"
        except TemporaryError as exc:
            if attempts >= self._settings.max_attempts:
                self._finish(row_id, OutboxState.FAILED, f"gave up after {attempts} attempts: {exc}")
                log.warning("outbox #%d to %s failed after %d attempts: %s", row_id, to_addr, attempts, exc)
                return "failed"
            delay = self._backoff(attempts)
            self._finish(row_id, OutboxState.QUEUED, str(exc), retry_in=delay)
            log.info("outbox #%d to %s: %s; retry in %.0fs", row_id, to_addr, exc, delay.total_seconds())
            return "retry"
        except Exception as exc:  # a bug, not an answer: must not strand the rest of the claimed batch
            self._finish(row_id, OutboxState.UNCERTAIN, UNEXPECTED_REASON.format(error=repr(exc), id=row_id))
            log.exception("outbox #%d to %s: unexpected error from the transport", row_id, to_addr)
            return "uncertain"
        self._finish(row_id, OutboxState.SENT, None)
        log.info("outbox #%d sent to %s", row_id, to_addr)
        return "sent"

    def _backoff(self, attempts: int) -> dt.timedelta:
        base = self._settings.retry_base_seconds * (2 ** (attempts - 1))
        seconds = min(base, self._settings.retry_max_seconds) * self._rng.uniform(0.8, 1.2)
        return dt.timedelta(seconds=seconds)

    def _finish(self, row_id: int, state: OutboxState, error: str | None,
                retry_in: dt.timedelta | None = None) -> None:
        now = self._clock.now()
        with self._db.transaction() as session:
            row = session.get_one(OutboxRow, row_id)
            row.state = state
            row.last_error = error
            if state == OutboxState.SENT:
                row.sent_at = now
            if retry_in is not None:
                row.next_attempt_at = now + retry_in

    def _expire_leases(self) -> int:
        now = self._clock.now()
        with self._db.transaction() as session:
            rows = list(repo.stale_sending(session, now))
            for row in rows:
                row.state = OutboxState.UNCERTAIN
                row.last_error = UNCERTAIN_REASON.format(id=row.id)
                log.warning("outbox #%d to %s: %s", row.id, row.to_addr, row.last_error)
        return len(rows)

    def retry(self, row_id: int) -> OutboxRow | None:
        """An admin's decision: queue a failed or uncertain row again."""
        now = self._clock.now()
        with self._db.transaction() as session:
            row = session.get(OutboxRow, row_id)
            if row is None or row.state not in (OutboxState.FAILED, OutboxState.UNCERTAIN):
                return row
            row.state = OutboxState.QUEUED
            row.next_attempt_at = now
            row.last_error = None
            return row
