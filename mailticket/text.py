"""Defensive decoding and cleaning of header values and body bytes (shared by every stage).

Real mail lies about charsets, splits multi-byte characters across encoded
words and carries raw 8-bit bytes in headers. Everything here returns text
and never raises on bad input.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import datetime as dt
import email.utils
import re

MAX_HEADER_CHARS = 16 * 1024

# Labels seen in the wild mapped to the codec that actually decodes the text.
_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "gb_2312-80": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "iso-2022-jp": "iso2022_jp_2",
    "us-ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "unicode-1-1-utf-7": "utf-7",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "tis-620": "cp874",
}
# When the primary codec fails, some labels have a usual suspect.
_SECOND_GUESSES = {"iso2022_jp_2": ("cp932", "euc-jp"), "ascii": ()}
_FALLBACKS = ("utf-8", "cp1252", "latin-1")


def codec_for(label: str | None) -> str | None:
    """The Python codec for a charset label, or None when unknown."""
    if not label:
        return None
    name = label.strip().strip('"').strip("'").lower()
    name = name.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en
    name = _ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_bytes(data: bytes, label: str | None = None) -> str:
    """Bytes to text: declared charset, then UTF-8, cp1252, latin-1 (never fails).

    NUL characters are dropped: they mean nothing in text and PostgreSQL refuses them.
    """
    codec = codec_for(label)
    candidates: list[str] = []
    if codec:
        candidates.append(codec)
        candidates.extend(_SECOND_GUESSES.get(codec, ()))
    candidates.extend(_FALLBACKS)
    for candidate in candidates:
        try:
            return data.decode(candidate).replace("\x00", "")
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1").replace("\x00", "")  # pragma: no cover - latin-1 decodes everything


def unsurrogate(value: str) -> str:
    """Text read with surrogateescape (raw 8-bit header bytes) back to real text."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return decode_bytes(value.encode("utf-8", "surrogateescape"))


_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,80})\?([bBqQ])\?([^?\s]*)\?=")
_UNFOLD = re.compile(r"\r?\n(?=[ \t])")


def _decode_word_bytes(encoding: str, text: str) -> bytes:
    if encoding in "bB":
        cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text)
        cleaned += "=" * (-len(cleaned) % 4)
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            return text.encode("ascii", "replace")
    raw = text.replace("_", " ").encode("ascii", "surrogateescape")
    return re.sub(rb"=([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)


def decode_header_value(value: str) -> str:
    """Unfold, repair 8-bit bytes and decode RFC 2047 words; joined words share bytes."""
    value = unsurrogate(_UNFOLD.sub("", value[:MAX_HEADER_CHARS]))
    if "=?" not in value:
        return value
    out: list[str] = []
    pending_charset: str | None = None
    pending: bytearray = bytearray()
    position = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(decode_bytes(bytes(pending), pending_charset))
            pending.clear()
            pending_charset = None

    for match in _ENCODED_WORD.finditer(value):
        between = value[position:match.start()]
        if between and not (pending_charset is not None and between.isspace()):
            flush()
            out.append(between)
        charset = match.group(1)
        if pending_charset is not None and charset.lower() != pending_charset.lower():
            flush()
        pending_charset = charset
        pending.extend(_decode_word_bytes(match.group(2), match.group(3)))
        position = match.end()
    flush()
    out.append(value[position:])
    return "".join(out)


def clean_line(value: str) -> str:
    """One line of display text: control characters (CR, LF, NUL, ...) become spaces."""
    return re.sub(r"\s+", " ", "".join(ch if ch.isprintable() else " " for ch in value)).strip()


_MSGID = re.compile(r"<([^<>\s]{1,900})>")


def message_ids(value: str | None, limit: int = 100) -> tuple[str, ...]:
    """Message-IDs in a header value, without angle brackets, last ``limit`` kept."""
    if not value:
        return ()
    value = unsurrogate(value[: 64 * 1024]).replace("\x00", "")
    found = _MSGID.findall(value)
    if not found:
        found = [token.strip("<>") for token in value.split() if "@" in token]
    return tuple(found[-limit:])


def first_message_id(value: str | None) -> str:
    ids = message_ids(value, limit=1_000)
    if ids:
        return ids[0]
    return clean_line(unsurrogate(value or ""))[:900]


def parse_date(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(unsurrogate(value).strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return None
