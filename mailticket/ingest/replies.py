"""The visible text of a reply: what its author wrote, without the quoted original, for customers and agents alike.

Reading order, for mail in general:

1. Our own marker (``mailticket.marks.REPLY_MARKERS``, every template language, '>'-quoted or not): the marker line
   and everything below it are ours, and so is the client's quote header just above it.
2. HTML-only mail is cut where the client marked its quote (``gmail_quote``, ``moz-cite-prefix``, ``type=cite``,
   ``yahoo_quoted``, Outlook's ``divRplyFwdMsg`` / border-top divider ...). A bare ``<blockquote>`` is the
   author's own formatting and stays.
3. Line rules: '>' lines are quoted; a quote header ("On … wrote:", ``Am … schrieb …:``, date-name-address lines,
   over up to three lines) before a '>' block is dropped with it and the text below is kept (interleaved
   answers); a quote header, an Outlook header block (``From:``/``Sent:``, bold, localized) or an
   ``-----Original Message-----`` divider without '>' lines under it ends the author's text.
4. Signature policy: a ``-- `` block and device lines ("Sent from my iPhone") are dropped; closings stay.

The patterns of step 3 and 4 are data: one TOML file per language in ``mailticket/ingest/quotes/``.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib import resources

from mailticket.ingest.htmltext import html_to_text
from mailticket.marks import REPLY_MARKERS

__all__ = ["Visible", "is_device_line", "read_reply", "visible_text"]


@dataclass(frozen=True)
class Visible:
    """What the author wrote; ``quote_only`` when the mail holds nothing but a quote (then ``text`` is empty)."""

    text: str
    quote_only: bool


# --- The language packs ---------------------------------------------------------------------------------------

_FIELD_KINDS = ("from", "sent", "date", "to", "cc", "subject", "reply_to")
_HEADER_MAX = 320  # characters of a (joined) quote-header candidate; longer lines are prose
_WRAP = 3  # a quote header may be wrapped over up to this many lines


def _word(text: str) -> str:
    """A literal word or phrase as a pattern: flexible spaces, word boundaries where the script has them."""
    body = r"\s+".join(re.escape(part) for part in text.split())
    head = r"(?<!\w)" if text[:1].isalpha() and ord(text[0]) < 0x2E80 else ""
    tail = r"(?!\w)" if text[-1:].isalpha() and ord(text[-1]) < 0x2E80 else ""
    return head + body + tail


def _alternation(words: list[str]) -> str:
    """One pattern for many words. The word-start check is hoisted in front of the words that have one, so
    the engine tries them only where a word starts: ten times faster on a long line than one check each."""
    ordered = sorted(set(words), key=len, reverse=True)
    headed = [_word(w)[len(r"(?<!\w)"):] for w in ordered if _word(w).startswith(r"(?<!\w)")]
    others = [_word(w) for w in ordered if not _word(w).startswith(r"(?<!\w)")]
    parts = ([r"(?<!\w)(?:" + "|".join(headed) + ")"] if headed else []) + others
    return "|".join(parts) or r"(?!x)x"


@dataclass(frozen=True)
class _Patterns:
    on: re.Pattern[str]
    verb: re.Pattern[str]
    divider: re.Pattern[str]
    device: re.Pattern[str]
    field: re.Pattern[str]
    field_kind: dict[str, str]


@functools.cache
def _patterns() -> _Patterns:
    on_words: list[str] = []
    verbs: list[str] = []
    dividers: list[str] = []
    devices: list[str] = []
    field_kind: dict[str, str] = {}
    for entry in sorted(resources.files("mailticket.ingest.quotes").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        pack = tomllib.loads(entry.read_text(encoding="utf-8"))
        on_words += pack.get("on_words", [])
        verbs += pack.get("wrote_verbs", [])
        dividers += pack.get("original_message", [])
        devices += pack.get("device_lines", [])
        for kind, names in pack.get("header_fields", {}).items():
            if kind not in _FIELD_KINDS:
                raise ValueError(f"{entry.name}: unknown header field kind {kind!r}")
            for name in names:
                field_kind.setdefault(name.casefold(), kind)
    fields = _alternation(list(field_kind))
    return _Patterns(
        on=re.compile(rf"^(?:{_alternation(on_words)})\s", re.I),
        verb=re.compile(rf"(?:{_alternation(verbs)})", re.I),
        # "-----Original Message-----", "---------- Forwarded message ---------", "Begin forwarded message:"
        divider=re.compile(rf"^[-_=*\s]*(?:{_alternation(dividers)})[-_=*\s]*:?\s*$", re.I),
        device=re.compile("^(?:" + "|".join(f"(?:{d})" for d in devices) + r")[\s.!]*$", re.I),
        # "From: …", "*From:* …", "**Von:**", "De : …", "发件人：…"
        field=re.compile(rf"^\W{{0,3}}({fields})\W{{0,2}}\s*[:：]", re.I),
        field_kind=field_kind,
    )


# --- Lines ----------------------------------------------------------------------------------------------------

_QUOTED = re.compile(r"^[ \t]*>")
_HTML_QUOTE = "\x00quote\x00"  # a line that stands for an HTML quote the client marked
_HTML_DIVIDER = "\x00divider\x00"  # Outlook's border-top div or an <hr>: a quote when a header block follows
_GAP = "\x00gap\x00"  # where a quote was taken out of the kept lines
_UNDERSCORES = re.compile(r"^[ \t]*_{10,}\s*$")
_LINK = re.compile(r"\s*(?:<https?://[^>]*>|\[https?://[^]]*\]|\(https?://[^)]*\))")
_ADDRESS = re.compile(r"[^\s<>@]+@[^\s<>@]+\.\w|\[mailto:|<mailto:")
_DATEISH = re.compile(
    r"\d{1,2}[:.]\d{2}"  # a time
    r"|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"  # a numeric date
    r"|(?<!\d)(?:19|20)\d{2}(?!\d)"  # a year
    r"|\d{1,4}\s?[年月日]"
)
_ENDS_WITH_ADDRESS = re.compile(r"(?:<[^<>\s]+@[^<>\s]+>|[^<>\s]+@[^<>\s]+)\W{0,2}\s*[:：]$")
_COLON_REST = re.compile(r"^[ \t]*>[ \t]*[:：][ \t]*$")  # "<jane@example.com" / ">:" wrapped by the client
_SEPARATOR = re.compile(r"^[ \t]*[-_=*~#+.]{2,}[ \t]*$")
_MARKERS = tuple(" ".join(m.strip("- ").lower().split()) for m in REPLY_MARKERS.values())


def _is_marker(line: str) -> bool:
    """Our "reply above this line" line, in any template language, quoted or not."""
    text = " ".join(line.lstrip("> \t").strip("-#* \t").lower().split())
    return bool(text) and text in _MARKERS


def is_device_line(line: str) -> bool:
    """A mail client's "Sent from my iPhone" line, in any language of the packs."""
    text = _LINK.sub("", line.strip().strip("*_")).strip()
    if re.search(r"[,;!?]", text.rstrip(" .!")):  # "Sent from my desk, is much easier …" is prose
        return False
    return 0 < len(text) <= 120 and bool(_patterns().device.match(text))


