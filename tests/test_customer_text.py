"""Customer text is data: never a template, never a header, never a path."""

from __future__ import annotations

import email
from email import policy

from sqlalchemy import select

from mailticket.app import App
from mailticket.domain import Envelope
from mailticket.ingest.parse import parse, safe_filename
from mailticket.store.models import AttachmentRow, Blob, Message, OutboxRow, Ticket
from tests.conftest import mail


def process(app: App, raw: bytes) -> int:
    accepted = app.inbox.accept(raw, Envelope("pipe"))
    [outcome] = app.pipeline.process([accepted.raw_id])
    assert outcome.ticket_number is not None, outcome.error
    return outcome.ticket_number


def test_template_syntax_in_subject_and_body_is_literal(app: App) -> None:
    number = process(app, mail(subject="{{ 7*7 }} {% for x in range(3) %}x{% endfor %}",
                               body="{{ 7*7 }} and {{ config }}\n", sender="{{ 6*6 }} <t@customer.example>"))
    with app.db.transaction() as s:
        ticket = s.get_one(Ticket, number)
        assert ticket.subject.startswith("{{ 7*7 }}")
        inbound = next(m for m in ticket.messages if m.direction == "in")
        assert "{{ 7*7 }}" in inbound.visible_text
        content = s.execute(select(OutboxRow.content)).scalar_one()
    ack = email.message_from_bytes(content, policy=policy.default)
    assert str(ack["Subject"]) == f"[#{number}] {{{{ 7*7 }}}} {{% for x in range(3) %}}x{{% endfor %}}"
    text = ack.get_body(("plain",)).get_content()
    html = ack.get_body(("html",)).get_content()
    assert "{{ 7*7 }}" in html and "49" not in html
    assert "{{ 7*7 }}" in text and "49" not in text
    assert "{{ 6*6 }}" in text and "36" not in text
    assert "xxx" not in text


def test_html_in_customer_name_is_escaped_in_html_ack(app: App) -> None:
    process(app, mail(sender='"<script>alert(1)</script>" <x@customer.example>', subject="<b>bold</b>"))
    with app.db.transaction() as s:
        content = s.execute(select(OutboxRow.content)).scalar_one()
    html = email.message_from_bytes(content, policy=policy.default).get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>bold</b>" not in html


def test_crlf_in_subject_never_becomes_a_header(app: App) -> None:
    # An encoded word that decodes to CR LF + a header line.
    evil = "=?utf-8?q?Hello=0D=0ABcc:_victim@example.org=0D=0AX-Evil:_1?="
    number = process(app, mail(subject=evil))
    with app.db.transaction() as s:
        assert "\n" not in s.get_one(Ticket, number).subject
        content = s.execute(select(OutboxRow.content)).scalar_one()
    head = content.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line and line[:1] not in b" \t"]
    assert b"bcc" not in names and b"x-evil" not in names
    ack = email.message_from_bytes(content, policy=policy.default)
    assert ack["Bcc"] is None
    assert "Bcc: victim@example.org" in str(ack["Subject"])


def test_attachment_path_traversal_gets_safe_name(app: App) -> None:
    raw = (
        b"From: a@customer.example\r\nTo: support@example.com\r\nSubject: files\r\n"
        b"Message-ID: <files@customer.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="../../etc/passwd"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\ncm9vdDp4OjA6MDo=\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        b"filename*=UTF-8''..%2F..%2F%E2%82%AC%5Cwin.ini\r\n\r\nx\r\n"
        b"--b--\r\n"
    )
    number = process(app, raw)
    with app.db.transaction() as s:
        message = s.execute(select(Message).where(Message.ticket_number == number)).scalars().first()
        assert message is not None
        rows = s.execute(select(AttachmentRow).where(AttachmentRow.message_row_id == message.id)
                         .order_by(AttachmentRow.id)).scalars().all()
        assert [r.filename for r in rows] == ["passwd", "win.ini"]
        assert rows[0].original_filename == "../../etc/passwd"
        blob = s.get_one(Blob, rows[0].sha256)
        assert blob.content == b"root:x:0:0:"
    for row in rows:
        assert "/" not in row.filename and "\\" not in row.filename and not row.filename.startswith(".")


def test_safe_filename_edge_cases() -> None:
    assert safe_filename("..", "fallback.bin") == "fallback.bin"
    assert safe_filename("a\x00b\r\nc.txt", "f") == "abc.txt"
    assert safe_filename("C:\\Users\\x\\evil.exe", "f") == "evil.exe"
    long = safe_filename("x" * 500 + ".pdf", "f")
    assert len(long) <= 200 and long.endswith(".pdf")


def test_rfc2047_and_rfc2231_filenames_and_charsets() -> None:
    raw = (
        b"From: =?iso-8859-1?q?J=F6rg?= <j@customer.example>\r\n"
        b"Subject: =?utf-8?b?w4RyZ2Vy?= =?utf-8?b?IG1pdCDDnA==?=\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
        b"--x\r\nContent-Type: text/plain; charset=ks_c_5601-1987\r\n\r\n\xc7\xd1\xb1\xdb\r\n"
        b'--x\r\nContent-Type: application/pdf; name="=?utf-8?q?R=C3=A9sum=C3=A9.pdf?="\r\n'
        b"Content-Disposition: attachment\r\n\r\n%PDF\r\n--x--\r\n"
    )
    parsed = parse(raw)
    assert parsed.from_ is not None and parsed.from_.name == "Jörg"
    assert parsed.subject == "Ärger mit Ü"
    assert "한글" in parsed.text
    assert [a.filename for a in parsed.attachments] == ["Résumé.pdf"]
    assert parsed.message_id == ""


def test_html_only_mail_gets_text_version() -> None:
    raw = (b"From: h@customer.example\r\nSubject: html\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           b"<html><head><style>p{color:red}</style></head><body><p>Hello <b>there</b></p>"
           b"<script>alert(1)</script><ul><li>one</li><li>two</li></ul></body></html>")
    parsed = parse(raw)
    assert parsed.text_from_html
    assert "Hello there" in parsed.text and "- one" in parsed.text and "- two" in parsed.text
    assert "alert" not in parsed.text and "color" not in parsed.text
