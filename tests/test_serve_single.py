"""On SQLite one `serve` per database: a second is refused at start with a clear message, while `tick`
(one pass of each job) may run beside it; on PostgreSQL several instances share the work."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_serve_liveness import start_serve, stop_serve


def test_a_second_serve_on_one_sqlite_database_is_refused(write_config: Callable[..., Path]) -> None:
    if os.environ.get("MAILTICKET_TEST_POSTGRES_URL"):
        pytest.skip("SQLite only: on PostgreSQL several `serve` share the work (tests/test_due_sweep.py races two)")
    config = write_config()
    first = start_serve(config)
    try:
        second = run_cli(config, "serve")
        assert second.returncode == 78, second.stderr.decode()
        message = second.stderr.decode()
        assert "another `mailticket serve` already runs on" in message and "PostgreSQL" in message
        assert "Traceback" not in message
        ticked = run_cli(config, "tick")
        assert ticked.returncode == 0, ticked.stderr.decode()
        assert b"due sweep:" in ticked.stdout
    finally:
        stop_serve(first)
