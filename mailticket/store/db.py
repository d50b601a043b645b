"""Engine, sessions and schema management (Alembic).

SQLite runs with WAL, synchronous=FULL, foreign keys and a busy timeout, and
every transaction starts with BEGIN IMMEDIATE so two writers queue on the
busy timeout instead of failing half-way through.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailticket.errors import ConfigError, SchemaError, TemporaryError
from mailticket.store.paths import create_private_file, make_dir, sqlite_file

SQLITE_BUSY_TIMEOUT_MS = 10_000
# The newest migration in store/migrations/versions. Kept here so every CLI start
# can check the schema without importing Alembic; a test keeps it in step.
SCHEMA_HEAD = "0009"


def make_engine(url: str, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, **kwargs: Any) -> Engine:
    """Create the engine; nothing is created on disk (``Database.upgrade`` makes a SQLite file)."""
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite":
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
    try:
        return create_engine(sa_url, pool_pre_ping=True, **kwargs)
    except ImportError as exc:  # the driver is an optional extra
        raise ConfigError([f"database.url: {sa_url.drivername} needs its driver ({exc.name or exc}): "
                           "pip install 'mailticket[postgres]'"]) from None


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, busy_timeout_ms: int) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class FairRLock:
    """A reentrant lock that serves waiting threads in arrival order.

    ``threading.RLock`` lets whoever asks right after a release win; on SQLite the
    intake committer and the pipeline then keep the writer lock between them and
    the outbox sender (three short transactions per mail) starves during a burst.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._waiting: collections.deque[int] = collections.deque()

    def __enter__(self) -> FairRLock:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return self
            self._waiting.append(me)
            try:
                while self._owner is not None or self._waiting[0] != me:
                    self._cond.wait()
            except BaseException:  # interrupted while waiting: give up our place, never block the queue
                self._waiting.remove(me)
                self._cond.notify_all()
                raise
            self._waiting.popleft()
            self._owner, self._depth = me, 1
            return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()


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
        self.sqlite_file = sqlite_file(str(engine.url))  # None for PostgreSQL
        self._writer: contextlib.AbstractContextManager[Any] = (
            FairRLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext())

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

    def serve_lock(self) -> IO[str] | None:
        """On a SQLite file, hold the one-`serve` lock (ConfigError when another `serve` holds it);
        None on PostgreSQL, where several instances share the work. Close the handle to release it."""
        if self.sqlite_file is None:
            return None
        path = Path(str(self.sqlite_file) + ".serve.lock")
        handle = path.open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ConfigError([
                f"database.url: another `mailticket serve` already runs on {self.sqlite_file}; SQLite takes one "
                "instance: stop it, or move to PostgreSQL to run several"
            ]) from None
        return handle

    def dispose(self) -> None:
        self.engine.dispose()

    # -- schema -----------------------------------------------------------

    @property
    def _file_missing(self) -> bool:
        """A SQLite database whose file does not exist yet: connecting would create it empty."""
        return self.sqlite_file is not None and not self.sqlite_file.exists()

    def describe(self) -> str:
        """Where the database is, for messages: the SQLite file, or host:port/name (never the password)."""
        if self.sqlite_file is not None:
            return str(self.sqlite_file)
        url = self.engine.url
        return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A connection; an unreachable database is a TemporaryError naming where and why."""
        try:
            connection = self.engine.connect()
        except (OperationalError, DBAPIError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise TemporaryError(f"database {self.describe()} unreachable: {reason}") from exc
        with connection:
            yield connection

    def ping(self) -> None:
        """Connect once (check-config); a missing SQLite file is not created."""
        if self._file_missing:
            return
        with self._connect() as connection:
            connection.execute(text("SELECT 1"))

    def current_revision(self) -> str | None:
        if self._file_missing:
            return None
        with self._connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def upgrade(self, revision: str = "head") -> tuple[str | None, str | None]:
        """Bring the schema to head (or ``revision``) with Alembic; returns (before, after)."""
        from alembic import command
        from alembic.config import Config

        before = self.current_revision()
        config = Config()
        config.set_main_option("script_location", "mailticket.store:migrations")
        if self.sqlite_file is not None:  # the folder 0700 and the file 0600, whatever the umask
            make_dir(self.sqlite_file.parent)
            create_private_file(self.sqlite_file)
        with self._connect() as connection:
            if self.is_sqlite:
                # Batch migrations copy and drop tables; with foreign keys on, SQLite's DROP TABLE
                # would cascade into the rows that point at them. Off for the migration only
                # (outside any transaction, where SQLite honours the pragma).
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            try:
                with connection.begin():
                    config.attributes["connection"] = connection
                    command.upgrade(config, revision)
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
            if self._file_missing:
                raise SchemaError(f"no database at {self.sqlite_file} yet: run `mailticket db upgrade` "
                                  "(or check database.url and [paths] state_dir)")
            raise SchemaError("database has no mailticket schema yet: run `mailticket db upgrade`")
        raise SchemaError(
            f"database schema is at revision {current}, this mailticket needs {head}: "
            "run `mailticket db upgrade`"
        )
