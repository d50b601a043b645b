"""Alembic environment: runs on the connection mailticket hands in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from mailticket.store.models import Base

config = context.config
connection = config.attributes.get("connection")
target_metadata = Base.metadata


def _run(conn: object) -> None:
    context.configure(
        connection=conn,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:  # `alembic` command line, for developers writing a revision
    url = config.get_main_option("sqlalchemy.url") or "sqlite:///dev-migrations.db"
    with create_engine(url).begin() as conn:
        _run(conn)
