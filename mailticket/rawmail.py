"""Byte-level facts about a raw message, without parsing its MIME tree."""

from __future__ import annotations

import hashlib
import re

from mailticket.text import first_message_id


def strip_leading_blank_lines(raw: bytes) -> bytes:
    """Some files start with an empty line before the headers; a parser then sees none."""
    stripped = raw.lstrip(b"\r\n\t ")
    return stripped if stripped else raw


_BLANK_LINE = re.compile(rb"(\r?\n)\r?\n")  # the line end of the last header, then the empty line


def split_head(raw: bytes) -> tuple[bytes, bytes]:
    """(header block, body) split at the first empty line."""
    match = _BLANK_LINE.search(raw)
    if not match:
        return raw, b""
    return raw[: match.start()], raw[match.end():]


def head_end(raw: bytes) -> int | None:
    """Where the header block ends, its last line end included; None when no empty line follows it."""
    match = _BLANK_LINE.search(raw)
    return match.end(1) if match else None


_MESSAGE_ID_HEADER = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)


def header_message_id(raw: bytes) -> str:
    """The Message-ID (without brackets, without NUL), or "" when the message has none.

    A scan of the header block, not a parse: intake runs this for every message
    before the commit, so it must be cheap and must not fail.
    """
    head, _ = split_head(strip_leading_blank_lines(raw))
    return _message_id_in(head)


def _message_id_in(head: bytes) -> str:
    match = _MESSAGE_ID_HEADER.search(head)
    if match is None:
        return ""
    return first_message_id(match.group(1).decode("ascii", "surrogateescape")).replace("\x00", "")


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


# Headers that the path a message took adds or changes: the same mail delivered twice (SMTP and IMAP,
# two support addresses, a retry through another relay) differs only in these.
TRACE_HEADERS = frozenset({
    "received", "x-received", "return-path", "delivered-to", "x-delivered-to", "x-original-to",
    "envelope-to", "x-envelope-to", "x-envelope-from", "x-original-recipient", "authentication-results",
    "x-authentication-results", "received-spf", "x-greylist", "x-sieve", "x-uid", "x-keywords", "status",
    "x-status", "content-length", "lines", "dkim-filter",
})
TRACE_PREFIXES = ("arc-", "x-spam", "x-rspamd", "x-virus", "x-amavis", "x-ms-exchange-organization-",
                  "x-forefront-", "x-microsoft-antispam", "x-mailticket-intake")
_HEADER_LINE = re.compile(rb"\r?\n(?![ \t])")


def _is_trace(line: bytes) -> bool:
    name = line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
    return name in TRACE_HEADERS or name.startswith(TRACE_PREFIXES)


def identify(raw: bytes) -> tuple[str, str]:
    """(Message-ID, content digest) from one split of the message: what intake dedupes on.

    The digest is the sha256 of the message as its author sent it: trace headers removed,
    line ends normalized. Two deliveries of one mail give the same digest; two different
    mails that share a Message-ID (web forms send every mail as <webform@...>) do not.
    """
    head, body = split_head(strip_leading_blank_lines(raw))
    return _message_id_in(head), _content_digest(head, body)


def _content_digest(head: bytes, body: bytes) -> str:
    digest = hashlib.sha256()
    for line in _HEADER_LINE.split(head):
        if line.strip() and not _is_trace(line):
            digest.update(line.replace(b"\r\n", b"\n").rstrip() + b"\n")
    digest.update(b"\n")
    digest.update(body.replace(b"\r\n", b"\n").rstrip(b"\r\n\t "))
    return digest.hexdigest()


def dedupe_key(message_id: str, content: str) -> str:
    """Message-ID *and* content: a redelivery is a duplicate, a reused Message-ID is not."""
    if not message_id:
        return f"c:{content}"
    mid = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"m:{mid}:c:{content}"
