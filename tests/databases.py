"""A database nobody else uses, for the tests and the benchmarks: a SQLite file, or a fresh
PostgreSQL schema (dropped afterwards) reached through ``search_path``."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text


@contextlib.contextmanager
def scratch_database(directory: Path, postgres_url: str | None, prefix: str) -> Iterator[str]:
    if not postgres_url:
        yield f"sqlite:///{directory / 'mailticket.db'}"
        return
    admin_url = postgres_url
    if admin_url.startswith("postgresql://"):
        admin_url = "postgresql+psycopg://" + admin_url[len("postgresql://"):]
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
