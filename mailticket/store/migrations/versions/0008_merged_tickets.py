"""tickets.merged_into (an agent's `#merge N`), messages.quote_only (a mail that is only a quote)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("merged_into", sa.Integer(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("quote_only", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("quote_only", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("quote_only")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("merged_into")
