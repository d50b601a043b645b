"""The SMTP/LMTP listener, live on a free loopback port, driven by smtplib and raw sockets."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from mailticket.app import App
from mailticket.ingest.committer import GroupCommitter
from mailticket.ingest.inbox import Accepted
from mailticket.settings import Listener, Settings
from mailticket.sources.smtp import SmtpListener, normalize_line_ends
from mailticket.store.db import Database
from mailticket.store.models import Message, RawMessage, Ticket
from tests.conftest import POSTGRES_URL, mail, skip_or_fail

SUPPORT = "support@example.com"


class Running:
    def __init__(self, app: App, listener: SmtpListener, committer: GroupCommitter) -> None:
        self.app = app
        self.listener = listener
        self.committer = committer
        self.port = listener.bound_port()

    def client(self, lmtp: bool = False) -> smtplib.SMTP:
        cls = smtplib.LMTP if lmtp else smtplib.SMTP
        return cls("127.0.0.1", self.port, timeout=30)

    def count(self, model: type) -> int:
        with self.app.db.transaction() as s:
            return int(s.execute(select(func.count()).select_from(model)).scalar_one())


@pytest.fixture
def serve_smtp(settings: Settings, make_app: Callable[..., App]) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(app: App | None = None, committer: GroupCommitter | None = None, lmtp: bool = False,
              **smtp: Any) -> Running:
        listen = (Listener("127.0.0.1", 0, lmtp),)
        custom = dataclasses.replace(settings, smtp=dataclasses.replace(settings.smtp, listen=listen, **smtp))
        app = app or make_app(custom)
        committer = committer or GroupCommitter(app.inbox)
        committer.start()
        listener = SmtpListener(custom, committer, lambda: None)
        listener.start()
        running = Running(app, listener, committer)
        started.append(running)
        return running

    yield start
    for running in started:
        running.listener.stop(grace=5)
        running.committer.stop()


def raw_session(port: int, chunks: list[bytes], read_after_each: bool = True) -> list[str]:
    """Talk SMTP over a plain socket (smtplib would repair the line endings we want to test)."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rb")
        replies.append(stream.readline().decode())
        for chunk in chunks:
            sock.sendall(chunk)
            if read_after_each:
                line = stream.readline().decode()
                while line[3:4] == "-":
                    line = stream.readline().decode()
                replies.append(line)
    return replies


def test_250_makes_a_ticket(serve_smtp: Callable[..., Running]) -> None:
    srv = serve_smtp()
    with srv.client() as client:
        code, message = client.ehlo()
        assert code == 250 and b"SIZE" in message and b"AUTH" not in message
        refused = client.sendmail("alice@customer.example", [SUPPORT], mail())
        assert refused == {}
    [outcome] = srv.app.pipeline.drain()
    assert outcome.decision == "new_ticket"
    with srv.app.db.transaction() as s:
        raw = s.get_one(RawMessage, outcome.raw_id)
        assert (raw.source, raw.mail_from, raw.recipients) == ("smtp", "alice@customer.example", [SUPPORT])
        assert raw.peer == "127.0.0.1"


def test_foreign_recipient_gets_550_and_no_relay(serve_smtp: Callable[..., Running]) -> None:
    srv = serve_smtp()
    with srv.client() as client:
        client.ehlo()
        client.mail("alice@customer.example")
        code, message = client.rcpt("someone@elsewhere.example")
        assert code == 550 and message.startswith(b"5.1.1")
        code, _ = client.rcpt("SUPPORT+billing@Example.com")
        assert code == 250
        assert client.data(mail())[0] == 250
    assert srv.count(RawMessage) == 1
    with srv.app.db.transaction() as s:
        assert s.execute(select(RawMessage.recipients)).scalar_one() == ["SUPPORT+billing@Example.com"]


