"""Raw RFC 5322 bytes -> ParsedMail. The only importer of mail-parser.

mail-parser builds the MIME tree; when it raises (broken boundaries, deep
nesting) the standard library's compat32 parser is tried, and when that fails
too the headers that parse and the raw bytes still make a message. Headers
and bodies are decoded here, defensively, part by part (see decode.py).
This function does not raise on any input.
"""

from __future__ import annotations

import binascii
import email
import email.message
import email.parser
import logging
import mimetypes
import re
import unicodedata
from dataclasses import dataclass, field
from email import policy as email_policy

import mailparser

from mailticket.domain import Attachment, ParsedMail
from mailticket.ingest.decode import (
    addresses,
    clean_line,
    decode_bytes,
    decode_header_value,
    first_message_id,
    message_ids,
    parse_date,
    unsurrogate,
)
from mailticket.ingest.htmltext import html_to_text
from mailticket.ingest.rawmail import split_head, strip_leading_blank_lines

MAX_MESSAGE_BYTES = 25 * 1024 * 1024
MAX_DEPTH = 50
MAX_PARTS = 5_000
MAX_TEXT_CHARS = 2_000_000
MAX_FILENAME_CHARS = 200
_TEXT_TYPES = ("text/plain", "text/html")

# mail-parser logs a warning for every part type it does not handle; we handle them.
logging.getLogger("mailparser").setLevel(logging.ERROR)


@dataclass
class _Walk:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    named_text: list[str] = field(default_factory=list)  # text parts with a file name
    attachments: list[Attachment] = field(default_factory=list)
    report_types: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    parts: int = 0


def parse(raw: bytes) -> ParsedMail:
    """Parse one message. Never raises."""
    raw = strip_leading_blank_lines(raw)
    defects: list[str] = []
    if len(raw) > MAX_MESSAGE_BYTES:
        defects.append(f"message of {len(raw)} bytes is over the {MAX_MESSAGE_BYTES} byte limit: headers only")
        return _headers_only(raw, defects)
    message = _build_tree(raw, defects)
    if message is None:
        return _headers_only(raw, defects)
    try:
        return _from_tree(message, defects)
    except RecursionError:
        defects.append("MIME tree too deep to walk: headers only")
        return _headers_only(raw, defects)


def _build_tree(raw: bytes, defects: list[str]) -> email.message.Message | None:
    try:
        parsed = mailparser.parse_from_bytes(raw)
        message: email.message.Message = parsed.message
        return message
    except Exception as exc:  # mail-parser raises many kinds on broken MIME
        defects.append(f"mail-parser failed ({type(exc).__name__}: {exc}); used compat32")
    try:
        return email.message_from_bytes(raw, policy=email_policy.compat32)
    except Exception as exc:  # RecursionError and friends
        defects.append(f"compat32 failed ({type(exc).__name__}); headers only")
        return None


def _header_pairs(message: email.message.Message) -> tuple[tuple[str, str], ...]:
    pairs = []
    for name, value in message.raw_items():
        key = unsurrogate(str(name))
        pairs.append((key, decode_header_value(str(value))))
    return tuple(pairs)


def _raw_header(message: email.message.Message, name: str) -> str | None:
    for key, value in message.raw_items():
        if str(key).lower() == name:
            return str(value)
    return None


def _from_tree(message: email.message.Message, defects: list[str]) -> ParsedMail:
    walk = _Walk()
    _walk(message, 0, walk)
    defects.extend(walk.defects)
    html = "\n".join(walk.html)[:MAX_TEXT_CHARS]
    from_html = not walk.plain and bool(html)
    if walk.plain:
        text = "\n".join(walk.plain)
    elif html:
        text = html_to_text(html)
    elif walk.named_text:
        text = "\n".join(walk.named_text)
        defects.append("body taken from a named text part")
    else:
        text = ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _assemble(message, _header_pairs(message), text[:MAX_TEXT_CHARS], html,
                     tuple(walk.attachments), tuple(walk.report_types), defects, from_html)


def _assemble(
    message: email.message.Message,
    headers: tuple[tuple[str, str], ...],
    text: str,
    html: str,
    attachments: tuple[Attachment, ...],
    report_types: tuple[str, ...],
    defects: list[str],
    text_from_html: bool = False,
) -> ParsedMail:
    def raw(name: str) -> str | None:
        return _raw_header(message, name)

    from_list = addresses(raw("from")) or addresses(raw("sender"))
    try:
        content_type = message.get_content_type()
    except Exception:
        content_type = "text/plain"
    return ParsedMail(
        message_id=first_message_id(raw("message-id")),
        in_reply_to=message_ids(raw("in-reply-to")),
        references=message_ids(raw("references")),
        subject=clean_line(decode_header_value(raw("subject") or "")),
        from_=from_list[0] if from_list else None,
        reply_to=addresses(raw("reply-to")),
        to=addresses(raw("to")),
        cc=addresses(raw("cc")),
        date=parse_date(raw("date")),
        text=text,
        html=html,
        attachments=attachments,
        headers=headers,
        content_type=content_type,
        text_from_html=text_from_html,
        report_types=report_types,
        defects=tuple(defects),
    )


def _headers_only(raw: bytes, defects: list[str]) -> ParsedMail:
    head, body = split_head(raw)
    try:
        message = email.parser.BytesHeaderParser(policy=email_policy.compat32).parsebytes(head)
    except Exception as exc:  # pragma: no cover - the header parser is very lenient
        defects.append(f"headers unreadable ({type(exc).__name__})")
        message = email.message.Message()
    text = decode_bytes(body[:MAX_TEXT_CHARS])
    return _assemble(message, _header_pairs(message), text, "", (), (), defects)


