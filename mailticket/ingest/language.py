"""Which language a mail is written in: the Content-Language header, else a stop-word count.

Only the languages every template exists in (``settings.LANGUAGES``) are ever answered; ``None``
means "cannot tell", and the caller keeps its default (the queue's language).
"""

from __future__ import annotations

import re

from mailticket.settings import LANGUAGES

SAMPLE_CHARS = 2000  # enough text to count function words in; quoted history further down is not the mail
MIN_HITS = 3  # fewer stop words than this in the leading language: too little text to tell
MARGIN = 2.0  # the leading language needs this many times the hits of the runner-up

# Short, frequent function words that are rare in the other language; words both languages use
# ("die", "was", "will", "an", "also", "in", "so") are left out.
STOP_WORDS: dict[str, frozenset[str]] = {
    "de": frozenset(
        {
            "der", "das", "und", "ist", "nicht", "ich", "sie", "wir", "ein", "eine", "einen", "einem", "einer",
            "mit", "auf", "für", "von", "zu", "den", "dem", "des", "sich", "auch", "bitte", "nach", "bei", "noch",
            "wie", "aber", "oder", "wenn", "dass", "ihr", "ihre", "ihnen", "uns", "mir", "mich", "haben", "habe",
            "hat", "wird", "werden", "kann", "können", "sind", "war", "vielen", "dank", "danke", "leider", "schon",
            "nur", "über", "unser", "unsere", "keine", "kein",
        }
    ),
    "en": frozenset(
        {
            "the", "and", "is", "are", "not", "you", "we", "it", "of", "to", "for", "with", "on", "at", "this",
            "that", "have", "has", "be", "can", "could", "would", "please", "thanks", "thank", "my", "your", "our",
            "from", "they", "there", "what", "which", "when", "if", "or", "but", "just", "been", "were", "do",
            "does", "did", "no", "any",
        }
    ),
}

_WORD = re.compile(r"[^\W\d_]+")


def _from_header(content_language: str | None) -> str | None:
    if not content_language:
        return None
    first = content_language.split(",")[0].strip()
    primary = first.split("-")[0].split("_")[0].strip().lower()
    return primary if primary in LANGUAGES else None


def _from_text(text: str) -> str | None:
    words = _WORD.findall(text[:SAMPLE_CHARS].lower())
    hits = {language: sum(1 for w in words if w in stop) for language, stop in STOP_WORDS.items()
            if language in LANGUAGES}
    if not hits:
        return None
    ranked = sorted(hits.items(), key=lambda item: item[1], reverse=True)
    best, best_hits = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0
    if best_hits < MIN_HITS or best_hits < MARGIN * runner_up:
        return None
    return best


def guess_language(content_language: str | None, text: str) -> str | None:
    """"de"/"en" from the first tag of a Content-Language value ("de-DE" is "de"), when it names one
    of ``LANGUAGES``; else from German vs English function words in the first ~2,000 characters of
    ``text``, when one language clearly leads; else None."""
    return _from_header(content_language) or _from_text(text)
