"""Raw RFC 5322 bytes -> ParsedMail. The only importer of mail-parser.

mail-parser builds the MIME tree; when it raises (broken boundaries, deep
nesting) the standard library's compat32 parser is tried. Headers and bodies
are decoded here, defensively, part by part (see decode.py). This function
does not raise on any input, and its cost is linear in the input:

- Header fields longer than MAX_HEADER_BYTES are cut in the bytes handed to
  the parsers (the stored raw message is never changed). The stdlib's
  ``email.header.decode_header``, which mail-parser runs on every header, is
  quadratic in the number of encoded words in one line (it pops the head of
  a list per word): one 200,000-word Subject took 74 s.
- Over MAILPARSER_MAX_BYTES the tree is built by the stdlib compat32 parser
  directly (mail-parser would build the very same tree and then walk and
  decode every part again for results we do not use). Attachments are kept
  whatever the size; raw MIME is never shown as text.
- When the tree cannot be completed (nesting deep enough for a
  RecursionError), the parts read before that point are kept.
- Over MAX_TREE_BYTES no tree is built at all: the text is "" and the whole
  message is offered as an .eml attachment, with a defect saying why.
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
from mailticket.ingest.addresses import parse_addresses, parse_mailbox
from mailticket.ingest.htmltext import html_to_text
from mailticket.rawmail import head_end, strip_leading_blank_lines
from mailticket.text import (
    clean_line,
    decode_bytes,
    decode_header_value,
    first_message_id,
    message_ids,
    parse_date,
    unsurrogate,
)

# Above this the stdlib builds the tree (the same tree mail-parser returns, at half the time).
MAILPARSER_MAX_BYTES = 8 * 1024 * 1024
# Above this no tree is built (memory is a few times the message size); over every default
# intake limit: SMTP 35 MB, IMAP 50 MB, pipe 64 MiB.
MAX_TREE_BYTES = 200 * 1024 * 1024
# One header field (name, value and its folded lines) as handed to the parsers.
MAX_HEADER_BYTES = 16 * 1024
_FEED_CHUNK = 1024 * 1024
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
    original = strip_leading_blank_lines(raw)
    defects: list[str] = []
    if len(original) > MAX_TREE_BYTES:
        defects.append(f"message of {len(original)} bytes is over the {MAX_TREE_BYTES} byte parse limit: "
                       "not parsed, kept whole as an .eml attachment")
        return _unparsed(original, defects)
    capped = cap_headers(original, defects)
    message = _build_tree(capped, defects)
    del capped
    if message is None:
        return _unparsed(original, defects)
    try:
        return _from_tree(message, defects)
    except RecursionError:  # pragma: no cover - _walk is depth-bounded; a last resort
        defects.append("MIME tree too deep to read: kept whole as an .eml attachment")
        return _unparsed(original, defects)


def _build_tree(raw: bytes, defects: list[str]) -> email.message.Message | None:
    if len(raw) <= MAILPARSER_MAX_BYTES:
        try:
            parsed = mailparser.parse_from_bytes(raw)
            message: email.message.Message = parsed.message
            return message
        except Exception as exc:  # mail-parser raises many kinds on broken MIME
            defects.append(f"mail-parser failed ({type(exc).__name__}: {str(exc)[:200]}); used compat32")
    return _compat32_tree(raw, defects)


def _compat32_tree(raw: bytes, defects: list[str]) -> email.message.Message | None:
    """The stdlib tree, fed in chunks (no second whole copy of the message as text).

    When the parser fails part way (a RecursionError on deep nesting), the tree
    built so far is returned: the parts read before that point are kept.
    """
    made: list[email.message.Message] = []

    def factory(policy: email_policy.Policy = email_policy.compat32) -> email.message.Message:
        message = email.message.Message(policy=policy)
        made.append(message)
        return message

    parser = email.parser.BytesFeedParser(_factory=factory, policy=email_policy.compat32)
    made.clear()  # the parser calls the factory once to probe its signature
    try:
        for start in range(0, len(raw), _FEED_CHUNK):
            parser.feed(raw[start:start + _FEED_CHUNK])
        return parser.close()
    except Exception as exc:  # RecursionError on deep nesting, and friends
        if not made:
            defects.append(f"compat32 failed ({type(exc).__name__}): nothing parsed")
            return None
        defects.append(f"compat32 stopped part way ({type(exc).__name__}): the parts read before that point "
                       "are kept, the rest only in the raw message")
        return made[0]


def cap_headers(raw: bytes, defects: list[str]) -> bytes:
    """The message with every header field over MAX_HEADER_BYTES cut to fit, for the parsers.

    Linear in the size of the header block. A cut falls on white space where
    there is some, so no encoded word is split; References keeps its first
    and its last Message-IDs (the parent is the last one). The header block
    ends where the stdlib parser ends it: at the blank line, or at the first
    line that is neither a header nor a continuation.
    """
    end = head_end(raw)  # with the last header's line ending
    if end is None:
        end = len(raw)
    if end <= MAX_HEADER_BYTES:
        return raw
    fields: list[list[int]] = []  # [start, end] offsets: no copy of a field with many folded lines
    position = 0
    for line in raw[:end].splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1][1] += len(line)
        elif _HEADER_START.match(line):
            fields.append([position, position + len(line)])
        else:
            break  # the body starts here for the parser too
        position += len(line)
    if all(end - start <= MAX_HEADER_BYTES for start, end in fields):
        return raw
    out: list[bytes] = []
    for start, end in fields:
        item = raw[start:end]
        if len(item) > MAX_HEADER_BYTES:
            cut = _cut_field(item)
            name = clean_line(item.split(b":", 1)[0][:80].decode("ascii", "replace"))
            defects.append(f"header {name} of {len(item)} bytes cut to {len(cut)} for parsing")
            item = cut
        out.append(item)
    out.append(raw[position:])
    return b"".join(out)


_HEADER_START = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:")  # the stdlib feedparser's own test


def _cut_field(item: bytes) -> bytes:
    stripped = item.rstrip(b"\r\n")
    eol = item[len(stripped):] or b"\r\n"
    budget = MAX_HEADER_BYTES - len(eol)
    name, _, value = stripped.partition(b":")
    if name.strip().lower() == b"references":
        tokens = value.split()
        size = len(name) + 2 + (len(tokens[0]) if tokens else 0)
        if tokens and size <= budget:
            kept: list[bytes] = []
            for token in reversed(tokens[1:]):
                size += len(eol) + 1 + len(token)
                if size > budget:
                    break
                kept.append(token)
            return name + b": " + (eol + b" ").join([tokens[0], *reversed(kept)]) + eol
    head = stripped[:budget]
    space = max(head.rfind(b" "), head.rfind(b"\t"))
    if space > len(name) + 1:
        head = head[:space]
    return head.rstrip(b"\r\n \t") + eol


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
    try:
        _walk(message, 0, walk)
    except RecursionError:  # pragma: no cover - _walk is depth-bounded
        walk.defects.append("MIME tree too deep to walk: the parts read so far are kept")
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

    from_value = raw("from")
    author = parse_mailbox(from_value if from_value is not None else raw("sender"))
    try:
        content_type = message.get_content_type()
    except Exception:
        content_type = "text/plain"
    return ParsedMail(
        message_id=first_message_id(raw("message-id")),
        in_reply_to=message_ids(raw("in-reply-to")),
        references=message_ids(raw("references")),
        subject=clean_line(decode_header_value(raw("subject") or "")),
        from_=author.mailbox,
        from_header=author.raw,
        from_problem=author.problem,
        reply_to=parse_addresses(raw("reply-to")).addresses,
        to=parse_addresses(raw("to")).addresses,
        cc=parse_addresses(raw("cc")).addresses,
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


def _unparsed(raw: bytes, defects: list[str]) -> ParsedMail:
    """No MIME tree: the headers that parse, no text, the whole message as an .eml attachment.

    Never the body as text: that would show raw MIME (base64) as the customer's words.
    """
    end = head_end(raw)
    head = raw[:end] if end is not None else raw[:_FEED_CHUNK]  # never a copy of the body
    try:
        message = email.parser.BytesHeaderParser(policy=email_policy.compat32).parsebytes(
            cap_headers(head + b"\r\n\r\n", defects))
    except Exception as exc:  # pragma: no cover - the header parser is very lenient
        defects.append(f"headers unreadable ({type(exc).__name__})")
        message = email.message.Message()
    eml = Attachment(filename="message.eml", original_filename="", content_type="message/rfc822", content=raw)
    return _assemble(message, _header_pairs(message), "", "", (eml,), (), defects)


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
    payload = part.get_payload()
    if payload is None:  # a part the parser never finished (a tree cut short): nothing to keep
        return
    if part.is_multipart():
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

