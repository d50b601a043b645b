"""agent mail: messages.internal and messages.verified, tickets.language, outbox.cc_addrs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("internal", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("verified", sa.Boolean(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("internal", server_default=None)
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("language", sa.String(length=8), nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("cc_addrs", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("cc_addrs", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("cc_addrs")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("language")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("verified")
        batch.drop_column("internal")
