"""The schema: migrations reach the models, and the cheap head check stays true."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mailticket.errors import SchemaError
from mailticket.store.db import SCHEMA_HEAD, Database
from mailticket.store.models import Base


def test_schema_head_constant_matches_migrations() -> None:
    config = Config()
    config.set_main_option("script_location", "mailticket.store:migrations")
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


def test_upgrade_creates_what_the_models_describe(database_url: str) -> None:
    db = Database.from_url(database_url)
    try:
        try:
            db.check_schema()
            raise AssertionError("an empty database passed the schema check")
        except SchemaError as exc:
            assert "mailticket db upgrade" in str(exc)
        assert db.upgrade() == (None, SCHEMA_HEAD)
        db.check_schema()
        assert db.upgrade() == (SCHEMA_HEAD, SCHEMA_HEAD)  # idempotent
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
    finally:
        db.dispose()


def test_sqlite_pragmas(tmp_path: object) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path}/p.db")
    try:
        with db.engine.connect() as connection:
            values = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
        assert values == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 10000}
    finally:
        db.dispose()
