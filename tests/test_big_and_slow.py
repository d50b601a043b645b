"""Big and slow messages: a long header never stalls the batch, a parse over its budget is
quarantined with the reason, large attachments arrive whole and raw MIME is never shown as text.

No timings are asserted here (they belong in benchmarks/headers.py); what is asserted is what
happened to each message.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import os
import smtplib
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Select, select

from mailticket.app import App
from mailticket.domain import Direction, Envelope, ParsedMail, RawState
from mailticket.errors import BudgetExceeded
from mailticket.ingest import parse as parse_module
from mailticket.ingest.budget import run_with_budget
from mailticket.ingest.parse import MAX_HEADER_BYTES, parse
from mailticket.ingest.pipeline import Pipeline
from mailticket.settings import Settings
from mailticket.store.models import AttachmentRow, Blob, Message, RawMessage, Ticket
from mailticket.text import MAX_HEADER_CHARS
from tests.conftest import count, ingest, mail
from tests.test_smtp import Running, serve_smtp

__all__ = ["serve_smtp"]  # the live-listener fixture, shared with test_smtp

SUPPORT = "support@example.com"
WORD = "=?utf-8?q?w=C3=A4rd?="


def long_header_mail(header: str = "Subject", words: int = 200_000) -> bytes:
    value = " ".join([WORD] * words)
    if header == "Subject":
        return mail(subject=value)
    return mail(subject="A long header", headers={header: value})


def attachment_mail(content: bytes, text: str = "Please see the attached file.") -> bytes:
    encoded = base64.encodebytes(content).replace(b"\n", b"\r\n")
    head = (
        "From: Alice Customer <alice@customer.example>\r\n"
        f"To: {SUPPORT}\r\n"
        "Subject: The file you asked for\r\n"
        "Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{hashlib.sha256(content).hexdigest()[:24]}@customer.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{text}\r\n"
        "--b1\r\n"
        "Content-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="data.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
    ).encode()
    return head + encoded + b"--b1--\r\n"


def deep_mail(levels: int) -> bytes:
    """A text part and a PDF, then multipart nesting ``levels`` deep."""
    out = [
        b"From: Alice Customer <alice@customer.example>\r\nTo: support@example.com\r\nSubject: Deep\r\n"
        b"Message-ID: <deep-%d@customer.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" % levels,
        b"--b0\r\nContent-Type: text/plain\r\n\r\nThe text before the nesting.\r\n",
        b"--b0\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n",
    ]
    for level in range(1, levels):
        out.append(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (level - 1, level))
    out.append(b"--b%d\r\nContent-Type: text/plain\r\n\r\ninnermost\r\n" % (levels - 1))
    out += [b"--b%d--\r\n" % level for level in reversed(range(levels))]
    return b"".join(out)


def incoming(ticket_number: int | None) -> Select[Message]:
    return select(Message).where(Message.ticket_number == ticket_number, Message.direction == Direction.IN)


def looks_like_base64(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return any(len(line) >= 60 and set(line) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
               for line in lines)


# -- (a) one long header among ordinary mail ----------------------------------------------


@pytest.mark.parametrize("header", ["Subject", "To", "Cc", "X-Long"])
def test_a_long_header_is_cut_for_parsing_with_a_defect(header: str) -> None:
    raw = long_header_mail(header)
    parsed = parse(raw)
    [defect] = [d for d in parsed.defects if "cut to" in d]
    assert defect.startswith(f"header {header} of ") and defect.endswith(" for parsing")
    assert parsed.text == "Hello, my printer is on fire.\n"
    assert parsed.from_ is not None and parsed.from_.email == "alice@customer.example"
    if header == "Subject":
        assert parsed.subject.startswith("wärdwärd") and len(parsed.subject) <= MAX_HEADER_CHARS
    else:
        assert parsed.subject == "A long header"
    assert all(len(value) <= MAX_HEADER_CHARS for _, value in parsed.headers)


def test_references_cut_keeps_the_first_and_the_last_ids() -> None:
    ids = [f"<id{n}@example.com>" for n in range(5_000)]
    parsed = parse(mail(headers={"References": " ".join(ids), "In-Reply-To": ids[-1]}))
    assert any(d.startswith("header References of ") for d in parsed.defects)
    assert parsed.references[-1] == "id4999@example.com"
    assert parsed.in_reply_to == ("id4999@example.com",)


def test_short_headers_leave_the_bytes_alone() -> None:
    raw = mail(headers={"X-Long": "x" * (MAX_HEADER_BYTES - 100)})
    defects: list[str] = []
    assert parse_module.cap_headers(raw, defects) is raw and defects == []


def test_a_200000_word_header_among_20_mails_all_are_ticketed(app: App) -> None:
    slow = long_header_mail("Subject")
    normal = [mail(subject=f"Ordinary question {n}") for n in range(20)]
    batch = [*normal[:10], slow, *normal[10:]]
    raw_ids = [app.inbox.accept(raw, Envelope("pipe")).raw_id for raw in batch]
    outcomes = {o.raw_id: o for o in app.pipeline.drain()}
    assert len(outcomes) == 21
    assert all(outcomes[i].decision == "new_ticket" for i in raw_ids), [o.error for o in outcomes.values()]
    slow_id = raw_ids[10]
    with app.db.transaction() as s:
        row = s.get_one(RawMessage, slow_id)
        assert row.raw == slow  # the stored raw message is never changed
        ticket = s.get_one(Ticket, outcomes[slow_id].ticket_number)
        assert ticket.subject.startswith("wärdwärd") and len(ticket.subject) <= MAX_HEADER_CHARS
        subjects = set(s.execute(select(Ticket.subject)).scalars())
    assert {f"Ordinary question {n}" for n in range(20)} <= subjects


# -- (b) the processing budget --------------------------------------------------------------


def test_budget_returns_the_value_and_passes_errors_through() -> None:
    assert run_with_budget(lambda: 42, 5) == 42
    assert run_with_budget(lambda: None, None) is None
    with pytest.raises(ZeroDivisionError):
        run_with_budget(lambda: 1 // 0, 5)


def test_budget_stops_work_that_runs_over() -> None:
    stopped = threading.Event()

    def spin() -> None:
        deadline = time.monotonic() + 60  # never reached when the budget works
        try:
            while time.monotonic() < deadline:
                pass
        except Exception:  # an `except Exception` in the work cannot swallow the stop
            pytest.fail("the interrupt was caught as an Exception")
        finally:
            stopped.set()

    with pytest.raises(BudgetExceeded) as caught:
        run_with_budget(spin, 0.05, grace=30)
    assert str(caught.value) == "processing took longer than 0.05 s (ingest.budget)"
    assert stopped.is_set()  # the work was stopped, not abandoned
    assert not [t for t in threading.enumerate() if t.name == "mailticket-budget"]


@pytest.fixture
def slow_pipeline(app: App) -> Pipeline:
    """The app's pipeline, with a parse that spins on one marked message and a tiny budget."""

    def slow_parse(raw: bytes) -> ParsedMail:
        if b"X-Test-Slow: yes" in raw:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                pass
        return parse(raw)

    return Pipeline(app.db, app.settings, app.clock, app.rules, app.signer, app.tokens,
                    parse_fn=slow_parse, parse_budget=0.2)


