"""Build the RFC 5322 bytes of an outbound mail.

Customer text is reduced to one clean line (no CR, LF or other control
characters) before it gets near a header, and non-ASCII header text is
RFC 2047-encoded by ``email.header.Header``. The MIME tree is built with the
standard library's compat32 classes, which are several times faster than
``EmailMessage`` with the SMTP policy; ``_checked`` refuses any value that
still holds a line break, so no header can ever be injected.

Mail written by a person (an agent's reply) may carry Reply-To, Cc and
attachments; with attachments the message is multipart/mixed with the
multipart/alternative text first and each attachment base64-encoded after it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import encoders
from email.header import Header
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr

from mailticket.domain import Address, Attachment
from mailticket.marks import LOOP_HEADER
from mailticket.text import clean_line

MAX_REFERENCES = 20
_UNFOLDED = compat32.clone(max_line_length=0)
_CONTENT_TYPE = re.compile(r"^[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}$")
_MAX_FILENAME_BYTES = 150  # percent-encoded at most 450 characters: the header line stays well under 998


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
    reply_to: Address | None = None,
    cc: Sequence[Address] = (),
    attachments: Sequence[Attachment] = (),
) -> Composed:
    """The message; ValueError when From, To, Reply-To or a Cc address cannot be sent to.

    ``auto_submitted`` "" means a person wrote it: no Auto-Submitted and no X-Auto-Response-Suppress.
    """
    body = MIMEMultipart("alternative")
    body.attach(MIMEText(text, "plain", "utf-8"))
    body.attach(MIMEText(html, "html", "utf-8"))
    if attachments:
        msg = MIMEMultipart("mixed")
        del body["MIME-Version"]  # only the top-level entity carries it
        msg.attach(body)
        for attachment in attachments:
            msg.attach(_attachment_part(attachment))
    else:
        msg = body
    msg["From"] = header_address(sender)
    msg["To"] = header_address(recipient)
    if cc:
        # One address a line: a long Cc list never makes a line longer than SMTP allows.
        msg["Cc"] = _checked(",\n ".join(header_address(a) for a in cc))
    if reply_to is not None:
        msg["Reply-To"] = header_address(reply_to)
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
    # max_line_length=0: the generator never re-folds; values that need folding (Subject, References)
    # come folded by Header.encode(), and a Message-ID is never split from its header name.
    content = msg.as_bytes(policy=_UNFOLDED)
    return Composed(message_id, clean_subject, content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def _is_message_id(value: str) -> bool:
    """Printable ASCII without spaces or brackets: safe to write between < and >."""
    return bool(value) and value.isascii() and value.isprintable() and not any(c in value for c in " <>")


def _attachment_part(attachment: Attachment) -> MIMEBase:
    """One base64 part: validated content type, RFC 2231 filename when not ASCII, Content-ID when inline."""
    content_type = attachment.content_type.strip().lower()
    if not _CONTENT_TYPE.match(content_type) or content_type.startswith(("multipart/", "message/")):
        # multipart/* and message/* may not be base64-encoded (RFC 2046): sent as opaque bytes instead
        content_type = "application/octet-stream"
    maintype, _, subtype = content_type.partition("/")
    filename = _filename(attachment.filename)
    # RFC 2231 (filename*=utf-8''...) when not ASCII; quoted (backslash and quote escaped) when it is
    param: str | tuple[str, str, str] = filename if filename.isascii() else ("utf-8", "", filename)
    part = MIMEBase(maintype, subtype, name=param)
    del part["MIME-Version"]
    part.set_payload(attachment.content)
    encoders.encode_base64(part)
    content_id = attachment.content_id.strip().removeprefix("<").removesuffix(">")
    inline = attachment.inline and _is_message_id(content_id)
    part.add_header("Content-Disposition", "inline" if inline else "attachment", filename=param)
    if inline:
        part["Content-ID"] = f"<{content_id}>"
    for name in ("Content-Type", "Content-Disposition"):
        _checked(str(part[name]))
    return part


def _filename(value: str) -> str:
    """One clean line, no path, short enough for one header line; the extension survives shortening."""
    name = clean_line(value).replace("/", "_").replace("\\", "_").strip(". ") or "attachment"
    if len(name.encode("utf-8")) <= _MAX_FILENAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > 16:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    budget = _MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))
    return stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip() + suffix