def test_several_support_recipients_make_one_ticket(serve_smtp: Callable[..., Running]) -> None:
    srv = serve_smtp()
    raw = mail(message_id="multi@customer.example")
    with srv.client() as client:
        assert client.sendmail("a@customer.example", [SUPPORT, "help@example.com"], raw) == {}
        # The same message again in a second transaction (as an MTA retry would): still one.
        assert client.sendmail("a@customer.example", ["help@example.com"], raw) == {}
    srv.app.pipeline.drain()
    assert srv.count(RawMessage) == 1 and srv.count(Ticket) == 1


def test_oversize_gets_552_and_is_not_stored(serve_smtp: Callable[..., Running]) -> None:
    srv = serve_smtp(max_message_size=10_000)
    with srv.client() as client:
        client.ehlo()
        assert b"SIZE 10000" in client.ehlo_resp  # type: ignore[operator]
        client.mail("a@customer.example")
        client.rcpt(SUPPORT)
        code, message = client.data(mail(body=("x" * 70 + "\n") * 300))
        assert code == 552 and message.startswith(b"5.3.4")
        # A declared SIZE over the limit is refused at MAIL FROM.
        client.rset()
        code, _ = client.mail("a@customer.example", ["SIZE=50000"])
        assert code == 552
    assert srv.count(RawMessage) == 0


