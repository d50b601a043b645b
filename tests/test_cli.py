"""The CLI as admins and MTAs run it: real subprocesses, exit codes, --json."""

from __future__ import annotations

import mailbox
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailticket.app import App
from mailticket.domain import Envelope
from mailticket.settings import load
from tests.conftest import as_json, ingest, mail, poison
from tests.conftest import run_cli as run


def test_ingest_tickets_and_outbox_json(write_config: Callable[..., Path]) -> None:
    config = write_config()
    assert run(config, "db", "upgrade").returncode == 0
    first = run(config, "ingest", "--recipient", "support@example.com", stdin=mail(message_id="c1@customer.example"))
    assert first.returncode == 0, first.stderr.decode()
    again = run(config, "ingest", stdin=mail(message_id="c1@customer.example"))
    assert again.returncode == 0 and b"duplicate" in again.stderr
    tickets = as_json(run(config, "tickets", "list", "--json"))
    assert isinstance(tickets, list) and len(tickets) == 1
    ticket = tickets[0]
    assert {k: ticket[k] for k in ("number", "subject", "status", "requester")} == {
        "number": 1, "subject": "Printer on fire", "status": "new", "requester": "alice@customer.example"}
    assert as_json(run(config, "tickets", "list", "--status", "closed", "--json")) == []
    shown = as_json(run(config, "tickets", "show", "1", "--json"))
    assert isinstance(shown, dict)
    directions = [(m["direction"], m["from"], m["verdict"]) for m in shown["messages"]]
    assert directions == [("in", "alice@customer.example", "human"), ("out", "support@example.com", "")]
    assert shown["messages"][0]["message_id"] == "c1@customer.example"
    assert "printer is on fire" in shown["messages"][0]["visible_text"]
    outbox = as_json(run(config, "outbox", "list", "--json"))
    assert isinstance(outbox, list)
    [row] = outbox
    assert (row["ticket"], row["kind"], row["to"], row["state"]) == (1, "ack_new", "alice@customer.example", "queued")
    assert row["subject"] == "[#1] Printer on fire"
    assert row["message_id"] == shown["messages"][1]["message_id"]
    human = run(config, "tickets", "list")
    assert b"Printer on fire" in human.stdout


