"""The IMAP poller against a real Dovecot (started per test on a free loopback port)."""

from __future__ import annotations

import functools
import json
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailticket.app import App
from mailticket.domain import RawState
from mailticket.rawmail import header_message_id
from mailticket.settings import load
from mailticket.sources import status
from mailticket.sources.imap import ImapPoller
from mailticket.sources.imapconn import ImapSetupError, connect
from mailticket.sources.imaprun import ImapRunner
from mailticket.store.models import Event, Message, RawMessage, SourceStatus, Ticket
from tests.conftest import count, mail, poison, run_cli, skip_or_fail
from tests.dovecot import Dovecot
from tests.tcpproxy import FreezingProxy

HELP = "help@example.com"  # write_config's last [[mailboxes]] entry: the [mailboxes.imap] table lands there


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    reason = Dovecot.available()
    if reason:
        skip_or_fail(f"Dovecot cannot run here: {reason} (Debian package dovecot-imapd, as root)")
    server = Dovecot(tmp_path / "dovecot")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def imap_config(write_config: Callable[..., Path], dovecot: Dovecot, tmp_path: Path) -> Callable[..., Path]:
    """A config whose help@example.com mailbox polls the test Dovecot; keyword arguments override keys."""
    secret = tmp_path / "imap-password"
    secret.write_text(dovecot.password + "\n")

    def make(extra: str = "", **overrides: Any) -> Path:
        values: dict[str, Any] = {
            "host": dovecot.host,
            "port": dovecot.port,
            "tls": "none",
            "insecure": True,
            "username": dovecot.user,
            "password_file": str(secret),
            "after": "move:Processed",
            "quarantine_folder": "Quarantine",
            "poll_interval": 1,
            "timeout": 10,
        }
        values.update(overrides)
        lines = ["[mailboxes.imap]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
        return write_config(extra="\n".join(lines) + "\n" + extra)

    return make


@pytest.fixture
def imap_app(make_app: Callable[..., App], imap_config: Callable[..., Path]) -> Callable[..., App]:
    def build(**overrides: Any) -> App:
        app_options = {k: overrides.pop(k) for k in ("inbox_interval", "imap_options") if k in overrides}
        return make_app(settings_override=load(imap_config(**overrides)), **app_options)

    return build


def poller_of(app: App) -> ImapPoller:
    (mailbox,) = app.imap_mailboxes
    return app.imap_poller(mailbox)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def messages(n: int, prefix: str = "m") -> list[bytes]:
    return [mail(subject=f"{prefix} question {i}", message_id=f"{prefix}{i}@customer.example",
                 sender=f"Customer {i} <c{i}@customer.example>") for i in range(n)]


class Killed(BaseException):
    """Stands in for the process dying at a chosen point (a fault a real server cannot time)."""


# -- the basics -----------------------------------------------------------------


def test_messages_become_tickets_once_and_are_moved(imap_app: Callable[..., App], dovecot: Dovecot) -> None:
    app = imap_app(fetch_batch=7)  # several batches
    raws = messages(20)
    raws.append(mail(subject="Re: m question 3", message_id="reply3@customer.example",
                     sender="Customer 3 <c3@customer.example>", headers={"In-Reply-To": "<m3@customer.example>"}))
    dovecot.append_many("INBOX", raws)
    poller = poller_of(app)
    result = poller.poll_once()
    assert (result.fetched, result.new, result.duplicates, result.quarantined) == (21, 21, 0, 0)
    assert count(app, Ticket) == 20  # the reply joined its ticket
    with app.db.transaction() as s:
        inbound = s.execute(select(func.count()).where(Message.direction == "in")).scalar_one()
    assert inbound == 21
    assert dovecot.folder_count("INBOX") == 0
    assert dovecot.folder_count("Processed") == 21
    with app.db.transaction() as s:
        rows = s.execute(select(RawMessage.source, RawMessage.recipients, RawMessage.peer)).all()
        queues = set(s.execute(select(Ticket.queue)).scalars())
    assert {r.source for r in rows} == {"imap"}
    assert all(r.recipients == [HELP] and ";UID=" in r.peer for r in rows)
    assert queues == {"help"}  # the mailbox the folder feeds
    again = poller.poll_once()
    assert again.fetched == 0
    assert count(app, RawMessage) == 21
    poller.disconnect()


def test_after_seen_flags_and_keeps_and_never_refetches(imap_app: Callable[..., App], dovecot: Dovecot) -> None:
    app = imap_app(after="seen", quarantine_folder=None)
    dovecot.append_many("INBOX", messages(3))
    poller = poller_of(app)
    assert poller.poll_once().fetched == 3
    client = dovecot.client()
    client.select_folder("INBOX", readonly=True)
    flags = client.get_flags(client.search("ALL"))
    client.logout()
    assert len(flags) == 3 and all(b"\\Seen" in f for f in flags.values())
    dovecot.append("INBOX", mail(message_id="later@customer.example", subject="later"))
    result = poller.poll_once()
    assert (result.fetched, result.new) == (1, 1)  # only the new one: the cursor, not the \Seen flag, decides
    assert count(app, Ticket) == 4
    poller.disconnect()


def test_corpus_messages_through_imap(imap_app: Callable[..., App], dovecot: Dovecot, corpus: Path) -> None:
    rows = [line.split("\t") for line in (corpus / "MANIFEST.tsv").read_text().splitlines()[1:]]
    picked = [corpus / row[0] for row in rows[::15] if not row[0].startswith("reply/")]
    app = imap_app(fetch_batch=10)
    client = dovecot.client()
    appended: list[bytes] = []
    for path in picked:
        raw = path.read_bytes()
        try:
            client.append("INBOX", raw)
        except Exception:  # Dovecot may refuse a malformed message: then it is not in the mailbox
            continue
        appended.append(raw)
    client.logout()
    assert len(appended) > 30
    poller = poller_of(app)
    result = poller.poll_once()
    assert result.fetched == len(appended)
    with_id = {header_message_id(raw) for raw in appended if header_message_id(raw)}
    without_id = sum(1 for raw in appended if not header_message_id(raw))
    assert count(app, RawMessage) == len(with_id) + without_id
    assert dovecot.folder_count("INBOX") == 0
    assert dovecot.folder_count("Processed") + dovecot.folder_count("Quarantine") == len(appended)
    with app.db.transaction() as s:
        states = dict(s.execute(select(RawMessage.state, func.count()).group_by(RawMessage.state)).all())
    assert set(states) <= {RawState.DONE, RawState.QUARANTINED}
    assert dovecot.folder_count("Quarantine") == result.quarantined
    # The same messages again (a second copy in the mailbox): all duplicates.
    dovecot.append_many("INBOX", appended)
    again = poller.poll_once()
    assert (again.fetched, again.new) == (len(appended), 0)
    assert count(app, RawMessage) == len(with_id) + without_id
    poller.disconnect()


# -- crashes ----------------------------------------------------------------------


def test_crash_between_commit_and_move_leaves_one_ticket_each(
    imap_app: Callable[..., App], dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = imap_app()
    dovecot.append_many("INBOX", messages(5))
    dying = poller_of(app)

    def die(*_args: Any) -> None:
        raise Killed

    monkeypatch.setattr(dying, "_file", die)
    with pytest.raises(Killed):
        dying.poll_once()
    dying.disconnect()
    assert count(app, Ticket) == 5  # committed and processed ...
    assert dovecot.folder_count("INBOX") == 5  # ... but still on the server
    result = poller_of(app).poll_once()  # "after the restart"
    assert (result.fetched, result.duplicates) == (5, 5)
    assert count(app, Ticket) == 5
    assert count(app, RawMessage) == 5
    assert dovecot.folder_count("INBOX") == 0
    assert dovecot.folder_count("Processed") == 5


def test_crash_before_commit_leaves_the_messages_on_the_server(
    imap_app: Callable[..., App], dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = imap_app()
    dovecot.append_many("INBOX", messages(4))
    dying = poller_of(app)

    def die(*_args: Any) -> None:
        raise Killed

    monkeypatch.setattr(app.inbox, "accept_many", die)
    with pytest.raises(Killed):
        dying.poll_once()
    dying.disconnect()
    monkeypatch.undo()
    assert count(app, RawMessage) == 0
    assert dovecot.folder_count("INBOX") == 4
    client = dovecot.client()
    client.select_folder("INBOX", readonly=True)
    assert not any(b"\\Seen" in f for f in client.get_flags(client.search("ALL")).values())  # fetched with PEEK
    client.logout()
    assert poller_of(app).poll_once().new == 4
    assert dovecot.folder_count("Processed") == 4


def test_new_uidvalidity_rescans_without_duplicates(imap_app: Callable[..., App], dovecot: Dovecot) -> None:
    app = imap_app(folder="Support", after="seen", quarantine_folder=None)
    first = messages(3, "u")
    dovecot.append_many("Support", first)
    poller = poller_of(app)
    assert poller.poll_once().new == 3
    with app.db.transaction() as s:
        (old_validity,) = s.execute(select(RawMessage.peer)).scalars().first().split("UIDVALIDITY=")[1:2]
    poller.disconnect()
    client = dovecot.client()
    client.delete_folder("Support")
    time.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock
    client.create_folder("Support")
    client.logout()
    dovecot.append_many("Support", [*first, mail(message_id="u-new@customer.example", subject="new one")])
    result = poller.poll_once()
    assert (result.fetched, result.new, result.duplicates) == (4, 1, 3)
    assert count(app, Ticket) == 4
    with app.db.transaction() as s:
        events = s.execute(select(Event.detail).where(Event.kind == "imap_uidvalidity")).scalars().all()
    assert len(events) == 1 and old_validity.split("/")[0] in events[0]
    poller.disconnect()


# -- what cannot be processed -------------------------------------------------------


def test_unprocessable_message_goes_to_quarantine_folder(
    imap_app: Callable[..., App], dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A template failure no longer quarantines (the mail fails, the ticket stands: tests/test_templates.py), so
    # the poison is injected in process: processing raises for one message.
    app = imap_app()
    poison(app, monkeypatch, "poison@customer.example")
    dovecot.append_many("INBOX", [
        mail(message_id="poison@customer.example", subject="processing raises"),
        mail(message_id="fine@customer.example", subject="no ack needed", headers={"Auto-Submitted": "auto-replied"}),
    ])
    poller = poller_of(app)
    result = poller.poll_once()
    assert (result.fetched, result.quarantined) == (2, 1)
    assert dovecot.folder_count("INBOX") == 0
    assert [header_message_id(r) for r in dovecot.folder_messages("Quarantine")] == ["poison@customer.example"]
    assert [header_message_id(r) for r in dovecot.folder_messages("Processed")] == ["fine@customer.example"]
    with app.db.transaction() as s:
        quarantined = s.execute(select(RawMessage).where(RawMessage.state == RawState.QUARANTINED)).scalars().all()
        assert [q.message_id for q in quarantined] == ["poison@customer.example"]
        assert "no_such_field" in (quarantined[0].error or "")
        assert list(s.execute(select(Ticket.subject)).scalars()) == ["no ack needed"]
    poller.disconnect()


def test_oversize_message_is_not_fetched_and_goes_to_quarantine(
    imap_app: Callable[..., App], dovecot: Dovecot
) -> None:
    app = imap_app(max_message_size=5000)
    dovecot.append_many("INBOX", [mail(message_id="big@customer.example", body="x" * 20000 + "\n"),
                                  mail(message_id="small@customer.example")])
    poller = poller_of(app)
    result = poller.poll_once()
    assert (result.oversize, result.fetched) == (1, 1)
    assert [header_message_id(r) for r in dovecot.folder_messages("Quarantine")] == ["big@customer.example"]
    with app.db.transaction() as s:
        details = s.execute(select(Event.detail).where(Event.kind == "imap_oversize")).scalars().all()
    assert len(details) == 1 and "max_message_size" in details[0]
    assert poller.poll_once().fetched == 0
    poller.disconnect()


# -- TLS and login -----------------------------------------------------------------------


def test_starttls_required_but_not_offered_refuses_to_log_in(imap_app: Callable[..., App], dovecot: Dovecot) -> None:
    app = imap_app(tls="starttls", insecure=False)
    (mailbox,) = app.imap_mailboxes
    assert mailbox.imap is not None
    with pytest.raises(ImapSetupError, match="does not offer STARTTLS"):
        connect(mailbox.imap)
    assert "user=<support>" not in dovecot.log_tail(200)  # the password never went out


def test_wrong_password_is_a_clear_error(imap_app: Callable[..., App], dovecot: Dovecot, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    app = imap_app(password_file=str(wrong))
    (mailbox,) = app.imap_mailboxes
    assert mailbox.imap is not None
    with pytest.raises(ImapSetupError, match=r"login as support .* refused"):
        connect(mailbox.imap)


def test_oauth2_token_command_failure_is_reported(imap_app: Callable[..., App], tmp_path: Path) -> None:
    app = imap_app(password_file=None, oauth2_token_command=["sh", "-c", "echo token service down >&2; exit 3"])
    (mailbox,) = app.imap_mailboxes
    assert mailbox.imap is not None
    with pytest.raises(ImapSetupError, match=r"exit 3.*token service down"):
        connect(mailbox.imap)


# -- serve: IDLE, reconnection, status, SMTP + IMAP ----------------------------------------------


def _runner(app: App, **options: Any) -> ImapRunner:
    options.setdefault("backoff_base", 0.2)
    options.setdefault("backoff_max", 1.0)
    return ImapRunner(poller_of(app), app.status, **options)


def _state(app: App) -> str:
    row = _status(app)
    return row.state if row is not None else ""


def _status(app: App) -> SourceStatus | None:
    with app.db.transaction() as s:
        row = s.get(SourceStatus, f"imap:{HELP}")
        if row is not None:
            s.expunge(row)
        return row


def test_idle_turns_new_mail_into_a_ticket_within_two_seconds(imap_app: Callable[..., App], dovecot: Dovecot) -> None:
    app = imap_app(poll_interval=3600)  # without IDLE this test would wait an hour
    runner = _runner(app)
    runner.start()
    try:
        wait_until(lambda: _state(app) == status.IDLE, 10, "runner idle")
        dovecot.append("INBOX", mail(message_id="idle@customer.example"))
        elapsed = wait_until(lambda: count(app, Ticket) == 1, 2.0, "ticket from IDLE")
        assert elapsed < 2.0
        wait_until(lambda: dovecot.folder_count("Processed") == 1, 5, "moved")
    finally:
        runner.stop(10)


def test_reconnects_after_dovecot_restart_and_picks_up_what_arrived(
    imap_app: Callable[..., App], dovecot: Dovecot
) -> None:
    app = imap_app()
    runner = _runner(app)
    runner.start()
    try:
        wait_until(lambda: _state(app) == status.IDLE, 10, "runner idle")
        dovecot.stop()
        wait_until(lambda: _state(app) == status.ERROR, 10, "error noticed")
        row = _status(app)
        assert row is not None and row.last_error and row.next_retry_at is not None
        dovecot.deliver_to_maildir("INBOX", mail(message_id="while-down@customer.example"))
        time.sleep(1.5)  # a few failed attempts
        assert runner.failures >= 2
        dovecot.restart()
        wait_until(lambda: count(app, Ticket) == 1, 15, "ticket after restart")
        wait_until(lambda: dovecot.folder_count("Processed") == 1, 5, "moved after restart")
        assert runner.failures == 0
    finally:
        runner.stop(10)


def test_serve_same_message_by_smtp_and_imap_makes_one_ticket(
    imap_app: Callable[..., App], dovecot: Dovecot
) -> None:
    app = imap_app(inbox_interval=0.5, imap_options={"backoff_base": 0.2, "backoff_max": 1.0})
    app.start()
    try:
        raw = mail(message_id="both@customer.example", to=HELP)
        assert app.listener is not None
        _listener, (host, port, *_rest) = app.listener.addresses[0]
        with smtplib.SMTP(host, port, timeout=10) as client:
            client.sendmail("alice@customer.example", [HELP], raw)
        dovecot.append("INBOX", raw)
        wait_until(lambda: dovecot.folder_count("Processed") == 1, 10, "IMAP copy filed")
        assert count(app, RawMessage) == 1
        assert count(app, Ticket) == 1
        with app.db.transaction() as s:
            assert s.execute(select(RawMessage.source)).scalar_one() == "smtp"
    finally:
        app.stop(5)


def test_one_failing_mailbox_does_not_stop_another(
    write_config: Callable[..., Path], dovecot: Dovecot, make_app: Callable[..., App], tmp_path: Path
) -> None:
    secret = tmp_path / "pw"
    secret.write_text(dovecot.password)
    good = (f'host = "{dovecot.host}"\nport = {dovecot.port}\ntls = "none"\ninsecure = true\n'
            f'username = "{dovecot.user}"\npassword_file = "{secret}"\nafter = "move:Processed"\ntimeout = 5\n')
    bad = good.replace(f"port = {dovecot.port}", "port = 1")  # nothing listens there
    config = write_config(extra=(
        "[mailboxes.imap]\n" + good + "\n[[mailboxes]]\naddress = \"broken@example.com\"\n[mailboxes.imap]\n" + bad
    ))
    app = make_app(settings_override=load(config), imap_options={"backoff_base": 0.2, "backoff_max": 1.0})
    app.start()
    try:
        dovecot.append("INBOX", mail(message_id="still-works@customer.example"))
        wait_until(lambda: count(app, Ticket) == 1, 10, "the working mailbox's ticket")
        with app.db.transaction() as s:
            broken = s.get(SourceStatus, "imap:broken@example.com")
            # between attempts it is "error", during one "connecting"; the last error stays recorded
            assert broken is not None and broken.state in (status.ERROR, status.CONNECTING)
            assert broken.last_error and "Connection refused" in broken.last_error and broken.last_success_at is None
    finally:
        app.stop(5)


def test_poll_once_and_status_for_admins(imap_config: Callable[..., Path], dovecot: Dovecot) -> None:
    config = imap_config()

    run = functools.partial(run_cli, config)

    assert run("db", "upgrade").returncode == 0
    before = json.loads(run("status", "--json").stdout)
    (entry,) = [m for m in before["mailboxes"] if m["address"] == HELP]
    assert entry["imap"]["state"] == "never polled"
    dovecot.append_many("INBOX", messages(2))
    assert run("poll", "--once").returncode == 0
    after = json.loads(run("status", "--json").stdout)
    (entry,) = [m for m in after["mailboxes"] if m["address"] == HELP]
    success_at = entry["imap"]["last_success_at"]
    assert success_at and entry["imap"]["last_error"] is None
    assert entry["imap"]["last_uid"] == 2 and entry["imap"]["uidvalidity"]
    assert after["inbox"] == {"done": 2}
    assert after["outbox"] == {"queued": 2}  # acknowledgements wait for `serve` to send them
    dovecot.stop()
    failed = run("poll", "--once")
    assert failed.returncode == 75
    down = json.loads(run("status", "--json").stdout)
    (entry,) = [m for m in down["mailboxes"] if m["address"] == HELP]
    assert entry["imap"]["state"] == "error" and "Connection refused" in entry["imap"]["last_error"]
    assert entry["imap"]["last_success_at"] == success_at  # kept from the pass that worked
    table = run("status")
    assert table.returncode == 0 and b"error" in table.stdout



def test_keepalive_notices_a_silently_dead_connection(imap_app: Callable[..., App], dovecot: Dovecot) -> None:
    proxy = FreezingProxy(dovecot.host, dovecot.port)
    proxy.start()
    app = imap_app(port=proxy.port, timeout=2)
    runner = _runner(app, idle_renew=1.0)
    runner.start()
    try:
        wait_until(lambda: _state(app) == status.IDLE, 10, "runner idle")
        proxy.freeze()  # the connection stays open but nothing gets through, either way
        dovecot.append("INBOX", mail(message_id="after-freeze@customer.example"))
        wait_until(lambda: count(app, Ticket) == 1, 15, "ticket over a new connection")
        row = _status(app)
        assert row is not None and row.last_error and "timed out" in row.last_error
    finally:
        runner.stop(10)
        proxy.stop()


@pytest.mark.parametrize("capability", ["IMAP4rev1 IDLE UIDPLUS", "IMAP4rev1"])
def test_servers_without_move(
    capability: str, make_app: Callable[..., App], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Without MOVE: COPY + \\Deleted, then UID EXPUNGE when UIDPLUS is there; else left for the server."""
    reason = Dovecot.available()
    if reason:
        skip_or_fail(f"Dovecot cannot run here: {reason}")
    server = Dovecot(tmp_path / "dovecot", extra_config=f"imap_capability = {capability}\n")
    server.start()
    try:
        secret = tmp_path / "pw"
        secret.write_text(server.password)
        config = write_config(extra=(
            f'[mailboxes.imap]\nhost = "{server.host}"\nport = {server.port}\ntls = "none"\ninsecure = true\n'
            f'username = "{server.user}"\npassword_file = "{secret}"\nafter = "move:Processed"\n'))
        app = make_app(settings_override=load(config))
        server.append_many("INBOX", messages(3))
        poller = poller_of(app)
        assert poller.poll_once().filed == 3
        assert not poller.client.has_capability("MOVE")  # type: ignore[union-attr]
        assert not poller.can_idle or "IDLE" in capability
        poller.disconnect()
        assert server.folder_count("Processed") == 3
        client = server.client()
        client.select_folder("INBOX", readonly=True)
        left = client.get_flags(client.search("ALL"))
        client.logout()
        if "UIDPLUS" in capability:
            assert left == {}
        else:
            assert len(left) == 3 and all(b"\\Deleted" in f for f in left.values())
        assert poller.poll_once().fetched == 0  # the cursor: never fetched again
        poller.disconnect()
        assert count(app, Ticket) == 3
    finally:
        server.close()


def test_poll_without_once_runs_until_sigterm(imap_config: Callable[..., Path], dovecot: Dovecot) -> None:
    config = imap_config()
    command = [sys.executable, "-m", "mailticket", "-c", str(config)]
    assert subprocess.run([*command, "db", "upgrade"], capture_output=True, timeout=60).returncode == 0
    proc = subprocess.Popen([*command, "poll"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        dovecot.append("INBOX", mail(message_id="foreground@customer.example"))
        wait_until(lambda: dovecot.folder_count("Processed") == 1, 20, "polled in the foreground")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    listed = subprocess.run([*command, "tickets", "list", "--json"], capture_output=True, timeout=60)
    assert [t["subject"] for t in json.loads(listed.stdout)] == ["Printer on fire"]


def test_without_idle_polls_at_the_interval(imap_app: Callable[..., App], dovecot: Dovecot) -> None:
    app = imap_app(idle=False, poll_interval=1)
    runner = _runner(app)
    runner.start()
    try:
        wait_until(lambda: _state(app) == status.WAITING, 10, "runner waiting between polls")
        row = _status(app)
        assert row is not None and row.next_retry_at is not None  # when the next poll is due
        dovecot.append("INBOX", mail(message_id="interval@customer.example"))
        wait_until(lambda: count(app, Ticket) == 1, 5, "ticket from the next poll")
    finally:
        runner.stop(10)
