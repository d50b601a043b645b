"""Engine, sessions and schema management (Alembic).

SQLite runs with WAL, synchronous=FULL, foreign keys and a busy timeout, and
every transaction starts with BEGIN IMMEDIATE so two writers queue on the
busy timeout instead of failing half-way through.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailticket.errors import SchemaError, TemporaryError

SQLITE_BUSY_TIMEOUT_MS = 10_000
# The newest migration in store/migrations/versions. Kept here so every CLI start
# can check the schema without importing Alembic; a test keeps it in step.
SCHEMA_HEAD = "0004"


def make_engine(url: str, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, **kwargs: Any) -> Engine:
    """Create the engine; SQLite's directory is created on first use."""
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        database = sa_url.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            sa_url,
            connect_args={"timeout": busy_timeout_ms / 1000, "isolation_level": None},
            **kwargs,
        )

        def on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
            _sqlite_pragmas(dbapi_connection, busy_timeout_ms)

        event.listen(engine, "connect", on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(sa_url, pool_pre_ping=True, **kwargs)


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, busy_timeout_ms: int) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Engine plus a session factory; ``transaction()`` is the unit of work.

    On SQLite, writers in this process also queue on one lock: SQLite's own
    busy handler sleeps up to 100 ms between tries, so threads that wait for
    each other there (intake behind the pipeline) would idle instead of
    taking turns. Other processes still meet the busy timeout.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._writer = threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()

    @classmethod
    def from_url(cls, url: str, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Database:
        return cls(make_engine(url, busy_timeout_ms))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error.

        Database-level failures (locked, down, disk full) surface as
        ``TemporaryError`` so sources can answer "try again later".
        """
        session = self._sessions()
        try:
            with self._writer, session.begin():
                yield session
        except OperationalError as exc:
            raise TemporaryError(f"database unavailable: {exc.orig}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise TemporaryError(f"database connection lost: {exc.orig}") from exc
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()

    # -- schema -----------------------------------------------------------

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def upgrade(self) -> tuple[str | None, str | None]:
        """Bring the schema to head with Alembic; returns (before, after)."""
        from alembic import command
        from alembic.config import Config

        before = self.current_revision()
        config = Config()
        config.set_main_option("script_location", "mailticket.store:migrations")
        with self.engine.connect() as connection:
            if self.is_sqlite:
                # Batch migrations copy and drop tables; with foreign keys on, SQLite's DROP TABLE
                # would cascade into the rows that point at them. Off for the migration only
                # (outside any transaction, where SQLite honours the pragma).
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            try:
                with connection.begin():
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
            finally:
                if self.is_sqlite:
                    connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
        return before, self.current_revision()

    def check_schema(self) -> None:
        """Raise SchemaError naming the fix when the schema is not at head."""
        current, head = self.current_revision(), SCHEMA_HEAD
        if current == head:
            return
        if current is None:
            raise SchemaError("database has no mailticket schema yet: run `mailticket db upgrade`")
        raise SchemaError(
            f"database schema is at revision {current}, this mailticket needs {head}: "
            "run `mailticket db upgrade`"
        )
