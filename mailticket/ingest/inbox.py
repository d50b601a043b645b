"""Durable intake: raw bytes are committed before any source acknowledges them.

``accept`` returns only after the commit. Redelivery of the same message
(same Message-ID *and* the same content once trace headers are set aside,
see ``rawmail.identify``) is a no-op that reports the record already
stored; a different message that reuses a Message-ID is stored as new.

Several messages are committed together (group commit). When a group fails
for a reason other than the database being unavailable (one message the
database refuses), each message is tried alone, so only a message that truly
cannot be stored is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailticket.clock import Clock
from mailticket.domain import Envelope, RawState
from mailticket.errors import TemporaryError
from mailticket.rawmail import dedupe_key, identify, sha256_hex
from mailticket.store.db import Database
from mailticket.store.models import RawMessage

log = logging.getLogger("mailticket.intake")


@dataclass(frozen=True)
class Accepted:
    raw_id: int
    duplicate: bool
    message_id: str  # "" when the message has none


@dataclass(frozen=True)
class _Prepared:
    raw: bytes
    envelope: Envelope
    message_id: str
    sha256: str
    key: str


def _prepare(raw: bytes, envelope: Envelope) -> _Prepared:
    message_id, digest = identify(raw)
    return _Prepared(raw, envelope, message_id, sha256_hex(raw), dedupe_key(message_id, digest))


class Inbox:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def stored(self, raw: bytes) -> tuple[int, int | None] | None:
        """(raw id, ticket) when this very message was already accepted (what ``accept`` would call a
        duplicate); None otherwise. Reads only."""
        message_id, digest = identify(raw)
        with self._db.transaction() as session:
            row = session.execute(
                select(RawMessage.id, RawMessage.ticket_number).where(
                    RawMessage.dedupe_key == dedupe_key(message_id, digest))
            ).first()
        return (int(row[0]), row[1]) if row is not None else None

    def accept(self, raw: bytes, envelope: Envelope) -> Accepted:
        """Commit one message; raises TemporaryError when the database cannot take it."""
        return self.accept_many([(raw, envelope)])[0]

    def accept_many(self, items: Iterable[tuple[bytes, Envelope]]) -> list[Accepted]:
        """Commit several messages; raises the first failure (used by import and IMAP)."""
        results = self.accept_each(items)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [r for r in results if isinstance(r, Accepted)]

    def accept_each(self, items: Iterable[tuple[bytes, Envelope]]) -> list[Accepted | Exception]:
        """Commit several messages in one transaction; each gets its own answer.

        The database being unavailable (locked, down, disk full) fails them all; any
        other failure is retried message by message, so one bad message cannot cost
        its neighbours their commit.
        """
        prepared = [_prepare(raw, envelope) for raw, envelope in items]
        if not prepared:
            return []
        try:
            with self._db.transaction() as session:
                return list(self._store(session, prepared))
        except TemporaryError:
            raise
        except Exception as exc:
            if len(prepared) > 1:
                return [self._alone(p) for p in prepared]
            if isinstance(exc, IntegrityError):
                # Another writer stored it between our check and insert (PostgreSQL, several instances).
                return [self._alone(prepared[0])]
            return [exc]

    def _alone(self, prepared: _Prepared) -> Accepted | Exception:
        for attempt in range(2):  # twice: a concurrent insert of the same key shows up as IntegrityError once
            try:
                with self._db.transaction() as session:
                    return self._store(session, [prepared])[0]
            except TemporaryError:
                raise
            except IntegrityError as exc:
                if attempt:
                    return exc
            except Exception as exc:
                log.warning("intake: message <%s> (%d bytes) cannot be stored: %s", prepared.message_id,
                            len(prepared.raw), exc)
                return exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _store(self, session: Session, prepared: Sequence[_Prepared]) -> list[Accepted]:
        keys = sorted({p.key for p in prepared})
        found = session.execute(
            select(RawMessage.dedupe_key, RawMessage.id).where(RawMessage.dedupe_key.in_(keys))
        ).all()
        existing = dict(found)
        now = self._clock.now()
        rows: dict[str, dict[str, object]] = {}
        for p in prepared:
            if p.key in existing or p.key in rows:
                continue
            rows[p.key] = {
                "dedupe_key": p.key,
                "message_id": p.message_id,
                "sha256": p.sha256,
                "size": len(p.raw),
                "raw": p.raw,
                "source": p.envelope.source,
                "mail_from": p.envelope.mail_from,
                "recipients": list(p.envelope.recipients),
                "peer": p.envelope.peer,
                "state": RawState.NEW,
                "attempts": 0,
                "received_at": now,
            }
        fresh: dict[str, int] = {}
        if rows:
            inserted = session.execute(
                insert(RawMessage).returning(RawMessage.dedupe_key, RawMessage.id), list(rows.values())
            ).all()
            fresh = dict(inserted)
        results = []
        claimed: set[str] = set()
        for p in prepared:
            if p.key in existing:
                results.append(Accepted(existing[p.key], True, p.message_id))
            else:
                results.append(Accepted(fresh[p.key], p.key in claimed, p.message_id))
                claimed.add(p.key)
        return results
