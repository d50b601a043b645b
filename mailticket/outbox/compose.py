"""Build the RFC 5322 bytes of an outbound mail.

Customer text is reduced to one clean line (no CR, LF or other control
characters) before it gets near a header, and non-ASCII header text is
RFC 2047-encoded by ``email.header.Header``. The MIME tree is built with the
standard library's compat32 classes, which are several times faster than
``EmailMessage`` with the SMTP policy; ``_checked`` refuses any value that
still holds a line break, so no header can ever be injected.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr

from mailticket.domain import Address
from mailticket.marks import LOOP_HEADER
from mailticket.text import clean_line

MAX_REFERENCES = 20
_UNFOLDED = compat32.clone(max_line_length=0)


@dataclass(frozen=True)
class Composed:
    message_id: str  # without brackets
    subject: str
    content: bytes


def header_address(address: Address) -> str:
    """A header address, display name encoded; ValueError when the addr-spec cannot be sent to."""
    local, _, domain = address.email.partition("@")
    if not local or not domain or any(ch in address.email for ch in " \t\r\n<>,;\"()"):
        raise ValueError(f"not a deliverable address: {address.email!r}")
    if not address.email.isascii():  # would need SMTPUTF8; RFC 2047 cannot encode an addr-spec
        raise ValueError(f"not deliverable without SMTPUTF8: {address.email!r}")
    return _checked(formataddr((clean_line(address.name)[:200], address.email), charset="utf-8"))


def _text_header(value: str) -> str:
    """Unstructured header text: folded, RFC 2047-encoded when not ASCII."""
    value = clean_line(value)
    if value.isascii():
        return _checked(Header(value, "us-ascii", header_name="Subject").encode())
    return _checked(Header(value, "utf-8", header_name="Subject").encode())


def _checked(value: str) -> str:
    """A header value may only contain folding whitespace after CRLF; never a new header line."""
    unfolded = value.replace("\r\n ", " ").replace("\n ", " ")
    if "\r" in unfolded or "\n" in unfolded:
        raise ValueError(f"refusing a header value with a line break: {value!r}")
    return value


def compose(
    *,
    sender: Address,
    recipient: Address,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    loop_token: str,
    now: dt.datetime,
    in_reply_to: str = "",
    references: tuple[str, ...] = (),
    auto_submitted: str = "auto-replied",
) -> Composed:
    msg = MIMEMultipart("alternative")
    msg["From"] = header_address(sender)
    msg["To"] = header_address(recipient)
    clean_subject = clean_line(subject)[:900]
    msg["Subject"] = _text_header(clean_subject)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        refs = [r for r in [*references, in_reply_to][-MAX_REFERENCES:] if _is_message_id(r)]
        if _is_message_id(in_reply_to):
            msg["In-Reply-To"] = f"<{in_reply_to}>"
        if refs:
            msg["References"] = Header(" ".join(f"<{r}>" for r in dict.fromkeys(refs))).encode()
    if auto_submitted:
        msg["Auto-Submitted"] = auto_submitted
        msg["X-Auto-Response-Suppress"] = "All"
    msg[LOOP_HEADER] = _text_header(loop_token)
    msg.attach(MIMEText(text, "plain", "utf-8"))
    msg.attach(MIMEText(html, "html", "utf-8"))
    # max_line_length=0: the generator never re-folds; values that need folding (Subject, References)
    # come folded by Header.encode(), and a Message-ID is never split from its header name.
    content = msg.as_bytes(policy=_UNFOLDED)
    return Composed(message_id, clean_subject, content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def _is_message_id(value: str) -> bool:
    """Printable ASCII without spaces or brackets: safe to write between < and >."""
    return bool(value) and value.isascii() and value.isprintable() and not any(c in value for c in " <>")