def test_a_parse_over_budget_is_quarantined_and_the_batch_goes_on(app: App, slow_pipeline: Pipeline) -> None:
    batch = [mail(subject=f"Question {n}") for n in range(5)]
    batch.insert(2, mail(subject="Slow one", headers={"X-Test-Slow": "yes"}))
    raw_ids = [app.inbox.accept(raw, Envelope("pipe")).raw_id for raw in batch]
    outcomes = {o.raw_id: o for o in slow_pipeline.process(raw_ids)}
    slow = outcomes[raw_ids[2]]
    assert slow.decision == "quarantined"
    assert slow.error is not None
    assert slow.error.startswith("BudgetExceeded: processing took longer than 0.2 s (ingest.budget)")
    assert "abandoned" not in slow.error
    assert [outcomes[i].decision for i in raw_ids if i != raw_ids[2]] == ["new_ticket"] * 5
    with app.db.transaction() as s:
        row = s.get_one(RawMessage, raw_ids[2])
        assert row.state == RawState.QUARANTINED and row.error == slow.error
    assert count(app, Ticket) == 5
    # Replayed with the real parse it becomes a ticket: nothing was lost.
    replayed = app.pipeline.replay(raw_ids[2])
    assert replayed is not None and replayed.decision == "new_ticket"


