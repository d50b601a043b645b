"""The outbox worker: delivers queued rows exactly once, eventually.

One attempt moves a row through these states, each committed on its own:

- claimed: 'queued' -> 'sending', with a lease and attempts + 1, before the
  transport is called. Nothing has left yet.
- hand-over: the transport calls back at the last moment before delivery
  becomes possible (SMTP: recipients accepted and the server's 354 in; maildir:
  the file fsynced in tmp/, before its rename into new/), and the row becomes
  'delivering'. If that commit fails, the transport abandons the mail.
- outcome: 'sent'; 'queued' again with exponential backoff and jitter when it
  certainly was not delivered (4xx, connection errors, a full disk, anything
  before the hand-over); 'failed' with the server's reply (5xx, retries
  exhausted); 'uncertain' when the hand-over began and did not end in a clear
  answer.

When the outcome cannot be committed (kill -9, the database full or down),
the lease decides once it runs out: a row still 'sending' was not delivered
and is queued again with backoff; a row 'delivering' may have been, so it
becomes 'uncertain' and is never re-sent automatically. An admin checks, then
`mailticket outbox retry ID` (or `--uncertain` for all of them).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from mailticket.clock import Clock
from mailticket.domain import OutboxState
from mailticket.errors import PermanentError, TemporaryError
from mailticket.outbox.transport import HandoverError, Transport
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
HANDOVER_REASON = (
    "{error}; whether it was delivered is unknown, so it is not re-sent automatically. "
    "Check the server's log (or the maildir), then `mailticket outbox retry {id}`"
)
INTERRUPTED_REASON = (
    "interrupted before the mail was handed over (the process stopped, or its outcome could not be "
    "recorded): it was not delivered, so it is tried again"
)


@dataclass(frozen=True)
class FlushResult:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    uncertain: int = 0
    unrecorded: int = 0  # outcomes the database would not take: the flush stopped, the lease settles them


@dataclass(frozen=True)
class _Claim:
    row_id: int
    to_addr: str
    content: bytes
    attempts: int  # also the token of this attempt: a row re-claimed after its lease is not ours
    cc: tuple[str, ...] = ()  # more envelope recipients (the Cc of an agent's relayed reply)


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
        """One batch: up to ``limit`` due rows over one transport."""
        return self.drain(batch=limit, max_rows=limit)

    def drain(self, batch: int = 100, max_rows: int = 2000,
              should_stop: Callable[[], bool] | None = None) -> FlushResult:
        """Send due rows batch after batch over one transport (one SMTP connection for all of them).

        Stops when a batch comes back short (nothing more is due), after ``max_rows`` rows, when
        the database takes no outcome, or when ``should_stop()`` says so (asked before each row:
        rows not claimed yet stay queued for the next run).
        """
        counts: Counter[str] = Counter()
        transport: Transport | None = None
        taken = 0
        try:
            while taken < max_rows and not (should_stop and should_stop()):
                counts.update(self._expire_leases())
                size = min(batch, max_rows - taken)
                with self._db.transaction() as session:
                    due = [row.id for row in repo.due_outbox(session, self._clock.now(), size)]
                if not due:
                    break
                taken += len(due)
                if transport is None:
                    transport = self._transport_factory()
                for row_id in due:
                    if should_stop and should_stop():
                        return FlushResult(**counts)
                    # Each row is claimed right before its send: a row is 'sending' only while
                    # it really is with the transport, so a crash strands at most that one.
                    claim = self._claim(row_id)
                    if claim is None:
                        continue  # another instance took it
                    outcome, broken = self._send_one(transport, claim)
                    counts[outcome] += 1
                    if outcome == "unrecorded":
                        return FlushResult(**counts)  # the database takes no outcome now: leave the rest queued
                    if broken:
                        # After an unexpected error the connection's state is unknown: start afresh.
                        transport.close()
                        transport = self._transport_factory()
                if len(due) < size:
                    break
        finally:
            if transport is not None:
                transport.close()
        return FlushResult(**counts)

    def _claim(self, row_id: int) -> _Claim | None:
        now = self._clock.now()
        with self._db.transaction() as session:
            row = repo.claim_outbox(session, row_id, now)
            if row is None:
                return None
            row.state = OutboxState.SENDING
            row.attempts += 1
            row.next_attempt_at = now + self.lease
            return _Claim(row.id, row.to_addr, row.content, row.attempts, tuple(row.cc_addrs or ()))

    def _send_one(self, transport: Transport, claim: _Claim) -> tuple[str, bool]:
        """Send one claimed row; (outcome, whether the transport must be replaced)."""
        handed_over = False

        def on_handover() -> None:
            nonlocal handed_over
            self._mark_delivering(claim)
            handed_over = True

        try:
            transport.send(self._envelope_from, [claim.to_addr, *claim.cc], claim.content, on_handover)
        except PermanentError as exc:
            log.warning("outbox #%d to %s failed: %s", claim.row_id, claim.to_addr, exc)
            return self._record(claim, handed_over, OutboxState.FAILED, str(exc), "failed"), False
        except TemporaryError as exc:
            return self._retry_later(claim, handed_over, str(exc)), False
        except HandoverError as exc:
            log.warning("outbox #%d to %s: %s; marked uncertain", claim.row_id, claim.to_addr, exc)
            reason = HANDOVER_REASON.format(error=exc, id=claim.row_id)
            return self._record(claim, True, OutboxState.UNCERTAIN, reason, "uncertain"), True
        except Exception as exc:  # a bug, not an answer: must not strand the rest of the claimed batch
            if handed_over:
                log.exception("outbox #%d to %s: unexpected error from the transport after the hand-over",
                              claim.row_id, claim.to_addr)
                reason = UNEXPECTED_REASON.format(error=repr(exc), id=claim.row_id)
                return self._record(claim, True, OutboxState.UNCERTAIN, reason, "uncertain"), True
            log.exception("outbox #%d to %s: unexpected error from the transport before the hand-over "
                          "(not delivered)", claim.row_id, claim.to_addr)
            return self._retry_later(claim, False, f"unexpected error from the transport before the "
                                                   f"hand-over (not delivered): {exc!r}"), True
        outcome = self._record(claim, True, OutboxState.SENT, None, "sent")
        log.info("outbox #%d sent to %s", claim.row_id, claim.to_addr)
        return outcome, False

    def _retry_later(self, claim: _Claim, handed_over: bool, error: str) -> str:
        attempts = claim.attempts
        if attempts >= self._settings.max_attempts:
            log.warning("outbox #%d to %s failed after %d attempts: %s", claim.row_id, claim.to_addr, attempts, error)
            reason = f"gave up after {attempts} attempts: {error}"
            return self._record(claim, handed_over, OutboxState.FAILED, reason, "failed")
        delay = self._backoff(attempts)
        log.info("outbox #%d to %s: %s; retry in %.0fs", claim.row_id, claim.to_addr, error, delay.total_seconds())
        return self._record(claim, handed_over, OutboxState.QUEUED, error, "retried", retry_in=delay)

    def _backoff(self, attempts: int) -> dt.timedelta:
        base = self._settings.retry_base_seconds * (2 ** (attempts - 1))
        seconds = min(base, self._settings.retry_max_seconds) * self._rng.uniform(0.8, 1.2)
        return dt.timedelta(seconds=seconds)

    def _mark_delivering(self, claim: _Claim) -> None:
        """The hand-over callback: commit 'delivering' (and renew the lease) or stop the delivery.

        Raises TemporaryError when the state cannot be committed, or when the row is no longer
        this attempt's (its lease ran out and it was queued again): the transport then abandons
        the mail, so nothing is delivered that the database does not know may be.
        """
        now = self._clock.now()
        try:
            with self._db.transaction() as session:
                row = session.get(OutboxRow, claim.row_id, with_for_update=True)
                if row is None or row.state != OutboxState.SENDING or row.attempts != claim.attempts:
                    raise TemporaryError("the row's lease ran out before the hand-over; not delivered")
                row.state = OutboxState.DELIVERING
                row.next_attempt_at = now + self.lease
        except TemporaryError:
            raise
        except Exception as exc:
            raise TemporaryError(f"could not record the hand-over, not delivered: {exc}") from exc

    def _record(self, claim: _Claim, handed_over: bool, state: OutboxState, error: str | None, outcome: str,
                retry_in: dt.timedelta | None = None) -> str:
        """Commit one outcome; "unrecorded" (logged) when the database will not take it."""
        try:
            self._finish(claim, state, error, retry_in)
        except Exception as exc:
            fate = "marked uncertain" if handed_over else "queued again"
            log.error("outbox #%d to %s: could not record %s (%s); when its lease runs out it is %s",
                      claim.row_id, claim.to_addr, state, exc, fate, exc_info=not isinstance(exc, TemporaryError))
            return "unrecorded"
        return outcome

    def _finish(self, claim: _Claim, state: OutboxState, error: str | None,
                retry_in: dt.timedelta | None = None) -> None:
        now = self._clock.now()
        with self._db.transaction() as session:
            row = session.get(OutboxRow, claim.row_id, with_for_update=True)
            if row is None or row.attempts != claim.attempts:
                log.warning("outbox #%d: claimed again after its lease ran out; %s not recorded", claim.row_id, state)
                return
            row.state = state
            row.last_error = error
            if state == OutboxState.SENT:
                row.sent_at = now
            if retry_in is not None:
                row.next_attempt_at = now + retry_in

    def _expire_leases(self) -> Counter[str]:
        """Settle rows whose lease ran out: never handed over -> queued again; handed over -> uncertain."""
        now = self._clock.now()
        counts: Counter[str] = Counter()
        with self._db.transaction() as session:
            for row in repo.stale_sending(session, now):
                if row.state == OutboxState.DELIVERING:
                    row.state = OutboxState.UNCERTAIN
                    row.last_error = UNCERTAIN_REASON.format(id=row.id)
                    counts["uncertain"] += 1
                elif row.attempts >= self._settings.max_attempts:
                    row.state = OutboxState.FAILED
                    row.last_error = f"gave up after {row.attempts} attempts: {INTERRUPTED_REASON}"
                    counts["failed"] += 1
                else:
                    row.state = OutboxState.QUEUED
                    row.next_attempt_at = now + self._backoff(row.attempts)
                    row.last_error = INTERRUPTED_REASON
                    counts["retried"] += 1
                log.warning("outbox #%d to %s: lease ran out, now %s: %s", row.id, row.to_addr, row.state,
                            row.last_error)
        return counts

    def retry(self, row_id: int) -> OutboxRow | None:
        """An admin's decision: queue a failed or uncertain row again."""
        now = self._clock.now()
        with self._db.transaction() as session:
            row = session.get(OutboxRow, row_id)
            if row is None or row.state not in (OutboxState.FAILED, OutboxState.UNCERTAIN):
                return row
            if not row.content:  # its template failed to render: there is nothing to send
                return row
            _requeue(row, now)
            return row

    def retry_uncertain(self) -> list[int]:
        """An admin's decision after checking: queue every uncertain row again; their ids."""
        now = self._clock.now()
        with self._db.transaction() as session:
            rows = repo.outbox_in_state(session, OutboxState.UNCERTAIN)
            for row in rows:
                _requeue(row, now)
            return [row.id for row in rows]


def _requeue(row: OutboxRow, now: dt.datetime) -> None:
    """An admin's retry: due now, the old error cleared (the attempt count stays)."""
    row.state = OutboxState.QUEUED
    row.next_attempt_at = now
    row.last_error = None
