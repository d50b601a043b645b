"""`mailticket status`: whether `serve` runs (its heartbeats), what each source is doing and what
waits in the inbox and outbox (with the count of uncertain outbound mail, which waits for an admin)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mailticket.app import App
from mailticket.domain import OutboxState
from mailticket.schedule import heartbeat
from mailticket.store import repo
from mailticket.store.models import OutboxRow, SourceStatus


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def status_report(app: App) -> dict[str, Any]:
    settings = app.settings
    with app.db.transaction() as session:
        rows = {row.name: row for row in session.execute(select(SourceStatus)).scalars()}
        mailboxes: list[dict[str, Any]] = []
        for mailbox in settings.mailboxes:
            entry: dict[str, Any] = {"address": mailbox.address, "queue": mailbox.queue, "imap": None}
            imap = mailbox.imap
            if imap is not None:
                row = rows.get(f"imap:{mailbox.address}")
                cursor = repo.imap_cursor(session, imap.account, imap.folder)
                entry["imap"] = {
                    "account": imap.account,
                    "folder": imap.folder,
                    "after": imap.after,
                    "state": row.state if row else "never polled",
                    "detail": row.detail if row else "",
                    "instance": row.instance if row else None,
                    "last_success_at": _iso(row.last_success_at) if row else None,
                    "last_error": row.last_error if row else None,
                    "last_error_at": _iso(row.last_error_at) if row else None,
                    "next_retry_at": _iso(row.next_retry_at) if row else None,
                    "updated_at": _iso(row.updated_at) if row else None,
                    "uidvalidity": cursor[0] if cursor else None,
                    "last_uid": cursor[1] if cursor else None,
                }
            mailboxes.append(entry)
        inbox = repo.count_by_state(session)
        outbox = repo.count_by_state(session, OutboxRow)
        instances = heartbeat.instances(session, app.clock.now())
    return {
        "config": settings.source,
        "smtp": {"listen": [str(listener) for listener in settings.smtp.listen]},
        "mailboxes": mailboxes,
        "inbox": inbox,
        "outbox": outbox,
        # Mail that may or may not have gone out: an admin checks, then `outbox retry --uncertain`.
        "outbox_uncertain": outbox.get(OutboxState.UNCERTAIN, 0),
        # Each `serve` that beat: running, or stale (its beats stopped without a clean stop).
        "instances": instances,
    }