@contextlib.contextmanager
def database_locked(db: Database) -> Iterator[None]:
    """Another connection holds the write lock (SQLite) or the table lock (PostgreSQL)."""
    url = db.engine.url
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(url.database), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = create_engine(url)
    with engine.connect() as conn:
        trans = conn.begin()
        conn.execute(text("LOCK TABLE raw_messages IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            trans.rollback()
    engine.dispose()


def test_locked_database_gives_451_then_retry_gives_one_ticket(
    serve_smtp: Callable[..., Running], settings: Settings, database_url: str
) -> None:
    url = database_url
    if POSTGRES_URL:
        url = url.replace("options=-csearch_path%3D", "options=-clock_timeout%3D300%20-csearch_path%3D")
    app = App(settings, database=Database.from_url(url, busy_timeout_ms=300))
    app.prepare(upgrade=True)
    srv = serve_smtp(app=app)
    raw = mail(message_id="locked@customer.example")
    try:
        with database_locked(app.db), srv.client() as client:
            with pytest.raises(smtplib.SMTPDataError) as info:
                client.sendmail("a@customer.example", [SUPPORT], raw)
            assert info.value.smtp_code == 451 and info.value.smtp_error.startswith(b"4.3.0")
        with srv.client() as client:
            assert client.sendmail("a@customer.example", [SUPPORT], raw) == {}
        app.pipeline.drain()
        assert srv.count(RawMessage) == 1 and srv.count(Ticket) == 1
    finally:
        srv.listener.stop(grace=5)
        app.close()


class ExplodingInbox:
    def accept_many(self, items: object) -> list[Accepted]:
        raise RuntimeError("injected intake failure")

    accept_each = accept_many  # the committer's entry point


def test_unexpected_exception_gives_451_never_5xx(serve_smtp: Callable[..., Running], app: App) -> None:
    srv = serve_smtp(app=app, committer=GroupCommitter(ExplodingInbox()))  # type: ignore[arg-type]
    with srv.client() as client, pytest.raises(smtplib.SMTPDataError) as info:
        client.sendmail("a@customer.example", [SUPPORT], mail())
    assert info.value.smtp_code == 451


def data_session(port: int, data: bytes) -> list[str]:
    """One transaction over a raw socket: ``data`` (ending in CRLF.CRLF) and QUIT in one write,
    then every reply up to the close, so a smuggled command would show as an extra reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rb")
        replies = [stream.readline().decode()]
        for command in (b"EHLO client.example\r\n", b"MAIL FROM:<a@customer.example>\r\n",
                        b"RCPT TO:<support@example.com>\r\n", b"DATA\r\n"):
            sock.sendall(command)
            line = stream.readline().decode()
            while line[3:4] == "-":
                line = stream.readline().decode()
            replies.append(line)
        sock.sendall(data + b"QUIT\r\n")
        replies += [line.decode() for line in stream]
    return replies


@pytest.mark.parametrize(("data", "expected"), [
    (b"", b""),
    (b"a\r\nb\r\n", b"a\r\nb\r\n"),
    (b"a\nb\n", b"a\r\nb\r\n"),
    (b"a\rb\r", b"a\r\nb\r\n"),
    (b"a\r\r\n", b"a\r\n\r\n"),
    (b"a\n\r\n", b"a\r\n\r\n"),
    (b"a\n\rb", b"a\r\n\r\nb"),
    (b"\n\n", b"\r\n\r\n"),
    (b"Subject: a\nBcc: v@x.example\r\n\r\nbody\r\n", b"Subject: a\r\nBcc: v@x.example\r\n\r\nbody\r\n"),
    # Dot-unstuffing: aiosmtpd did the first line and every line after a CRLF; we do the rest, once.
    (b".x\nb\r\n", b".x\r\nb\r\n"),
    (b"a\r\n..x\r\n", b"a\r\n..x\r\n"),
    (b"a\n..x\r\n", b"a\r\n.x\r\n"),
    (b"a\r..x\r\n", b"a\r\n.x\r\n"),
    (b"a\n.x\n", b"a\r\nx\r\n"),
    (b"a\n..\n", b"a\r\n.\r\n"),
    # A lone dot after a bare line end is an empty line of the same message (LF.LF, CR.CR, LF.CRLF).
    (b"a\n.\nb\r\n", b"a\r\n\r\nb\r\n"),
    (b"a\r.\rb\r\n", b"a\r\n\r\nb\r\n"),
    (b"a\n.\r\nb\r\n", b"a\r\n\r\nb\r\n"),
    (b"a\r.\r\nb\r\n", b"a\r\n\r\nb\r\n"),
])
def test_normalize_line_ends(data: bytes, expected: bytes) -> None:
    out = normalize_line_ends(data)
    assert out == expected
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", out) is None  # only CRLF left
    assert normalize_line_ends(out) == out


def test_bare_lf_mail_is_accepted_and_stored_with_crlf(serve_smtp: Callable[..., Running]) -> None:
    srv = serve_smtp()
    crlf = mail(subject="Old client", body="Hello,\n.dotted line\nbye\n", message_id="lf@customer.example")
    # What an old client sends: LF line ends, its dot-stuffing done on LF lines, CRLF.CRLF at the end.
    sent = crlf.replace(b"\r\n", b"\n").replace(b"\n.", b"\n..") + b"\r\n.\r\n"
    replies = data_session(srv.port, sent)
    assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354", "250", "221"], replies
    assert replies[-2].startswith("250 2.0.0 Ok: queued as")
    with srv.app.db.transaction() as s:
        [raw] = s.execute(select(RawMessage.raw)).scalars().all()
    assert raw == crlf + b"\r\n"
    [outcome] = srv.app.pipeline.drain()
    assert outcome.decision == "new_ticket"
    with srv.app.db.transaction() as s:
        ticket = s.execute(select(Ticket)).scalar_one()
        assert ticket.subject == "Old client"
        message = s.execute(select(Message).where(Message.raw_id == outcome.raw_id)).scalar_one()
        assert message.text.replace("\r\n", "\n").strip() == "Hello,\n.dotted line\nbye"


SMUGGLED = (b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n"
            b"From: evil@x.example\r\nSubject: smuggled\r\nMessage-ID: <smuggled@x.example>\r\n\r\nx\r\n")
SMUGGLING = {  # the would-be end of DATA after "body", as the smuggling attacks send it
    "LF.LF": b"\n.\n", "CR.CR": b"\r.\r", "LF.CRLF": b"\n.\r\n", "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n", "CRLF.CR": b"\r\n.\r",
}


@pytest.mark.parametrize("end", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggling_never_makes_a_second_message(serve_smtp: Callable[..., Running], end: bytes) -> None:
    srv = serve_smtp()
    first = mail(subject="one", body="body", message_id="one@customer.example")
    replies = data_session(srv.port, first + end + SMUGGLED + b".\r\n")
    # One DATA, one 354, one queued 250, then QUIT: the smuggled MAIL/RCPT/DATA never ran as commands.
    assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354", "250", "221"], replies
    with srv.app.db.transaction() as s:
        [row] = s.execute(select(RawMessage)).scalars().all()
        assert row.mail_from == "a@customer.example"
        # The dot line became an empty line; the would-be second message is body text of the first.
        assert row.raw == first + b"\r\n\r\n" + SMUGGLED
    [outcome] = srv.app.pipeline.drain()
    assert outcome.decision == "new_ticket"
    assert srv.count(Ticket) == 1
    with srv.app.db.transaction() as s:
        ticket = s.execute(select(Ticket)).scalar_one()
        assert ticket.subject == "one" and ticket.requester == "alice@customer.example"
        message = s.execute(select(Message).where(Message.raw_id == outcome.raw_id)).scalar_one()
        assert "MAIL FROM:<evil@x.example>" in message.text and "Subject: smuggled" in message.text


def test_bare_lf_header_is_a_header_of_the_same_message(serve_smtp: Callable[..., Running]) -> None:
    srv = serve_smtp()
    data = (b"From: a@customer.example\nTo: support@example.com\nSubject: a\nBcc: victim@x.example\r\n"
            b"Message-ID: <hdr@customer.example>\r\n\r\nbody\r\n.\r\n")
    replies = data_session(srv.port, data)
    assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354", "250", "221"], replies
    with srv.app.db.transaction() as s:
        [raw] = s.execute(select(RawMessage.raw)).scalars().all()
    # Stored as the email parser reads it: the bytes and the parse agree on every header line.
    assert raw == data[:-3].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_starttls_command_injection_is_ignored(serve_smtp: Callable[..., Running], tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    srv = serve_smtp(tls_cert=cert, tls_key=key)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        stream.readline()
        sock.sendall(b"EHLO client.example\r\n")
        ehlo = []
        while True:
            line = stream.readline()
            ehlo.append(line)
            if line[3:4] == b" ":
                break
        assert any(b"STARTTLS" in line for line in ehlo) and not any(b"AUTH" in line for line in ehlo)
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")  # one write
        assert stream.readline().startswith(b"220")
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls_stream = tls.makefile("rb")
            tls.sendall(b"EHLO client.example\r\n")
            while tls_stream.readline()[3:4] != b" ":
                pass
            tls.sendall(b"RCPT TO:<support@example.com>\r\n")
            # The injected MAIL FROM was discarded: RCPT without MAIL is out of sequence.
            assert tls_stream.readline().startswith(b"503")


def test_auth_is_not_offered(serve_smtp: Callable[..., Running]) -> None:
    srv = serve_smtp()
    replies = raw_session(srv.port, [b"EHLO c.example\r\n", b"AUTH PLAIN AGZvbwBiYXI=\r\n"])
    assert replies[-1].startswith("502")


def test_lmtp_answers_once_per_recipient(serve_smtp: Callable[..., Running]) -> None:
    srv = serve_smtp(lmtp=True)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"220")
        sock.sendall(b"LHLO client.example\r\n")
        while stream.readline()[3:4] != b" ":
            pass
        for line in (b"MAIL FROM:<a@customer.example>\r\n", b"RCPT TO:<support@example.com>\r\n",
                     b"RCPT TO:<help@example.com>\r\n", b"DATA\r\n"):
            sock.sendall(line)
            assert stream.readline()[:1] in (b"2", b"3")
        sock.sendall(mail() + b"\r\n.\r\n")
        replies = [stream.readline(), stream.readline()]
    assert all(r.startswith(b"250 2.0.0") for r in replies), replies
    assert srv.count(RawMessage) == 1


def test_connection_limit_per_ip_gives_421(serve_smtp: Callable[..., Running]) -> None:
    srv = serve_smtp(max_connections_per_ip=2)
    first, second = srv.client(), srv.client()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            assert sock.makefile("rb").readline().startswith(b"421")
    finally:
        first.quit()
        second.quit()
    with srv.client() as again:  # freed slots are usable again
        assert again.noop()[0] == 250


def test_postfix_smtp_source_2000_messages_20_sessions(serve_smtp: Callable[..., Running]) -> None:
    binary = shutil.which("smtp-source", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if binary is None:
        skip_or_fail("Postfix's smtp-source is not installed (Debian package postfix)")
    srv = serve_smtp()
    result = subprocess.run([binary, "-s", "20", "-m", "2000", "-f", "load@customer.example",
                             "-t", SUPPORT, f"127.0.0.1:{srv.port}"], capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()
    assert srv.count(RawMessage) == 2000
    outcomes = srv.app.pipeline.drain()
    assert len(outcomes) == 2000
    assert srv.count(Ticket) == 2000


def test_ipv6_listener(settings: Settings, make_app: Callable[..., App]) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback (::1)")
    listen = (Listener("::1", 0, False),)
    custom = dataclasses.replace(settings, smtp=dataclasses.replace(settings.smtp, listen=listen))
    app = make_app(custom)
    committer = GroupCommitter(app.inbox)
    committer.start()
    listener = SmtpListener(custom, committer, lambda: None)
    listener.start()
    try:
        with smtplib.SMTP("::1", listener.bound_port(), timeout=30) as client:
            assert client.sendmail("a@customer.example", [SUPPORT], mail()) == {}
        with app.db.transaction() as s:
            assert s.execute(select(RawMessage.peer)).scalar_one() == "::1"
    finally:
        listener.stop(grace=5)
        committer.stop()


class SlowInbox:
    """The real inbox, with a commit that takes a while (to stop the listener during it)."""

    def __init__(self, inner: Any, started: threading.Event) -> None:
        self.inner = inner
        self.started = started

    def accept_many(self, items: Any) -> list[Accepted]:
        self.started.set()
        time.sleep(1.0)
        result: list[Accepted] = self.inner.accept_many(items)
        return result

    def accept_each(self, items: Any) -> list[Accepted | Exception]:  # the committer's entry point
        self.started.set()
        time.sleep(1.0)
        result: list[Accepted | Exception] = self.inner.accept_each(items)
        return result


def test_stop_answers_the_message_in_flight_then_refuses(serve_smtp: Callable[..., Running], app: App) -> None:
    started = threading.Event()
    srv = serve_smtp(app=app, committer=GroupCommitter(SlowInbox(app.inbox, started)))  # type: ignore[arg-type]
    answers: list[object] = []

    def send() -> None:
        client = srv.client()
        try:
            answers.append(client.sendmail("a@customer.example", [SUPPORT], mail()))
        except Exception as exc:  # recorded, asserted below
            answers.append(exc)
        # The QUIT after it may meet the shutdown's 421: that is the listener refusing, as it should.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        client.close()

    sender = threading.Thread(target=send)
    sender.start()
    assert started.wait(10), "the message never reached the inbox"
    srv.listener.stop(grace=10)  # what SIGTERM does
    sender.join(10)
    assert answers == [{}], answers  # the client got its 250
    assert srv.count(RawMessage) == 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


# Issue 10 item 6: long lines are accepted (as Postfix does); only the size limit answers 552.

@pytest.mark.parametrize("length", [5_000, 100_000])
def test_long_line_is_accepted_and_stored_intact(serve_smtp: Callable[..., Running], length: int) -> None:
    srv = serve_smtp()
    # One long 8-bit line (what scripts and webmail send), with a leading dot that must be unstuffed.
    line = ("." + "é" * (length // 2))[:length]
    assert len(line.encode()) >= length > 1000
    sent = mail(subject="Long line", body=line + "\nbye\n", message_id=f"long{length}@customer.example")
    stuffed = sent.replace(b"\r\n.", b"\r\n..")
    replies = data_session(srv.port, stuffed + b".\r\n")
    assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354", "250", "221"], replies
    assert replies[-2].startswith("250 2.0.0 Ok: queued as")
    with srv.app.db.transaction() as s:
        [raw] = s.execute(select(RawMessage.raw)).scalars().all()
    assert raw == sent  # the bytes as received, the long line intact
    [outcome] = srv.app.pipeline.drain()
    assert outcome.decision == "new_ticket"
    with srv.app.db.transaction() as s:
        message = s.execute(select(Message).where(Message.raw_id == outcome.raw_id)).scalar_one()
        assert line in message.text and "bye" in message.text


def test_a_message_that_is_one_100k_line_is_accepted(serve_smtp: Callable[..., Running]) -> None:
    srv = serve_smtp()
    sent = b"Subject: " + b"x" * 100_000 + b"\r\n"  # one single 100,000-octet line, no body
    replies = data_session(srv.port, sent + b".\r\n")
    assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354", "250", "221"], replies
    with srv.app.db.transaction() as s:
        [raw] = s.execute(select(RawMessage.raw)).scalars().all()
    assert raw == sent


def test_line_longer_than_max_message_size_gets_552_not_500(serve_smtp: Callable[..., Running]) -> None:
    srv = serve_smtp(max_message_size=10_000)
    data = b"Subject: long\r\n\r\n" + b"y" * 50_000 + b"\r\n.\r\n"
    good = mail(subject="after", message_id="after@customer.example") + b"\r\n.\r\n"
    replies = raw_session(srv.port, [
        b"EHLO client.example\r\n", b"MAIL FROM:<a@customer.example>\r\n", b"RCPT TO:<support@example.com>\r\n",
        b"DATA\r\n", data,
        # The session is still sane: the next transaction on it goes through.
        b"MAIL FROM:<a@customer.example>\r\n", b"RCPT TO:<support@example.com>\r\n", b"DATA\r\n", good,
        b"QUIT\r\n"])
    assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354", "552", "250", "250", "354", "250",
                                        "221"], replies
    assert replies[5].startswith("552 5.3.4")
    with srv.app.db.transaction() as s:
        [raw] = s.execute(select(RawMessage.raw)).scalars().all()
    assert raw == good[:-3]


def test_endless_line_keeps_memory_bounded_and_gets_552(serve_smtp: Callable[..., Running]) -> None:
    import tracemalloc

    srv = serve_smtp(max_message_size=10_000)
    total = 20 * 1024 * 1024
    chunk = memoryview(b"z" * 65536)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"220")
        for command in (b"HELO client.example\r\n", b"MAIL FROM:<a@customer.example>\r\n",
                        b"RCPT TO:<support@example.com>\r\n", b"DATA\r\n"):
            sock.sendall(command)
            assert stream.readline()[:1] in (b"2", b"3")
        tracemalloc.start()
        try:
            for _ in range(total // len(chunk)):  # one 20 MB line, 2,000 times max_message_size
                sock.sendall(chunk)
            sock.sendall(b"\r\n.\r\n")
            reply = stream.readline()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert reply.startswith(b"552 5.3.4"), reply
        assert peak < 4 * 1024 * 1024, f"{peak} bytes buffered for a {total}-byte line"
        sock.sendall(b"NOOP\r\n")
        assert stream.readline().startswith(b"250")
    assert srv.count(RawMessage) == 0
