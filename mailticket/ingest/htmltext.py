"""A text version of an HTML body, for HTML-only mail. Never executes or trusts it."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK = {
    "p", "div", "br", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6",
    "blockquote", "pre", "hr", "section", "article", "header", "footer", "dd", "dt", "address",
}
_SKIP = {"script", "style", "head", "title", "template", "noscript"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "wbr"}


def _is_quote_start(tag: str, attrs: dict[str, str]) -> bool:
    """Where mail clients start the quoted original of a reply."""
    klass = attrs.get("class", "")
    ident = attrs.get("id", "")
    return (
        (tag == "blockquote" and attrs.get("type", "").lower() == "cite")
        or "gmail_quote" in klass
        or "yahoo_quoted" in klass
        or "moz-cite-prefix" in klass
        or attrs.get("name", "") == "messageReplySection"
        or ident in {"divRplyFwdMsg", "appendonsend", "stopSpelling", "OLK_SRC_BODY_SECTION"}
        or "OutlookMessageHeader" in ident
    )


class _TextExtractor(HTMLParser):
    def __init__(self, stop_at_quote: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.stop_at_quote = stop_at_quote
        self.parts: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        self.stopped = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.stopped:
            return
        attributes = {k.lower(): (v or "") for k, v in attrs}
        if self.stop_at_quote and _is_quote_start(tag, attributes):
            self.stopped = True
            return
        if tag in _SKIP and tag not in _VOID:
            self.skip_depth += 1
        elif tag == "pre":
            self.pre_depth += 1
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if self.stopped:
            return
        if tag in _SKIP and self.skip_depth:
            self.skip_depth -= 1
        elif tag == "pre" and self.pre_depth:
            self.pre_depth -= 1
        if tag in _BLOCK and tag not in _VOID:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.stopped or self.skip_depth:
            return
        if self.pre_depth:
            self.parts.append(data)
        else:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str, stop_at_quote: bool = False) -> str:
    parser = _TextExtractor(stop_at_quote)
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):  # pragma: no cover - HTMLParser is lenient
        pass
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
