"""Shared fixtures: a fresh database per test (SQLite, or a PostgreSQL schema
when MAILTICKET_TEST_POSTGRES_URL is set), settings from a real TOML file,
and an App wired with a frozen clock.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailticket.app import App
from mailticket.clock import FrozenClock
from mailticket.domain import Envelope
from mailticket.settings import Settings, load
from tests.databases import scratch_database

POSTGRES_URL = os.environ.get("MAILTICKET_TEST_POSTGRES_URL", "")
REQUIRE_INTEGRATION = os.environ.get("MAILTICKET_REQUIRE_INTEGRATION") == "1"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
CORPUS = Path(os.environ.get("MAILTICKET_CORPUS", CORPUS))


def skip_or_fail(reason: str) -> None:
    """Skip an integration test with a reason; under MAILTICKET_REQUIRE_INTEGRATION=1 fail instead."""
    if REQUIRE_INTEGRATION:
        pytest.fail(f"integration test cannot run (MAILTICKET_REQUIRE_INTEGRATION=1): {reason}")
    pytest.skip(reason)


@pytest.fixture
def corpus() -> Path:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"real-mail corpus not found at {CORPUS} (set MAILTICKET_CORPUS or put shared/ beside the repo)")
    return CORPUS


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A database nobody else uses: a SQLite file, or a fresh PostgreSQL schema."""
    with scratch_database(tmp_path, POSTGRES_URL, "mt_test") as url:
        yield url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def write_config(tmp_path: Path, database_url: str) -> Callable[..., Path]:
    """Write a mailticket.toml; ``extra`` is raw TOML appended at the end; ``agents`` are [[agents]] addresses
    (none by default: no agent notifications, so a test sees only the mail it is about)."""

    def write(extra: str = "", agents: tuple[str, ...] = (),
              transport: str | None = None) -> Path:
        lines = [
            "[database]",
            f"url = {toml_value(database_url)}",
            "",
            "[[mailboxes]]",
            'address = "support@example.com"',
            'name = "Example Support"',
            'queue = "support"',
            "",
            "[[mailboxes]]",
            'address = "help@example.com"',
            'name = "Example Help"',
            'queue = "help"',
            "",
            "[outbound]",
            f"transport = {toml_value(transport or 'maildir:' + str(tmp_path / 'outbox'))}",
            'from = "Example Support <support@example.com>"',
            "",
            "[mail]",
            'message_id_domain = "tickets.example.com"',
            "",
            "[smtp]",  # never a fixed port: another test, or a real serve, may hold it
            f'listen = ["127.0.0.1:{free_port()}"]',
            "",
        ]
        for agent in agents:
            lines += ["[[agents]]", f"address = {toml_value(agent)}", 'name = "An Agent"', ""]
        path = tmp_path / "mailticket.toml"
        path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
        return path

    return write


@pytest.fixture
def settings(write_config: Callable[..., Path]) -> Settings:
    return load(write_config())


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def make_app(settings: Settings, clock: FrozenClock) -> Iterator[Callable[..., App]]:
    """Build an App on the test database (schema upgraded); closed at teardown."""
    apps: list[App] = []

    def build(settings_override: Settings | None = None, **kwargs: Any) -> App:
        kwargs.setdefault("clock", clock)
        app = App(settings_override or settings, **kwargs)
        app.prepare(upgrade=True)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return make_app()


def run_cli(config: Path, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """`python -m mailticket -c CONFIG ARGS...` as an admin or an MTA runs it."""
    return subprocess.run([sys.executable, "-m", "mailticket", "-c", str(config), *args], input=stdin,
                          capture_output=True, timeout=120, env={**os.environ, **(env or {})}, cwd=cwd)


def as_json(result: subprocess.CompletedProcess[bytes]) -> object:
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def ingest(app: App, raw: bytes, source: str = "pipe") -> tuple[int | None, str]:
    """Store and process one message: (its ticket, the decision), or (None, "duplicate")."""
    accepted = app.inbox.accept(raw, Envelope(source))
    if accepted.duplicate:
        return None, "duplicate"
    [outcome] = app.pipeline.process([accepted.raw_id])
    return outcome.ticket_number, outcome.decision


def poison(app: App, monkeypatch: pytest.MonkeyPatch, message_id: str) -> None:
    """Make processing raise for one Message-ID (the rules step), so that message is quarantined."""
    real_apply = app.rules.apply

    def apply(session: Any, **kwargs: Any) -> Any:
        if kwargs["message"].message_id == message_id:
            raise RuntimeError("no_such_field: injected failure")
        return real_apply(session, **kwargs)

    monkeypatch.setattr(app.rules, "apply", apply)


def count(app: App, model: Any) -> int:
    with app.db.transaction() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def mail(
    subject: str = "Printer on fire",
    body: str = "Hello, my printer is on fire.\n",
    sender: str = "Alice Customer <alice@customer.example>",
    to: str = "support@example.com",
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A small RFC 5322 message built by hand (so tests control every byte)."""
    message_id = message_id or f"{uuid.uuid4().hex}@customer.example"
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        "Date: Mon, 02 Nov 2026 10:00:00 +0000",
        f"Message-ID: <{message_id}>",
    ]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
              "Content-Transfer-Encoding: 8bit", "", body.replace("\r\n", "\n").replace("\n", "\r\n")]
    return "\r\n".join(lines).encode("utf-8")