def _quoted(line: str) -> bool:
    return line == _HTML_QUOTE or bool(_QUOTED.match(line))


def _header_strength(candidate: str) -> int:
    """2: surely a quote header ("On <date>, <name> wrote:"); 1: one only when a quote follows; 0: not one."""
    text = " ".join(candidate.split()).strip("-_=* ")  # "---- On … wrote ----" (Zoho)
    if not text or len(text) > _HEADER_MAX:
        return 0
    p = _patterns()
    colon = text[-1] in ":："
    opens = bool(p.on.match(text))
    if not colon and not opens:
        return 0  # every header below ends with a colon, or opens with "On"/"Am"/… (its colon lost): prose
    dated = bool(_DATEISH.search(text))
    address = bool(_ADDRESS.search(text))
    if not dated and not address:
        return 0  # every header below names a date or an address (the verb search is the costly one)
    verb = p.verb.search(text)
    if verb is not None:
        at_end = not text[verb.end():].strip(" :：")
        if colon and (dated or address):
            return 2 if opens or address or at_end else 1
        if opens and at_end and dated:  # "On Tue, 20 Mar 2014 at 08:48, Jane wrote" (colon lost)
            return 2
        return 0
    if colon and address and dated:  # "2014-03-20 8:48 GMT+01:00 Jane <jane@example.com>:" (no verb)
        return 2 if _ENDS_WITH_ADDRESS.search(text) else 1
    return 0


