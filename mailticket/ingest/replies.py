"""The visible text of a reply: what the author wrote, without the quoted original."""

from __future__ import annotations

import re

from mailticket.ingest.htmltext import html_to_text
from mailticket.marks import REPLY_MARKERS

# A line that starts the quoted original in top-posted replies.
_QUOTE_HEADERS = [
    re.compile(r"^-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|"
               r"mensaje original|messaggio originale|oorspronkelijk bericht|"
               r"forwarded message|weitergeleitete nachricht)\s*-{2,}\s*$", re.I),
    re.compile(r"^_{20,}\s*$"),
    re.compile(r"^(on|am|le|el|op|il|em|den|på)\s.{1,300}\s(wrote|schrieb|a écrit|escribió|"
               r"schreef|ha scritto|escreveu|skrev)\s?:\s*$", re.I),
    # "John <john@example.com> wrote:" / "2024-01-02 10:00 GMT+1 Jane:" - needs an @ or a digit
    re.compile(r"^(?=.*[@\d]).{1,300}\s(wrote|schrieb|a écrit|escribió|schreef|skrev)\s?:\s*$", re.I),
]
_OUTLOOK_FROM = re.compile(r"^\*?(from|von|de|da|van|från|fra)\s?:\*?\s", re.I)
_OUTLOOK_NEXT = re.compile(r"^\*?(sent|date|gesendet|datum|envoyé|enviado|inviato|verzonden|skickat|"
                           r"to|an|à|para|a|aan|till|til|subject|betreff|objet|asunto|oggetto|onderwerp|"
                           r"ämne|emne)\s?:\*?", re.I)
_SIGNATURE = re.compile(r"^-- ?$")


_MARKERS = tuple(m.strip("- ").lower() for m in REPLY_MARKERS.values())


def _is_marker(line: str) -> bool:
    """Our "reply above this line" line, in any template language, quoted or not."""
    text = line.lstrip("> \t").strip("-# *").strip().lower()
    return bool(text) and any(text == marker for marker in _MARKERS)


def _cut_index(lines: list[str]) -> int:
    for i, line in enumerate(lines):
        if _is_marker(line):
            # The client's quote header ("On ... wrote:") usually sits just above the quoted marker.
            j = i
            while j > 0 and not lines[j - 1].strip():
                j -= 1
            if j > 0 and _quote_header(lines, j - 1):
                return j - 1
            return i
        stripped = line.strip()
        joined = stripped + " " + lines[i + 1].strip() if i + 1 < len(lines) else stripped
        if any(p.match(stripped) for p in _QUOTE_HEADERS):
            return i
        # "On Mon, 1 Jan ... <a@b>" wrapped onto two lines, then "wrote:"
        if i + 1 < len(lines) and not stripped.startswith(">") and any(
            p.match(joined) for p in _QUOTE_HEADERS[2:3]
        ):
            return i
        if _OUTLOOK_FROM.match(stripped):
            following = [s.strip() for s in lines[i + 1: i + 5]]
            if sum(bool(_OUTLOOK_NEXT.match(s)) for s in following) >= 2:
                return i
        if _SIGNATURE.match(line):
            return i
    return len(lines)


def _quote_header(lines: list[str], i: int) -> bool:
    stripped = lines[i].strip()
    return any(p.match(stripped) for p in _QUOTE_HEADERS) or (
        i > 0 and any(p.match(lines[i - 1].strip() + " " + stripped) for p in _QUOTE_HEADERS[2:3]))


def visible_text(text: str, html: str = "", from_html: bool = False) -> str:
    """What the author wrote: quoted original, signature and '>' lines removed.

    For HTML-only mail the quote is cut where the mail client marked it.
    Falls back to the whole text when stripping would leave nothing, so a
    message never shows empty because of a heuristic.
    """
    source = html_to_text(html, stop_at_quote=True) if from_html and html else text
    if not source.strip():
        source = text
    lines = source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = lines[: _cut_index(lines)]
    kept = [line.rstrip() for line in lines if not line.lstrip().startswith(">")]
    result = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    return result or source.strip()
