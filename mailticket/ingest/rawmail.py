"""Byte-level facts about a raw message, without parsing its MIME tree."""

from __future__ import annotations

import email.parser
import hashlib
import re
from email import policy as email_policy

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


def header_message_id(raw: bytes) -> str:
    """The Message-ID (without brackets), or "" when the message has none."""
    head, _ = split_head(strip_leading_blank_lines(raw))
    try:
        headers = email.parser.BytesHeaderParser(policy=email_policy.compat32).parsebytes(head)
    except Exception:
        return ""
    for name, value in headers.raw_items():
        if str(name).lower() == "message-id":
            return first_message_id(str(value))
    return ""


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
