"""SLA clocks, the due sweep and satisfaction ratings: due-time columns on tickets, the notices ledger

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 08:00:00
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)
TIMES = ("first_response_due", "next_response_due", "resolution_due", "next_response_since", "next_response_at",
         "paused_at", "wake_at", "csat_at")


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("sla_policy", sa.String(100), nullable=True))
        batch.add_column(sa.Column("imported", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("sla_plan", sa.String(16), nullable=True))
        for name in TIMES:
            batch.add_column(sa.Column(name, UTC_TIME, nullable=True))
        batch.add_column(sa.Column("pauses", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
        batch.add_column(sa.Column("csat_rating", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("csat_comment", sa.Text(), nullable=True))
        batch.create_index("ix_tickets_wake_at", ["wake_at"])
    with op.batch_alter_table("tickets") as batch:
        batch.alter_column("pauses", server_default=None)
        batch.alter_column("imported", server_default=None)
    # Tickets pending or solved before this schema: their pause (and pending timers) start now, not at
    # some unknown earlier time; the sweep plans every open ticket once (sweep_state has no plan_key yet).
    now = dt.datetime.now(dt.UTC)
    bind = op.get_bind()
    value = now.replace(tzinfo=None) if bind.dialect.name == "sqlite" else now
    bind.execute(sa.text("UPDATE tickets SET paused_at = :now WHERE status IN ('pending', 'solved')")
                 .bindparams(sa.bindparam("now", value=value, type_=UTC_TIME)))
    op.create_table(
        "sweep_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_number", sa.Integer(), sa.ForeignKey("tickets.number", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("target", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("cycle", UTC_TIME, nullable=False),
        sa.Column("due_at", UTC_TIME, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.UniqueConstraint("ticket_number", "target", "kind", "level", "cycle", name="uq_notices_once"),
    )


def downgrade() -> None:
    op.drop_table("notices")
    op.drop_table("sweep_state")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_index("ix_tickets_wake_at")
        for name in ("csat_comment", "csat_rating", "pauses", *TIMES, "sla_plan", "imported", "sla_policy"):
            batch.drop_column(name)
