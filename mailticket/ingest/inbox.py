"""Durable intake: raw bytes are committed before any source acknowledges them.

``accept`` returns only after the commit. Redelivery of the same message
(same Message-ID, or same content when it has none) is a no-op that reports
the record already stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailticket.clock import Clock
from mailticket.domain import Envelope, RawState
from mailticket.ingest.rawmail import dedupe_key, header_message_id, sha256_hex
from mailticket.store.db import Database
from mailticket.store.models import RawMessage


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
    message_id = header_message_id(raw)
    digest = sha256_hex(raw)
    return _Prepared(raw, envelope, message_id, digest, dedupe_key(message_id, digest))


class Inbox:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def accept(self, raw: bytes, envelope: Envelope) -> Accepted:
        """Commit one message; raises TemporaryError when the database cannot take it."""
        return self.accept_many([(raw, envelope)])[0]

    def accept_many(self, items: Iterable[tuple[bytes, Envelope]]) -> list[Accepted]:
        """Commit several messages in one transaction (used by bulk import)."""
        prepared = [_prepare(raw, envelope) for raw, envelope in items]
        if not prepared:
            return []
        try:
            with self._db.transaction() as session:
                return self._store(session, prepared)
        except IntegrityError:
            # Another writer stored one of them between our check and insert
            # (PostgreSQL, several instances): take them one at a time.
            if len(prepared) == 1:
                with self._db.transaction() as session:
                    return self._store(session, prepared)
            return [self.accept(p.raw, p.envelope) for p in prepared]

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
