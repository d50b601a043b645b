"""Signed reply tokens (mailticket.marks) and what agent mail needs from compose (Reply-To, Cc, attachments)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import re
from email.message import EmailMessage

import pytest

from mailticket.domain import Address, Attachment
from mailticket.marks import ReplyToken, ReplyTokenSigner
from mailticket.outbox.compose import compose

SECRET = b"this install's secret, 32 bytes!"
AGENT = "alice@agents.example.com"
ISSUED = dt.datetime(2025, 3, 14, 15, 9, 26, tzinfo=dt.UTC)
MAILBOX = "support@example.com"


@pytest.fixture
def signer() -> ReplyTokenSigner:
    return ReplyTokenSigner(lambda: SECRET)


# --- tokens ----------------------------------------------------------------------------------------------------


def test_round_trip(signer: ReplyTokenSigner) -> None:
    token = signer.make(1234, AGENT, ISSUED)
    assert re.fullmatch(r"[a-z0-9.]+", token)
    assert token.startswith("r.")
    assert signer.read(token) == ReplyToken(1234, ReplyTokenSigner.agent_key(AGENT), ISSUED, None)
    assert signer.bound_to(signer.read(token) or pytest.fail(), 1234, AGENT)


def test_issued_is_utc_second_precision(signer: ReplyTokenSigner) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    issued = dt.datetime(2025, 3, 14, 17, 9, 26, 999_999, tzinfo=plus_two)
    read = signer.read(signer.make(7, AGENT, issued))
    assert read is not None
    assert read.issued == ISSUED and read.issued.utcoffset() == dt.timedelta(0)
    with pytest.raises(ValueError):
        signer.make(7, AGENT, dt.datetime(2025, 3, 14, 15, 9, 26))  # naive


def test_held_round_trip(signer: ReplyTokenSigner) -> None:
    token = signer.make(99, AGENT, ISSUED, held=123_456)
    read = signer.read(token)
    assert read is not None
    assert (read.ticket, read.held, read.issued) == (99, 123_456, ISSUED)
    assert signer.read(signer.make(99, AGENT, ISSUED, held=0)) == ReplyToken(
        99, ReplyTokenSigner.agent_key(AGENT), ISSUED, 0
    )


def test_every_tampered_character_fails(signer: ReplyTokenSigner) -> None:
    for token in (signer.make(1234, AGENT, ISSUED), signer.make(1234, AGENT, ISSUED, held=77)):
        for i, ch in enumerate(token):
            for other in {"0", "1", "a", "h", ".", "z"} - {ch}:
                forged = token[:i] + other + token[i + 1 :]
                assert signer.read(forged) is None, forged
        assert signer.read(token[:-1]) is None
        assert signer.read(token + "0") is None
        assert signer.read(token.replace(".", "", 1)) is None


def test_held_cannot_be_added_or_dropped(signer: ReplyTokenSigner) -> None:
    plain = signer.make(5, AGENT, ISSUED)
    held = signer.make(5, AGENT, ISSUED, held=8)
    body, mac = plain.rsplit(".", 1)
    assert signer.read(f"{body}.h8.{mac}") is None
    assert signer.read(held.replace(".h8", "")) is None


def test_another_install_fails(signer: ReplyTokenSigner) -> None:
    theirs = ReplyTokenSigner(lambda: b"some other secret, not ours!").make(1234, AGENT, ISSUED)
    assert signer.read(theirs) is None


def test_message_id_mac_is_not_a_token_mac(signer: ReplyTokenSigner) -> None:
    body = "r.ya.00000000.1"
    wrong_prefix = hmac.new(SECRET, f"message-id:{body}".encode(), hashlib.sha256).hexdigest()[:20]
    unprefixed = hmac.new(SECRET, body.encode(), hashlib.sha256).hexdigest()[:20]
    assert signer.read(f"{body}.{wrong_prefix}") is None
    assert signer.read(f"{body}.{unprefixed}") is None


def test_bound_to(signer: ReplyTokenSigner) -> None:
    read = signer.read(signer.make(1234, AGENT, ISSUED))
    assert read is not None
    assert signer.bound_to(read, 1234, AGENT)
    assert signer.bound_to(read, 1234, AGENT.upper())  # addresses compare case-insensitively
    assert not signer.bound_to(read, 1235, AGENT)
    assert not signer.bound_to(read, 1234, "bob@agents.example.com")


def test_upper_cased_token_reads(signer: ReplyTokenSigner) -> None:
    token = signer.make(1234, AGENT, ISSUED, held=42)
    assert signer.read(token.upper()) == signer.read(token)


def test_malformed(signer: ReplyTokenSigner) -> None:
    for junk in ("", "r.", "billing", "r.1.2.3.4", "r.01.00000000.1." + "0" * 20, "x" * 500, "r.1-2.3+4"):
        assert signer.read(junk) is None


def test_key_is_read_lazily_once() -> None:
    calls: list[int] = []

    def key() -> bytes:
        calls.append(1)
        return SECRET

    lazy = ReplyTokenSigner(key)
    assert calls == []
    token = lazy.make(1, AGENT, ISSUED)
    assert lazy.read(token) is not None and lazy.read("r.junk") is None
    assert calls == [1]


def test_length_bound(signer: ReplyTokenSigner) -> None:
    late = dt.datetime(2400, 1, 1, tzinfo=dt.UTC)
    big = 36**6 - 1  # the largest ticket number and held id a token carries (2.1 billion)
    plain = signer.make(big, AGENT, late)
    held = signer.make(big, AGENT, late, held=big)
    assert len(plain) <= 48
    assert len(signer.make(9_999_999, AGENT, ISSUED, held=99_999_999)) <= 52
    assert len(held) <= 56
    for token in (plain, held):
        local = ReplyTokenSigner.address(MAILBOX, token).partition("@")[0]
        assert len(local) < 64
        assert re.fullmatch(r"[a-z0-9.]+", token) and "+" not in token and "-" not in token
    with pytest.raises(ValueError):
        signer.make(big + 1, AGENT, ISSUED)
    with pytest.raises(ValueError):
        signer.make(1, AGENT, ISSUED, held=-1)


def test_address() -> None:
    assert ReplyTokenSigner.address(MAILBOX, "r.1.2") == "support+r.1.2@example.com"
    with pytest.raises(ValueError):
        ReplyTokenSigner.address("support", "r.1.2")
    with pytest.raises(ValueError):
        ReplyTokenSigner.address(MAILBOX, "r.1\r\nBcc: x@y")


def test_find(signer: ReplyTokenSigner) -> None:
    token = signer.make(1234, AGENT, ISSUED)
    recipients = [
        "someone@else.example.org",
        "support+billing@example.com",  # an ordinary plus address, not a token
        f"support+{token}@other.example.net",  # not one of our mailboxes
        "SUPPORT+" + token.upper() + "@Example.COM",
        f"help+{token}@example.com",
    ]
    found = signer.find(["Support@Example.com", "help@example.com"], recipients)
    assert found is not None
    ext, read = found
    assert ext == token
    assert read == signer.read(token)


def test_find_forged_and_absent(signer: ReplyTokenSigner) -> None:
    token = signer.make(1234, AGENT, ISSUED)
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert signer.find([MAILBOX], ["support+billing@example.com", f"support+{forged}@example.com"]) == (forged, None)
    assert signer.find([MAILBOX], ["support+billing@example.com", "support@example.com", "x@y"]) is None
    assert signer.find([MAILBOX], []) is None
    assert signer.find([], [f"support+{token}@example.com"]) is None


# --- compose ---------------------------------------------------------------------------------------------------

SENDER = Address("Support", "support@example.com")
CUSTOMER = Address("Ćustomer Ñame", "customer@example.org")
NOW = dt.datetime(2025, 3, 14, 15, 9, 26, tzinfo=dt.UTC)
PNG = bytes(range(256)) * 40 + b"\r\n\n\r\x00end"


def _compose(**extra: object) -> bytes:
    args: dict[str, object] = {
        "sender": SENDER,
        "recipient": CUSTOMER,
        "subject": "Re: your order",
        "text": "Hello,\nhere you go.",
        "html": "<p>Hello, here you go.</p>",
        "message_id": "mt.1.abc@example.com",
        "loop_token": "loop",
        "now": NOW,
    }
    args.update(extra)
    return compose(**args).content  # type: ignore[arg-type]


def _parse(content: bytes) -> EmailMessage:
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_reply_to_and_cc() -> None:
    cc = [Address("Bob Ünicode", "bob@example.net"), Address("", "carol@example.net"), Address("D", "d@example.net")]
    msg = _parse(_compose(reply_to=Address("Support", "support+r.1.abc@example.com"), cc=cc))
    assert msg["Reply-To"].addresses[0].addr_spec == "support+r.1.abc@example.com"
    assert msg["Reply-To"].addresses[0].display_name == "Support"
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["bob@example.net", "carol@example.net", "d@example.net"]
    assert msg["Cc"].addresses[0].display_name == "Bob Ünicode"
    assert msg.get_content_type() == "multipart/alternative"


def test_no_cc_or_reply_to_by_default() -> None:
    raw = _compose()
    msg = _parse(raw)
    assert "Cc" not in msg and "Reply-To" not in msg
    assert msg["Auto-Submitted"] == "auto-replied"


def test_auto_submitted_empty_means_a_person_wrote_it() -> None:
    msg = _parse(_compose(auto_submitted=""))
    assert "Auto-Submitted" not in msg
    assert "X-Auto-Response-Suppress" not in msg


def test_long_cc_list_keeps_lines_short() -> None:
    cc = [Address(f"Person {i} with a rather long display name", f"person{i}@example.net") for i in range(60)]
    raw = _compose(cc=cc)
    assert max(len(line) for line in raw.split(b"\r\n")) < 998
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert len(_parse(raw)["Cc"].addresses) == 60


def test_attachments_structure_and_bytes() -> None:
    attachments = [
        Attachment("photo.png", "photo.png", "image/png", PNG),
        Attachment("résumé «final».pdf", "résumé «final».pdf", "application/pdf", b"%PDF-1.4\x00\xff"),
        Attachment("logo.gif", "logo.gif", "image/gif", b"GIF89a\x01", inline=True, content_id="<logo@example.com>"),
        Attachment("notes.bin", "notes.bin", "text/plain; charset=utf-8\r\nBcc: x@y", b"abc"),
        Attachment("fwd.eml", "fwd.eml", "message/rfc822", b"Subject: hi\r\n\r\nbody"),
    ]
    raw = _compose(attachments=attachments, auto_submitted="")
    assert max(len(line) for line in raw.split(b"\r\n")) < 998
    assert b"Bcc" not in raw
    msg = _parse(raw)
    assert msg.get_content_type() == "multipart/mixed"
    parts = list(msg.iter_parts())
    assert len(parts) == 1 + len(attachments)
    alternative = parts[0]
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    text_part = alternative.get_body(preferencelist=("plain",))
    assert text_part is not None and "here you go" in text_part.get_content()

    photo, pdf, logo, notes, fwd = parts[1:]
    for part, attachment in zip(parts[1:], attachments, strict=True):
        assert part["Content-Transfer-Encoding"] == "base64"
        assert part.get_payload(decode=True) == attachment.content
        assert part.get_filename() == attachment.filename
        assert not part.defects
    assert photo.get_content_type() == "image/png"
    assert photo.get_content_disposition() == "attachment" and "Content-ID" not in photo
    assert pdf.get_content_type() == "application/pdf"
    assert b"filename*=utf-8''r%C3%A9sum%C3%A9%20%C2%ABfinal%C2%BB.pdf" in raw
    assert logo.get_content_disposition() == "inline"
    assert logo["Content-ID"] == "<logo@example.com>"
    assert notes.get_content_type() == "application/octet-stream"  # not a valid type/subtype
    assert fwd.get_content_type() == "application/octet-stream"  # message/* may not be base64
    assert not msg.defects
    assert "Auto-Submitted" not in msg


def test_non_ascii_filename_is_rfc2231() -> None:
    name = "Übersicht 報告.xlsx"
    raw = _compose(attachments=[Attachment(name, name, "application/vnd.ms-excel", b"data")])
    assert raw.isascii()
    assert b"filename*=utf-8''%C3%9Cbersicht%20%E5%A0%B1%E5%91%8A.xlsx" in raw
    part = list(_parse(raw).iter_parts())[1]
    assert part.get_filename() == name


def test_ascii_filename_with_quotes() -> None:
    name = 'my "quoted" file\\name.txt'
    part = list(_parse(_compose(attachments=[Attachment(name, name, "text/plain", b"x")])).iter_parts())[1]
    assert part.get_filename() == 'my "quoted" file_name.txt'  # backslash would be a path separator


def test_long_filename_is_shortened_keeping_extension() -> None:
    name = "ä" * 400 + ".pdf"
    raw = _compose(attachments=[Attachment(name, name, "application/pdf", b"x")])
    assert max(len(line) for line in raw.split(b"\r\n")) < 998
    filename = list(_parse(raw).iter_parts())[1].get_filename()
    assert filename is not None and filename.endswith(".pdf") and filename.startswith("ää")


def test_inline_without_content_id_is_an_attachment() -> None:
    attachment = Attachment("a.png", "a.png", "image/png", b"x", inline=True, content_id="")
    part = list(_parse(_compose(attachments=[attachment])).iter_parts())[1]
    assert part.get_content_disposition() == "attachment" and "Content-ID" not in part


@pytest.mark.parametrize("field", ["reply_to", "cc", "recipient"])
def test_header_injection_in_names_refused_or_neutralised(field: str) -> None:
    evil = Address("Eve\r\nBcc: victim@example.net", "eve@example.net")
    value: object = [evil] if field == "cc" else evil
    raw = _compose(**{field: value})
    assert b"\r\nBcc:" not in raw
    assert "Bcc" not in _parse(raw)


@pytest.mark.parametrize("field", ["reply_to", "cc"])
def test_undeliverable_addresses_raise(field: str) -> None:
    for bad in ("eve@example.net\r\nBcc: victim@example.net", "no-at-sign", "a,b@example.net", "ü@example.net"):
        value: object = [Address("", bad)] if field == "cc" else Address("", bad)
        with pytest.raises(ValueError):
            _compose(**{field: value})
