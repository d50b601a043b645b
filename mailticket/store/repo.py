"""Queries. Claims use FOR UPDATE SKIP LOCKED so several instances share PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, defer

from mailticket.domain import OutboxState, RawState
from mailticket.store.models import (
    AddressSuppression,
    Blob,
    Event,
    ImapFolderState,
    OutboxRow,
    RawMessage,
    SourceStatus,
)


def new_raw_ids(session: Session, limit: int, max_bytes: int) -> list[int]:
    """Oldest 'new' raw messages, at most ``limit`` and about ``max_bytes`` in all."""
    rows = session.execute(
        select(RawMessage.id, RawMessage.size)
        .where(RawMessage.state == RawState.NEW)
        .order_by(RawMessage.id)
        .limit(limit)
    ).all()
    ids: list[int] = []
    total = 0
    for raw_id, size in rows:
        if ids and total + size > max_bytes:
            break
        ids.append(raw_id)
        total += size
    return ids


def raw_bytes(session: Session, ids: Sequence[int]) -> list[tuple[int, bytes]]:
    """(id, raw bytes) of those of ``ids`` still 'new'."""
    rows = session.execute(
        select(RawMessage.id, RawMessage.raw)
        .where(RawMessage.id.in_(ids), RawMessage.state == RawState.NEW)
        .order_by(RawMessage.id)
    ).all()
    return [(raw_id, raw) for raw_id, raw in rows]


def claim_new_raw(session: Session, ids: Sequence[int]) -> Sequence[RawMessage]:
    """Lock these raw rows if still 'new'; rows another instance holds are skipped."""
    if not ids:
        return []
    return session.execute(
        select(RawMessage)
        .where(RawMessage.id.in_(ids), RawMessage.state == RawState.NEW)
        .order_by(RawMessage.id)
        .options(defer(RawMessage.raw))  # the bytes were read (and parsed) before the claim
        .with_for_update(skip_locked=True)
    ).scalars().all()


def raws_sharing_message_ids(session: Session, message_ids: set[str]) -> dict[str, list[tuple[int, int | None]]]:
    """Message-ID -> [(raw id, ticket)] of every stored raw message with that Message-ID, oldest first."""
    found: dict[str, list[tuple[int, int | None]]] = {}
    if not message_ids:
        return found
    rows = session.execute(
        select(RawMessage.message_id, RawMessage.id, RawMessage.ticket_number)
        .where(RawMessage.message_id.in_(sorted(message_ids))).order_by(RawMessage.id)
    ).all()
    for message_id, raw_id, ticket in rows:
        found.setdefault(message_id, []).append((raw_id, ticket))
    return {mid: raws for mid, raws in found.items() if len(raws) > 1}


def store_blob(session: Session, content: bytes) -> str:
    """Store content once per sha256 (race-free across instances); returns the hash."""
    sha = hashlib.sha256(content).hexdigest()
    values = {"sha256": sha, "size": len(content), "content": content}
    session.execute(_insert(session, Blob).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
    return sha


def _insert(session: Session, table: type[Any]) -> Any:
    """INSERT with ON CONFLICT support, for the dialect in use."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def raw_states(session: Session, ids: Sequence[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(select(RawMessage.id, RawMessage.state).where(RawMessage.id.in_(ids))).all()
    return {raw_id: state for raw_id, state in rows}


def imap_cursor(session: Session, account: str, folder: str) -> tuple[int, int] | None:
    """(uidvalidity, last_uid) stored for this folder, or None."""
    row = session.execute(
        select(ImapFolderState.uidvalidity, ImapFolderState.last_uid).where(
            ImapFolderState.account == account, ImapFolderState.folder == folder
        )
    ).first()
    return (int(row[0]), int(row[1])) if row else None


def save_imap_cursor(
    session: Session, account: str, folder: str, uidvalidity: int, last_uid: int, now: dt.datetime
) -> None:
    statement = _insert(session, ImapFolderState).values(
        account=account, folder=folder, uidvalidity=uidvalidity, last_uid=last_uid, updated_at=now
    )
    session.execute(statement.on_conflict_do_update(
        index_elements=["account", "folder"],
        set_={"uidvalidity": uidvalidity, "last_uid": last_uid, "updated_at": now},
    ))


def save_source_status(session: Session, name: str, values: dict[str, Any]) -> None:
    statement = _insert(session, SourceStatus).values(name=name, **values)
    session.execute(statement.on_conflict_do_update(index_elements=["name"], set_=values))


def add_event(
    session: Session,
    now: dt.datetime,
    kind: str,
    detail: str,
    *,
    ticket_number: int | None = None,
    raw_id: int | None = None,
    message_id: str = "",
    rule: str | None = None,
    outbox_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """One decision: ``detail`` for people, the columns and ``data`` (JSON) for queries."""
    session.add(Event(ticket_number=ticket_number, raw_id=raw_id, message_id=message_id[:1000],
                      kind=kind, detail=detail, created_at=now, rule=rule, outbox_id=outbox_id, data=data))


def remove_suppression(session: Session, address: str) -> bool:
    """Allow automatic mail to an address again; False when it was not suppressed."""
    row = session.get(AddressSuppression, address)
    if row is None:
        return False
    session.delete(row)
    return True


def due_outbox(session: Session, now: dt.datetime, limit: int) -> Sequence[OutboxRow]:
    return session.execute(
        select(OutboxRow)
        .where(OutboxRow.state == OutboxState.QUEUED, OutboxRow.next_attempt_at <= now)
        .order_by(OutboxRow.next_attempt_at, OutboxRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).scalars().all()


def claim_outbox(session: Session, row_id: int, now: dt.datetime) -> OutboxRow | None:
    """Lock one outbox row if it is still queued and due; None when another instance has it."""
    return session.execute(
        select(OutboxRow)
        .where(OutboxRow.id == row_id, OutboxRow.state == OutboxState.QUEUED, OutboxRow.next_attempt_at <= now)
        .with_for_update(skip_locked=True)
    ).scalars().first()


def stale_sending(session: Session, now: dt.datetime) -> Sequence[OutboxRow]:
    """Rows 'sending' or 'delivering' whose lease ran out, locked (skipping rows another instance holds)."""
    return session.execute(
        select(OutboxRow)
        .where(OutboxRow.state.in_([OutboxState.SENDING, OutboxState.DELIVERING]), OutboxRow.next_attempt_at <= now)
        .with_for_update(skip_locked=True)
    ).scalars().all()


def outbox_in_state(session: Session, state: OutboxState) -> Sequence[OutboxRow]:
    """Every outbox row in one state, oldest first, locked (skipping rows another instance holds)."""
    return session.execute(
        select(OutboxRow).where(OutboxRow.state == state).order_by(OutboxRow.id).with_for_update(skip_locked=True)
    ).scalars().all()


def count_by_state(session: Session, model: type[RawMessage] | type[OutboxRow] = RawMessage) -> dict[str, int]:
    """How many rows of the inbox (raw messages) or the outbox are in each state."""
    rows = session.execute(select(model.state, func.count()).group_by(model.state)).all()
    return {state: count for state, count in rows}
