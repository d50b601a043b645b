"""header values without length limits, from_header, linked tickets, dedupe on Message-ID and content

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:50:00

- Header-derived addresses and Message-IDs become TEXT: no length limit on a stored
  header value may cost a ticket (a 400-character From was quarantined on PostgreSQL).
- messages.from_header keeps the From header as received (for "sender unknown").
- tickets.linked_to: a ticket whose mail referenced this one but could not join it.
- raw_messages: an index on message_id (a reused Message-ID is noticed), and every
  dedupe key recomputed as Message-ID + content digest (see ingest/rawmail.py).

On SQLite, mailticket runs migrations with foreign keys off (store/db.py), so the
table copies of batch mode never cascade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailticket.rawmail import dedupe_key, identify

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_WIDENED = [
    ("tickets", "requester", 320),
    ("participants", "email", 320),
    ("messages", "message_id", 1000),
    ("messages", "from_addr", 320),
    ("outbox", "to_addr", 320),
    ("address_suppressions", "address", 320),
]


def upgrade() -> None:
    for table, column, length in _WIDENED:
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=length), type_=sa.Text(),
                                  existing_nullable=False)
    with op.batch_alter_table("messages") as batch_op:
        batch_op.add_column(sa.Column("from_header", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("tickets") as batch_op:
        batch_op.add_column(sa.Column("linked_to", sa.Integer(), nullable=True))
    op.create_index("ix_raw_messages_message_id", "raw_messages", ["message_id"])
    _rekey()


def _rekey() -> None:
    """Old keys were the Message-ID alone (or the raw hash); a key already taken keeps the old one."""
    bind = op.get_bind()
    raw = sa.table("raw_messages", sa.column("id", sa.Integer), sa.column("dedupe_key", sa.String),
                   sa.column("raw", sa.LargeBinary))
    taken: set[str] = set()
    last = 0
    while True:
        rows = bind.execute(sa.select(raw.c.id, raw.c.raw).where(raw.c.id > last).order_by(raw.c.id)
                            .limit(200)).all()
        if not rows:
            return
        for row_id, content in rows:
            key = dedupe_key(*identify(content))
            if key not in taken:
                taken.add(key)
                bind.execute(sa.update(raw).where(raw.c.id == row_id).values(dedupe_key=key))
            last = row_id


def downgrade() -> None:
    op.drop_index("ix_raw_messages_message_id", table_name="raw_messages")
    with op.batch_alter_table("tickets") as batch_op:
        batch_op.drop_column("linked_to")
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_column("from_header")
    for table, column, length in _WIDENED:
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(column, existing_type=sa.Text(), type_=sa.String(length=length),
                                  existing_nullable=False)
