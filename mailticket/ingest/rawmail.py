"""Byte-level facts about a raw message, without parsing its MIME tree."""

from __future__ import annotations

import hashlib
import re

from mailticket.ingest.decode import first_message_id

MAX_DEDUPE_KEY = 1000


def strip_leading_blank_lines(raw: bytes) -> bytes:
    """Some files start with an empty line before the headers; a parser then sees none."""
    stripped = raw.lstrip(b"\r\n\t ")
    return stripped if stripped else raw


def split_head(raw: bytes) -> tuple[bytes, bytes]:
    """(header block, body) split at the first empty line."""
    match = re.search(rb"\r?\n\r?\n", raw)
    if not match:
        return raw, b""
    return raw[: match.start()], raw[match.end():]


_MESSAGE_ID_HEADER = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)


def header_message_id(raw: bytes) -> str:
    """The Message-ID (without brackets), or "" when the message has none.

    A scan of the header block, not a parse: intake runs this for every message
    before the commit, so it must be cheap and must not fail.
    """
    head, _ = split_head(strip_leading_blank_lines(raw))
    match = _MESSAGE_ID_HEADER.search(head)
    if match is None:
        return ""
    return first_message_id(match.group(1).decode("ascii", "surrogateescape"))


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def dedupe_key(message_id: str, sha256: str) -> str:
    """Message-ID when there is one, else the content hash."""
    if not message_id:
        return f"sha256:{sha256}"
    key = f"mid:{message_id}"
    if len(key) > MAX_DEDUPE_KEY:
        key = "mid-sha256:" + hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
    return key