def _field(line: str) -> str | None:
    p = _patterns()
    match = p.field.match(line.strip())
    return p.field_kind.get(" ".join(match.group(1).split()).casefold()) if match else None


def _header_block(lines: list[str], i: int) -> bool:
    """An Outlook-style quoted header block starts at line i: From/Sent/To/Subject lines, in any pack language."""
    first = _field(lines[i])
    if first is None:
        return False
    kinds = {first}
    seen = 0
    for line in lines[i + 1:]:
        if seen >= 10:
            break
        if not line.strip():
            continue
        seen += 1
        kind = _field(line)
        if kind is not None:
            kinds.add(kind)
    if "from" not in kinds:
        return False
    return len(kinds) >= 3 or "sent" in kinds


def _divider(lines: list[str], i: int) -> bool:
    """A divider that opens the quoted original: "-----Original Message-----", or Outlook's line of underscores."""
    line = lines[i].strip()
    if line == _HTML_DIVIDER or _UNDERSCORES.match(line):
        following = [j for j in range(i + 1, min(len(lines), i + 6)) if lines[j].strip()][:2]
        return any(_header_block(lines, j) for j in following)
    return len(line) <= 80 and bool(_patterns().divider.match(line))


def _quote_header(lines: list[str], i: int) -> tuple[int, int]:
    """(number of lines, strength) of a quote header starting at line i; (0, 0) when none starts there."""
    if _quoted(lines[i]) or not lines[i].strip():
        return 0, 0
    p = _patterns()
    for size in range(1, _WRAP + 1):
        part = lines[i: i + size]
        if len(part) < size or any(not s.strip() or (_quoted(s) and not _COLON_REST.match(s)) for s in part):
            return 0, 0
        strength = _header_strength(" ".join(part))
        if strength:
            # The header must need its first line: "Thanks!" above "On … wrote:" is the author's.
            for k in range(1, size):
                rest = " ".join(part[k:]).strip()
                if _header_strength(rest) and (
                    p.on.match(rest) or _DATEISH.match(rest) or part[0].rstrip()[-1:] in ".!?"
                ):
                    return 0, 0
            return size, strength
    return 0, 0


