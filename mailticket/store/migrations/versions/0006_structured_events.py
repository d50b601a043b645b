"""structured events (rule, outbox row, JSON data), outbox.caused_by, ticket tags, agent state, queue turns

Events written before this revision keep their one-line ``detail`` and get ``data`` NULL;
their ``outbox_id`` is filled in from the Message-ID the old "queued" line named, so
`mailticket explain` finds the mail they caused by a column, old rows and new alike.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_QUEUED_MID = re.compile(r"<([^<>\s]+)>")


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("rule", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("outbox_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("data", sa.JSON(), nullable=True))
        batch.create_foreign_key("fk_events_outbox_id_outbox", "outbox", ["outbox_id"], ["id"])
        batch.create_index("ix_events_outbox_id", ["outbox_id"])
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("caused_by", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_outbox_caused_by_raw_messages", "raw_messages", ["caused_by"], ["id"])
        batch.create_index("ix_outbox_caused_by", ["caused_by"])
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("tickets") as batch:
        batch.alter_column("tags", server_default=None)
    op.create_table(
        "agent_state",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("away", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_table(
        "queue_turns",
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("last_agent", sa.String(length=320), nullable=False),
        sa.Column("turns", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("queue"),
    )
    _backfill_outbox_ids()


def _backfill_outbox_ids() -> None:
    """Old "queued" events named their mail only in prose ("... as <mid>: ..."): link them by column."""
    bind = op.get_bind()
    events = sa.table("events", sa.column("id", sa.Integer), sa.column("kind", sa.String),
                      sa.column("detail", sa.Text), sa.column("outbox_id", sa.Integer))
    outbox = sa.table("outbox", sa.column("id", sa.Integer), sa.column("message_id", sa.String))
    rows = bind.execute(sa.select(events.c.id, events.c.detail).where(events.c.kind == "queued")).all()
    for event_id, detail in rows:
        match = _QUEUED_MID.search(detail or "")
        if match is None:
            continue
        outbox_id = bind.execute(sa.select(outbox.c.id).where(outbox.c.message_id == match.group(1))).scalar()
        if outbox_id is not None:
            bind.execute(events.update().where(events.c.id == event_id).values(outbox_id=outbox_id))


def downgrade() -> None:
    op.drop_table("queue_turns")
    op.drop_table("agent_state")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("tags")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_caused_by")
        batch.drop_constraint("fk_outbox_caused_by_raw_messages", type_="foreignkey")
        batch.drop_column("caused_by")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_outbox_id")
        batch.drop_constraint("fk_events_outbox_id_outbox", type_="foreignkey")
        batch.drop_column("data")
        batch.drop_column("outbox_id")
        batch.drop_column("rule")