def test_ingest_exits_75_when_it_cannot_commit(write_config: Callable[..., Path], tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    config = tmp_path / "broken-db.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{blocker}/db.sqlite"\n')
    result = run(config, "ingest", stdin=mail())
    assert result.returncode == 75, result.stderr.decode()
    assert b"try again later" in result.stderr


def test_ingest_exits_75_when_postgres_is_down(tmp_path: Path) -> None:
    config = tmp_path / "down.toml"
    config.write_text('[database]\nurl = "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2"\n')
    result = run(config, "ingest", stdin=mail())
    assert result.returncode == 75, result.stderr.decode()


def test_bad_config_one_line_per_problem_exit_78(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[outbound]\ntransport = "smtp:/relay"\npassword = "hunter2"\n'
        '[[mailboxes]]\naddress = "support"\n'
        '[smtp]\nlisten = ["localhost"]\n'
        '[bogus]\n'
    )
    result = run(config, "check-config")
    assert result.returncode == 78
    lines = result.stderr.decode().strip().splitlines()
    keys = ["outbound.transport", "outbound.password", "mailboxes[0].address", "smtp.listen", "bogus"]
    for key in keys:
        assert sum(f": {key}:" in line for line in lines) == 1, (key, lines)
    assert len(lines) == len(keys)
    assert "hunter2" not in result.stderr.decode()


def test_check_config_ok_and_missing_file(write_config: Callable[..., Path], tmp_path: Path) -> None:
    ok = run(write_config(), "check-config")
    assert ok.returncode == 0 and b"configuration is valid" in ok.stdout
    missing = run(tmp_path / "nope.toml", "check-config")
    assert missing.returncode == 78 and b"no such file" in missing.stderr


def test_serve_refuses_out_of_date_schema(write_config: Callable[..., Path]) -> None:
    result = run(write_config(), "serve")
    assert result.returncode == 78
    assert b"mailticket db upgrade" in result.stderr


def test_quarantine_and_replay(write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config()
    assert run(config, "db", "upgrade").returncode == 0
    # A template failure no longer quarantines (the mail fails, the ticket stands: tests/test_templates.py), so
    # the poison is injected in process: processing raises for q1; the message is quarantined, not lost.
    app = App(load(config))
    app.prepare()
    poison(app, monkeypatch, "q1@customer.example")
    assert ingest(app, mail(message_id="q1@customer.example")) == (None, "quarantined")
    second = ingest(app, mail(message_id="q2@customer.example", subject="next one",
                              headers={"Auto-Submitted": "auto-generated"}))
    assert second[1] == "new_ticket"
    app.close()
    quarantined = as_json(run(config, "quarantine", "list", "--json"))
    assert isinstance(quarantined, list) and len(quarantined) == 1
    assert quarantined[0]["message_id"] == "q1@customer.example"
    assert "no_such_field" in quarantined[0]["error"]
    # The message after it was processed normally.
    assert [t["subject"] for t in as_json(run(config, "tickets", "list", "--json"))] == ["next one"]  # type: ignore[union-attr]
    replay = as_json(run(config, "quarantine", "replay", str(quarantined[0]["id"]), "--json"))
    assert isinstance(replay, dict) and replay["decision"] == "new_ticket"
    assert as_json(run(config, "quarantine", "list", "--json")) == []


def test_import_files_maildir_and_mbox(write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config()
    assert run(config, "db", "upgrade").returncode == 0
    source = tmp_path / "old"
    source.mkdir()
    box = mailbox.Maildir(str(source / "maildir"), create=True)
    box.add(mail(message_id="m1@customer.example", subject="first"))
    box.add(mail(message_id="m2@customer.example", subject="Re: first",
                 headers={"In-Reply-To": "<m1@customer.example>"}))
    mbox = mailbox.mbox(str(source / "archive.mbox"), create=True)
    mbox.add(mail(message_id="m3@customer.example", subject="third"))
    mbox.add(mail(message_id="m1@customer.example", subject="first"))  # duplicate of the maildir one
    mbox.flush()
    (source / "single.eml").write_bytes(mail(message_id="m4@customer.example", subject="fourth"))
    summary = as_json(run(config, "import", str(source), "--json"))
    assert summary == {"messages": 5, "tickets_created": 3, "replies_threaded": 1, "duplicates": 1,
                       "quarantined": 0, "unreadable": []}
    again = as_json(run(config, "import", str(source), "--json"))
    assert isinstance(again, dict) and again["duplicates"] == 5 and again["tickets_created"] == 0
    # Moving a mailbox in must not write to every customer in its history.
    assert as_json(run(config, "outbox", "list", "--json")) == []


def test_serve_processes_inbox_sends_outbox_and_stops_on_sigterm(
    write_config: Callable[..., Path], tmp_path: Path, make_app: Callable[..., App]
) -> None:
    config = write_config()
    app = make_app(load(config))
    app.inbox.accept(mail(message_id="srv@customer.example"), Envelope("pipe"))  # stored, not processed
    port = load(config).smtp.listen[0].port
    proc = subprocess.Popen([sys.executable, "-m", "mailticket", "-c", str(config), "serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for the listener, then hand it a second message over SMTP
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=10)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start listening"
                time.sleep(0.2)
        with client:
            assert client.sendmail("bob@customer.example", ["support@example.com"],
                                   mail(message_id="smtp@customer.example", sender="bob@customer.example")) == {}
        outbox = tmp_path / "outbox" / "new"
        while time.monotonic() < deadline and not (outbox.is_dir() and len(list(outbox.iterdir())) >= 2):
            time.sleep(0.2)
        assert outbox.is_dir() and len(list(outbox.iterdir())) == 2, "serve did not deliver both acknowledgements"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "srv@customer.example" in stderr and "smtp@customer.example" in stderr
    listed = as_json(run(config, "outbox", "list", "--json"))
    assert isinstance(listed, list) and [r["state"] for r in listed] == ["sent", "sent"]


@pytest.mark.parametrize("argv", [["tickets", "show", "999"], ["quarantine", "replay", "999"]])
def test_missing_things_are_clear_errors(write_config: Callable[..., Path], argv: list[str]) -> None:
    config = write_config()
    run(config, "db", "upgrade")
    result = run(config, *argv)
    assert result.returncode == 1 and b"999" in result.stderr


# Issue 10 item 7: import shows its progress bar and summary, not a log line per message.

def _import_source(path: Path, count: int) -> Path:
    box = mailbox.mbox(str(path), create=True)
    for n in range(count):
        box.add(mail(message_id=f"{path.stem}{n}@customer.example", subject=f"question {n}"))
    box.flush()
    return path


def test_import_is_quiet_by_default_and_per_message_at_verbose(write_config: Callable[..., Path],
                                                                tmp_path: Path) -> None:
    config = write_config()
    assert run(config, "db", "upgrade").returncode == 0
    source = _import_source(tmp_path / "history.mbox", 500)
    result = run(config, "import", str(source))
    assert result.returncode == 0, result.stderr.decode()
    out, err = result.stdout.decode(), result.stderr.decode()
    lines = (out + err).splitlines()
    assert len(lines) < 20, lines
    assert "messages read:     500" in out and "tickets created:   500" in out  # the summary, as before
    assert "decision=new_ticket" not in err
    # --verbose brings the per-message lines back.
    verbose = run(config, "--verbose", "import", str(_import_source(tmp_path / "more.mbox", 5)))
    assert verbose.returncode == 0, verbose.stderr.decode()
    assert verbose.stderr.decode().count("decision=new_ticket") == 5


def test_import_still_warns_about_a_quarantined_message(write_config: Callable[..., Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from mailticket import cli
    from mailticket.ingest.pipeline import Pipeline

    config = write_config()
    assert run(config, "db", "upgrade").returncode == 0
    source = _import_source(tmp_path / "broken.mbox", 3)
    handle = Pipeline._handle

    def fail_one(self: Pipeline, session: Any, row: Any, parsed: Any, shared: Any) -> Any:
        if row.message_id == "broken1@customer.example":
            raise ValueError("cannot handle this one")
        return handle(self, session, row, parsed, shared)

    monkeypatch.setattr(Pipeline, "_handle", fail_one)
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)  # main() sets it: undo after
    with caplog.at_level(logging.DEBUG, logger="mailticket"):
        assert cli.main(["-c", str(config), "import", str(source)]) == 0
    pipeline = [r for r in caplog.records if r.name == "mailticket.pipeline"]
    assert [(r.levelname, "quarantined" in r.getMessage()) for r in pipeline] == [("WARNING", True)]
    assert "quarantined:       1" in capsys.readouterr().out
    assert logging.getLogger("mailticket.pipeline").level == logging.NOTSET  # restored after the import