def _next_content(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


# --- Reading a text -------------------------------------------------------------------------------------------


@dataclass
class _Reading:
    kept: list[str]
    quoted: bool  # some quote was found
    dropped_own: list[str]  # the author's lines that the signature policy dropped


def _wrapped_quote(lines: list[str], i: int) -> int:
    """Lines from i that are a '>' line's hard-wrapped rest (the client lost their '>'): how many, or 0.

    "> … Nullam pharetra d" / "ignissim odio?" / "> …": a run of one or two lines right between quoted lines,
    the line above long enough to have been wrapped, the run going on mid-sentence.
    """
    if i == 0 or not _QUOTED.match(lines[i - 1]) or len(lines[i - 1].strip()) < 50:
        return 0
    for size in (1, 2):
        if i + size < len(lines) and _QUOTED.match(lines[i + size]):
            run = lines[i: i + size]
            mid_sentence = run[0].lstrip()[:1].islower() or lines[i - 1].rstrip()[-1:] not in ".?!:"
            if all(s.strip() for s in run) and mid_sentence:
                return size
            return 0
    return 0


def _header_above(kept: list[str]) -> None:
    """Drop what belongs to a header block from the end of ``kept``: separators, a "Message du : <date>" line."""
    adjacent = True
    while kept:
        line = kept[-1].strip()
        if not line:
            adjacent = False
        elif not (_SEPARATOR.match(line) or line == _HTML_DIVIDER
                  or (adjacent and len(line) <= 80 and ":" in line and _DATEISH.search(line))):
            return
        kept.pop()


def _footer(lines: list[str], i: int, quoted: bool) -> bool:
    """A mailing list's footer below the quote: a line of underscores and a few short lines to the end."""
    rule = re.match(r"^[ \t]*(_{2,})[ \t]*$", lines[i])
    if rule is None:
        return False
    rest = [s for s in lines[i + 1:] if s.strip()]
    if not rest or len(rest) > 6 or any(_quoted(s) for s in rest):
        return False
    return quoted or (len(rule.group(1)) >= 20 and any("://" in s for s in rest))


def _has_text(lines: list[str]) -> bool:
    return any(s.strip() and not _SEPARATOR.match(s) for s in lines)


def _block_end(lines: list[str], i: int) -> int:
    """Where a divider or header block that starts at line i ends: after its divider and field lines."""
    j = i + 1 if _divider(lines, i) else i
    end = min(len(lines), j + 12)
    while j < end and lines[j].strip():
        j += 1
    return j


def _read_lines(lines: list[str], quote_below: bool) -> _Reading:
    kept: list[str] = []
    dropped: list[str] = []
    quoted = quote_below
    in_signature = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _quoted(line):
            quoted = True
            in_signature = False
            _gap(kept)
            i += 1
            continue
        wrapped = _wrapped_quote(lines, i)
        if wrapped:
            i += wrapped
            continue
        size, strength = _quote_header(lines, i)
        if size:
            after = _next_content(lines, i + size)
            if after < len(lines) and _quoted(lines[after]):
                quoted = True  # the header of a '>' block: drop both, keep what follows the block
                in_signature = False
                _gap(kept)
                i = after
                continue
            if strength == 2 or (after >= len(lines) and quote_below):
                if not _has_text(kept):  # nothing above: a forward, or an answer written below; read on
                    quoted = True
                    i += size
                    continue
                _header_above(kept)
                return _Reading(kept, True, dropped)  # an unquoted original: the rest is not the author's
        if _divider(lines, i) or _header_block(lines, i):
            if not _has_text(kept):
                quoted = True
                i = _block_end(lines, i)
                continue
            _header_above(kept)
            return _Reading(kept, True, dropped)
        if _footer(lines, i, quoted):
            return _Reading(kept, True, dropped)
        if line.strip() == "--":  # "-- " (RFC 3676), its trailing space often lost
            in_signature = True
        if is_device_line(line):
            dropped.append(line)
            if any(s.strip() for s in kept):
                # A client writes its device line below what the author wrote: the rest is the original.
                return _Reading(kept, quoted or any(s.strip() for s in lines[i + 1:]), dropped)
        elif in_signature:
            dropped.append(line)
        elif line != _HTML_DIVIDER:
            kept.append(line.rstrip())
        i += 1
    return _Reading(kept, quoted, dropped)


def _gap(kept: list[str]) -> None:
    """Mark where a quote was taken out, so the blank lines around it become one."""
    if kept and kept[-1] != _GAP:
        kept.append(_GAP)


def _tidy(lines: list[str]) -> str:
    """The kept lines as text: the author's spacing stays, a removed quote leaves one blank line."""
    text = "\n".join(line.rstrip() for line in lines)
    text = re.sub(r"(?:[ \t]*\n)*" + _GAP + r"(?:\n[ \t]*(?=\n))*\n?", "\n\n", text)
    return text.replace(_GAP, "").strip("\n").rstrip()


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _read_text(source: str) -> Visible:
    lines = _lines(source)
    quote_below = False
    for i, line in enumerate(lines):
        if _is_marker(line):
            lines, quote_below = lines[:i], True
            break
    reading = _read_lines(lines, quote_below)
    text = _tidy(reading.kept)
    if text.strip():
        return Visible(text=text.lstrip("\n"), quote_only=False)
    if reading.quoted:
        return Visible(text="", quote_only=True)
    # Nothing but a signature or a device line, and no quote: that is what the author sent.
    return Visible(text=_tidy(lines).strip(), quote_only=False)


# --- HTML -----------------------------------------------------------------------------------------------------

_BLOCK = {
    "p", "div", "br", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6",
    "blockquote", "pre", "hr", "section", "article", "header", "footer", "dd", "dt", "address",
}
_SKIP = {"script", "style", "head", "title", "template", "noscript"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "wbr"}
_OUTLOOK_IDS = {"divrplyfwdmsg", "appendonsend", "stopspelling", "olk_src_body_section"}
_BORDER_TOP = re.compile(r"border-top\s*:\s*solid", re.I)


def _quote_kind(tag: str, attrs: dict[str, str]) -> str:
    """"skip": a quote the client marked (drop the element); "stop": the rest is the quote; "divider"; ""."""
    classes = attrs.get("class", "").lower().split()
    ident = attrs.get("id", "").lower()
    if (tag == "blockquote" and attrs.get("type", "").lower() == "cite") or any(
        c in {"gmail_quote", "yahoo_quoted", "moz-cite-prefix", "gmail_extra_quote"} or c.startswith("yahoo_quoted")
        for c in classes
    ):
        return "skip"
    # Not Exchange's name="messageReplySection": it holds the reply itself as often as the quote.
    if ident in _OUTLOOK_IDS or "outlookmessageheader" in ident:
        return "stop"
    if tag == "div" and _BORDER_TOP.search(attrs.get("style", "")):
        return "divider"
    return ""


class _QuoteCutter(HTMLParser):
    """Text of an HTML body with the marked quotes replaced by a placeholder line each."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        self.quote_tag = ""
        self.quote_depth = 0
        self.stopped = False

    def _mark(self, line: str) -> None:
        self.parts.append(f"\n{line}\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.stopped:
            return
        if self.quote_depth:
            if tag == self.quote_tag and tag not in _VOID:
                self.quote_depth += 1
            return
        attributes = {k.lower(): (v or "") for k, v in attrs}
        kind = _quote_kind(tag, attributes)
        if kind == "stop":
            self._mark(_HTML_QUOTE)
            self.stopped = True
            return
        if kind == "skip" and tag not in _VOID:
            self._mark(_HTML_QUOTE)
            self.quote_tag, self.quote_depth = tag, 1
            return
        if kind == "divider":
            self._mark(_HTML_DIVIDER)
        if tag in _SKIP:
            self.skip_depth += 1
        elif tag == "pre":
            self.pre_depth += 1
        if tag == "hr":
            self._mark(_HTML_DIVIDER)
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if self.stopped:
            return
        if self.quote_depth:
            if tag == self.quote_tag:
                self.quote_depth -= 1
            return
        if tag in _SKIP and self.skip_depth:
            self.skip_depth -= 1
        elif tag == "pre" and self.pre_depth:
            self.pre_depth -= 1
        if tag in _BLOCK and tag not in _VOID:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.stopped or self.skip_depth or self.quote_depth:
            return
        self.parts.append(data if self.pre_depth else re.sub(r"\s+", " ", data))


def _html_text(html: str) -> str:
    """The HTML body as text, each quote the client marked one placeholder line."""
    parser = _QuoteCutter()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):  # pragma: no cover - HTMLParser is lenient
        pass
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [line.strip() if parser.pre_depth == 0 else line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- The API --------------------------------------------------------------------------------------------------


def read_reply(text: str, html: str = "", from_html: bool = False) -> Visible:
    """What the author of a mail wrote (``text``: its text/plain body; ``html``: its HTML body).

    ``from_html``: the mail had no text part (``text`` was made from ``html``), so the HTML is read, where the
    client marks its quote. Never empty for a mail with text of its own; a mail that is only a quote gives an
    empty text with ``quote_only``.
    """
    if (from_html or not text.strip()) and html.strip():
        visible = _read_text(_html_text(html))
        if visible.text or visible.quote_only:
            return visible
        fallback = html_to_text(html)
        if fallback.strip():
            return Visible(text=fallback, quote_only=False)
    return _read_text(text)


def visible_text(text: str, html: str = "", from_html: bool = False) -> str:
    """read_reply(...).text: what the author wrote; "" for a mail that is only a quote."""
    return read_reply(text, html, from_html).text