# -- (c) a 20 MiB attachment over SMTP ------------------------------------------------------


def test_a_20_mib_attachment_over_smtp_is_stored_and_downloadable(
        settings: Settings, serve_smtp: Callable[..., Running]) -> None:
    assert settings.smtp.max_message_size == 35 * 1024 * 1024  # the default
    running = serve_smtp()  # a live listener on a free port, with the default size limit
    app, port = running.app, running.port
    content = os.urandom(20 * 1024 * 1024)
    raw = attachment_mail(content)
    assert len(raw) > 25 * 1024 * 1024  # what the old 25 MB default refused with 552
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        client.ehlo()
        code, _ = client.mail("alice@customer.example", [f"SIZE={len(raw)}"])
        assert code == 250
        assert client.rcpt(SUPPORT)[0] == 250
        code, reply = client.data(raw)
        assert code == 250, reply
    [outcome] = app.pipeline.drain()
    assert outcome.decision == "new_ticket", outcome.error
    sha = hashlib.sha256(content).hexdigest()
    with app.db.transaction() as s:
        message = s.execute(select(Message).where(Message.raw_id == outcome.raw_id)).scalar_one()
        assert message.text.strip() == "Please see the attached file."
        [attachment] = message.attachments
        assert (attachment.filename, attachment.size, attachment.sha256) == ("data.bin", len(content), sha)
        blob = s.get_one(Blob, sha)
        assert blob.size == len(content)
        assert hashlib.sha256(blob.content).hexdigest() == sha


# -- (d) over the parse limits ---------------------------------------------------------------


def test_over_the_mailparser_limit_the_attachment_is_kept(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    content = os.urandom(200_000)
    raw = attachment_mail(content)
    monkeypatch.setattr(parse_module, "MAILPARSER_MAX_BYTES", 10_000)
    assert len(raw) > parse_module.MAILPARSER_MAX_BYTES
    number, decision = ingest(app, raw)
    assert decision == "new_ticket"
    with app.db.transaction() as s:
        message = s.execute(incoming(number)).scalar_one()
        assert message.text.strip() == "Please see the attached file."
        assert not looks_like_base64(message.text) and not looks_like_base64(message.visible_text)
        [attachment] = message.attachments
        assert attachment.sha256 == hashlib.sha256(content).hexdigest()


def test_over_the_tree_limit_no_raw_mime_is_text_and_the_message_is_an_eml(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    content = os.urandom(200_000)
    raw = attachment_mail(content)
    monkeypatch.setattr(parse_module, "MAX_TREE_BYTES", 100_000)
    parsed = parse(raw)
    assert parsed.text == "" and any("parse limit" in d for d in parsed.defects)
    [eml] = parsed.attachments
    assert (eml.filename, eml.content_type, eml.content) == ("message.eml", "message/rfc822", raw)
    assert parsed.subject == "The file you asked for"
    number, decision = ingest(app, raw)
    assert decision == "new_ticket"
    with app.db.transaction() as s:
        message = s.execute(incoming(number)).scalar_one()
        assert message.text == "" and not looks_like_base64(message.visible_text)
        assert [a.sha256 for a in message.attachments] == [hashlib.sha256(raw).hexdigest()]
    assert count(app, AttachmentRow) == 1


# -- (e) deep nesting ---------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [60, 2_000])
def test_deep_nesting_keeps_the_text_and_attachments_found_so_far(app: App, levels: int) -> None:
    # Garbage left by earlier tests, collected by a GC pass that happens to run at the bottom of the
    # stdlib parser's recursion, has no stack left for its finalizers: pytest then fails this test on the
    # "exception ignored" it cannot even format. Collect it first; the parse itself is what is tested.
    gc.collect()
    raw = deep_mail(levels)
    parsed = parse(raw)
    assert parsed.text.strip() == "The text before the nesting."
    assert [a.filename for a in parsed.attachments] == ["a.pdf"]
    number, decision = ingest(app, raw)  # parsed in the budget's worker thread
    assert decision == "new_ticket"
    with app.db.transaction() as s:
        message = s.execute(incoming(number)).scalar_one()
        assert message.text.strip() == "The text before the nesting."
        assert "--b0" not in message.text and "Content-Type" not in message.text
        assert [a.filename for a in message.attachments] == ["a.pdf"]