def _walk(part: email.message.Message, depth: int, walk: _Walk) -> None:
    walk.parts += 1
    if walk.parts > MAX_PARTS:
        if walk.parts == MAX_PARTS + 1:
            walk.defects.append(f"more than {MAX_PARTS} MIME parts: the rest kept only in the raw message")
        return
    if depth > MAX_DEPTH:
        walk.defects.append(f"MIME nesting deeper than {MAX_DEPTH}: inner parts kept only in the raw message")
        return
    ctype = _content_type(part)
    if ctype == "multipart/report":
        walk.report_types.append(str(part.get_param("report-type") or "").lower())
    if ctype.startswith("message/") and part.is_multipart():
        _attach_container(part, ctype, walk)
        return
    if part.is_multipart():
        payload = part.get_payload()
        if isinstance(payload, list):
            for child in payload:
                if isinstance(child, email.message.Message):
                    _walk(child, depth + 1, walk)
        return
    _leaf(part, ctype, walk)


def _content_type(part: email.message.Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"


def _disposition(part: email.message.Message) -> str:
    value = _raw_header(part, "content-disposition") or ""
    return unsurrogate(value).split(";", 1)[0].strip().lower()


def _filename(part: email.message.Message) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if not name:
        return ""
    return clean_line(decode_header_value(unsurrogate(str(name))))


_UU_ENCODINGS = {"x-uuencode", "uuencode", "x-uue", "uue"}


def _uudecode(text: str) -> bytes:
    """uuencoded payload, with or without its begin/end lines."""
    out = bytearray()
    for line in text.splitlines():
        if line.startswith(("begin ", "end")) or not line.strip():
            continue
        try:
            out.extend(binascii.a2b_uu(line.encode("ascii", "replace")))
        except binascii.Error:
            # Lines padded short by broken encoders: decode what the length byte promises.
            nbytes = ((ord(line[0]) - 32) & 63) * 4 // 3
            try:
                out.extend(binascii.a2b_uu(line[: nbytes + 1].encode("ascii", "replace")))
            except binascii.Error:
                continue
    return bytes(out)


def _payload_bytes(part: email.message.Message, walk: _Walk) -> bytes:
    encoding = unsurrogate(_raw_header(part, "content-transfer-encoding") or "").strip().lower()
    payload = part.get_payload()
    if encoding in _UU_ENCODINGS and isinstance(payload, str):
        return _uudecode(payload)
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        walk.defects.append(f"undecodable part payload ({type(exc).__name__}): kept as wire text")
        data = None
    if isinstance(data, bytes):
        return data
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""


def _leaf(part: email.message.Message, ctype: str, walk: _Walk) -> None:
    disposition = _disposition(part)
    filename = _filename(part)
    data = _payload_bytes(part, walk)
    if ctype in _TEXT_TYPES and disposition != "attachment":
        try:
            charset = part.get_content_charset()
        except Exception:
            charset = None
        text = decode_bytes(data, charset)
        if not filename:
            (walk.plain if ctype == "text/plain" else walk.html).append(text)
            return
        if ctype == "text/plain":
            walk.named_text.append(text)
    content_id = clean_line(unsurrogate(_raw_header(part, "content-id") or "")).strip("<>")
    _add_attachment(walk, filename, ctype, data, disposition == "inline", content_id, _description(part))


def _attach_container(part: email.message.Message, ctype: str, walk: _Walk) -> None:
    """message/rfc822, message/delivery-status...: kept whole as an attachment."""
    payload = part.get_payload()
    chunks: list[bytes] = []
    inners = [p for p in payload if isinstance(p, email.message.Message)] if isinstance(payload, list) else []
    for inner in inners:
        try:
            # max_line_length=0: keep the headers' own folding, do not re-fold them.
            chunks.append(inner.as_bytes(policy=email_policy.compat32.clone(max_line_length=0)))
        except Exception:
            try:
                chunks.append(inner.as_string().encode("utf-8", "surrogateescape"))
            except Exception as exc:
                walk.defects.append(f"{ctype} part could not be serialized ({type(exc).__name__})")
    data = b"".join(chunks)  # each block already ends with its blank line
    filename = _filename(part)
    if not filename and ctype == "message/rfc822" and inners:
        subject = clean_line(decode_header_value(str(_raw_header(inners[0], "subject") or "")))
        filename = f"{subject[:80] or 'message'}.eml"
    _add_attachment(walk, filename, ctype, data, False, "", _description(part))


def _description(part: email.message.Message) -> str:
    """Content-Description ("Delivery report"): names a part that has no file name."""
    return clean_line(decode_header_value(unsurrogate(_raw_header(part, "content-description") or "")))


def _add_attachment(walk: _Walk, filename: str, ctype: str, data: bytes, inline: bool, content_id: str,
                    description: str = "") -> None:
    index = len(walk.attachments) + 1
    if ctype == "message/rfc822":
        extension = ".eml"
    elif ctype.startswith("message/") or ctype.startswith("text/"):
        extension = mimetypes.guess_extension(ctype) or ".txt"
    else:
        extension = mimetypes.guess_extension(ctype) or ".bin"
    fallback = f"attachment-{index}{extension}"
    if description:
        fallback = safe_filename(f"{description[:80]}{extension}", fallback)
    walk.attachments.append(
        Attachment(
            filename=safe_filename(filename, fallback),
            original_filename=filename,
            content_type=ctype,
            content=data,
            inline=inline,
            content_id=content_id,
        )
    )


_UNSAFE_CHARS = re.compile(r'[<>:"|?*\x00-\x1f\x7f]')


def safe_filename(name: str, fallback: str) -> str:
    """A file name that can never become a path: no separators, no dots-only, bounded."""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    name = _UNSAFE_CHARS.sub("_", name).strip().lstrip(".").strip()
    if not name:
        return fallback
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name

