"""Strict RFC 5322 address parsing: the one parser for From, Sender, Reply-To, To and Cc.

``email.utils.getaddresses`` on Python 3.11.7 (no ``strict`` flag, CVE-2023-27043)
guesses an address out of broken input: ``alice@example.org)<bob@example.com>``
becomes Alice. Here a hand-written tokenizer and recursive-descent parser read
the header in one linear pass and refuse anything that leaves a character
unexplained. A refused element yields no address, never a guess.

Grammar (RFC 5322 section 3.4 with the obsolete forms of section 4.4)::

    address-list = [element] *("," [element])         ; empty elements allowed
    element      = mailbox / group
    group        = phrase ":" [mailbox *("," [mailbox])] ";"
    mailbox      = name-addr / addr-spec
    name-addr    = [phrase] "<" [obs-route] addr-spec ">"
    addr-spec    = word *("." word) "@" (atom *("." atom) / domain-literal)
    phrase       = word *(word / ".")                 ; obs-phrase: "John Q. Public"

CFWS (spaces, nested comments) may stand between any two tokens. Decisions:

* RFC 2047 encoded words are decoded only in a display name (also inside a
  quoted string, as real mailers write them). An encoded word inside an
  addr-spec is refused. A Q-encoded word whose text contains ``@`` is not a
  phrase word (RFC 2047 section 5), so ``=?utf-8?q?a@b?= <c@d>`` is refused too.
* An obsolete route ``<@relay:a@b>`` is accepted; the route is checked, then dropped.
* ``j@x (John Doe)``: with no display name, comments give the name.
* The whole address is lower-cased (the project compares addresses that way);
  non-ASCII local parts and IDN domains (RFC 6532) are kept as Unicode, not
  converted to punycode.
* From/Sender: :func:`parse_mailbox` sets ``problem`` unless the header holds
  exactly one mailbox. Several valid mailboxes (allowed by RFC 5322 in From)
  stay in ``addresses`` for display, but :attr:`AddressField.mailbox` is None:
  nobody is answered on a guess of which author is the requester.
* A group's missing final ``;`` at the end of the header is tolerated
  (``undisclosed-recipients:``); groups are refused in From/Sender.
* A header over 16 KiB is not parsed at all (truncating could cut an address
  into a different, valid one).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from mailticket.domain import Address
from mailticket.text import MAX_HEADER_CHARS, clean_line, decode_header_value, unsurrogate

__all__ = ["MAX_HEADER_CHARS", "AddressField", "parse_addresses", "parse_mailbox"]

RAW_DISPLAY_CHARS = 998  # one header line's worth of display text
MAX_ADDRESS_CHARS = 512  # RFC 5321 allows 64 + 1 + 255; leave room for long VERP/SRS local parts
_PROBLEM_CHARS = 400
_SNIPPET_CHARS = 80
_SHOWN_PROBLEMS = 3


@dataclass(frozen=True)
class AddressField:
    """One parsed address header."""

    addresses: tuple[Address, ...]  # the mailboxes that parsed strictly
    problem: str = ""  # "" when the whole header parsed strictly; else a one-line reason
    raw: str = ""  # the header value unfolded and decoded, for display only

    @property
    def mailbox(self) -> Address | None:
        """The one address to answer: None unless the header parsed strictly with exactly one mailbox."""
        if self.problem or len(self.addresses) != 1:
            return None
        return self.addresses[0]


def parse_addresses(value: str | None, *, limit: int = 200) -> AddressField:
    """To, Cc, Reply-To, Bcc: a list of mailboxes and groups.

    Elements that parse are kept; broken ones are named in ``problem``. At most
    ``limit`` addresses are kept.
    """
    text, raw, problem = _prepare(value)
    if problem:
        return AddressField((), problem, raw)
    if not text:
        return AddressField((), "", raw)
    parser = _Parser(text, allow_groups=True)
    found = parser.address_list()
    problems: list[str] = []
    if parser.broken:
        total = len(found) + len(parser.broken)
        noun = "address" if total == 1 else "addresses"
        problems.append(f"{len(parser.broken)} of {total} {noun} did not parse: {_describe(parser.broken)}")
    if len(found) > limit:
        problems.append(f"more than {limit} addresses; only the first {limit} kept")
        found = found[:limit]
    return AddressField(tuple(found), _bounded("; ".join(problems)), raw)


def parse_mailbox(value: str | None) -> AddressField:
    """From, Sender: exactly one mailbox expected.

    Any broken element means no address at all. Several valid mailboxes are
    kept but flagged, so :attr:`AddressField.mailbox` is None.
    """
    text, raw, problem = _prepare(value)
    if problem:
        return AddressField((), problem, raw)
    if not text:
        return AddressField((), "no address in the header", raw)
    parser = _Parser(text, allow_groups=False)
    found = parser.address_list()
    if parser.broken:
        return AddressField((), _bounded(_describe(parser.broken)), raw)
    if not found:
        return AddressField((), "no address in the header", raw)
    if len(found) > 1:
        shown = found[:50]
        return AddressField(tuple(shown), f"{len(found)} mailboxes where exactly one is expected", raw)
    return AddressField((found[0],), "", raw)


# -- preparing the value ------------------------------------------------------------------

_FOLD = re.compile(r"\r\n(?=[ \t])|\r(?=[ \t])|\n(?=[ \t])")


def _prepare(value: str | None) -> tuple[str, str, str]:
    """(text to parse, display text, problem) for a raw header value."""
    if not value:
        return "", "", ""
    raw = clean_line(decode_header_value(value))
    if len(raw) > RAW_DISPLAY_CHARS:
        raw = raw[: RAW_DISPLAY_CHARS - 1] + "…"
    if len(value) > MAX_HEADER_CHARS:
        return "", raw, f"header is {len(value)} characters long, over the {MAX_HEADER_CHARS} limit; not parsed"
    text = unsurrogate(_FOLD.sub("", value)).strip(" \t\r\n")
    return text, raw, ""


def _bounded(problem: str) -> str:
    problem = clean_line(problem)
    return problem if len(problem) <= _PROBLEM_CHARS else problem[: _PROBLEM_CHARS - 1] + "…"


def _describe(broken: list[tuple[str, str]]) -> str:
    parts = [f'{reason} in "{snippet}"' for reason, snippet in broken[:_SHOWN_PROBLEMS]]
    if len(broken) > _SHOWN_PROBLEMS:
        parts.append(f"and {len(broken) - _SHOWN_PROBLEMS} more")
    return "; ".join(parts)


# -- tokens ---------------------------------------------------------------------------------

_ATOM, _QUOTED, _LITERAL, _SPECIAL, _COMMENT, _ERROR = range(6)
_SPECIALS = frozenset("<>@,;:.")
_NOT_ATEXT = frozenset('()<>[]:;@\\,." \t')
_LDH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_LITERAL_CHARS = frozenset("0123456789abcdefABCDEF.:IPvV")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: int
    text: str  # atom text, unescaped quoted/comment content, the special character, or an error reason
    start: int
    end: int
    space: bool  # whitespace or a comment stands before it


def _is_control(ch: str) -> bool:
    if ch == "\t":
        return False
    if ch < " " or ch == "\x7f":
        return True
    return ch >= "\x80" and unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def _control(ch: str) -> str:
    return f"control character U+{ord(ch):04X}"


def _tokenize(text: str) -> list[_Token]:
    """One left-to-right pass; every character ends up in exactly one token."""
    tokens: list[_Token] = []
    i, n, space = 0, len(text), False
    while i < n:
        ch = text[i]
        start = i
        if ch in " \t":
            i += 1
            space = True
            continue
        if ch == "(":
            kind, value, i = _read_comment(text, i)
        elif ch == '"':
            kind, value, i = _read_quoted(text, i)
        elif ch == "[":
            kind, value, i = _read_literal(text, i)
        elif ch in _SPECIALS:
            kind, value, i = _SPECIAL, ch, i + 1
        elif ch in ")]\\":
            kind, value, i = _ERROR, f"stray '{ch}'", i + 1
        elif _is_control(ch):
            kind, value, i = _ERROR, _control(ch), i + 1
        else:
            while i < n and text[i] not in _NOT_ATEXT and not _is_control(text[i]):
                i += 1
            kind, value = _ATOM, text[start:i]
        tokens.append(_Token(kind, value, start, i, space))
        space = kind == _COMMENT
    return tokens


def _read_quoted(text: str, i: int) -> tuple[int, str, int]:
    out: list[str] = []
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return _QUOTED, "".join(out), i + 1
        if ch == "\\" and i + 1 < len(text):
            i += 1
            ch = text[i]
        if _is_control(ch):
            return _ERROR, _control(ch) + " in a quoted string", i + 1
        out.append(ch)
        i += 1
    return _ERROR, "unterminated quoted string", i


def _read_comment(text: str, i: int) -> tuple[int, str, int]:
    out: list[str] = []
    depth = 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
            if depth > 1:
                out.append(ch)
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return _COMMENT, "".join(out), i + 1
            out.append(ch)
        else:
            if ch == "\\" and i + 1 < len(text):
                i += 1
                ch = text[i]
            if _is_control(ch):
                return _ERROR, _control(ch) + " in a comment", i + 1
            out.append(ch)
        i += 1
    return _ERROR, "unterminated comment", i


def _read_literal(text: str, i: int) -> tuple[int, str, int]:
    end = i + 1
    while end < len(text) and text[end] in _LITERAL_CHARS:
        end += 1
    if end < len(text) and text[end] == "]" and end > i + 1:
        return _LITERAL, text[i : end + 1], end + 1
    return _ERROR, "malformed domain literal [...]", end


# -- parser ---------------------------------------------------------------------------------


class _Broken(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _what(tok: _Token) -> str:
    if tok.kind == _ERROR:
        return tok.text
    if tok.kind == _QUOTED:
        return "a quoted string"
    if tok.kind == _LITERAL:
        return "a domain literal"
    if tok.kind == _ATOM:
        return "more text"
    return f"'{tok.text}'"


class _Parser:
    """Recursive descent over the tokens; a broken element is skipped and recorded."""

    def __init__(self, text: str, *, allow_groups: bool) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.allow_groups = allow_groups
        self.comments: list[str] = []
        self.broken: list[tuple[str, str]] = []

    # token access: comments are collected, never returned
    def peek(self) -> _Token | None:
        while self.i < len(self.tokens) and self.tokens[self.i].kind == _COMMENT:
            self.comments.append(self.tokens[self.i].text)
            self.i += 1
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def special(self, char: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == _SPECIAL and tok.text == char

    def take(self) -> _Token:
        tok = self.peek()
        assert tok is not None
        self.i += 1
        return tok

    # lists
    def address_list(self) -> list[Address]:
        return self._elements(in_group=False)

    def _elements(self, *, in_group: bool) -> list[Address]:
        found: list[Address] = []
        self.comments = []
        while (tok := self.peek()) is not None:
            if tok.kind == _SPECIAL and tok.text == ",":
                self.i += 1
                self.comments = []
                continue
            if in_group and tok.kind == _SPECIAL and tok.text == ";":
                break
            start = self.i
            try:
                found.extend(self._element(in_group=in_group))
            except _Broken as broken:
                self.i = start
                self._skip(in_group=in_group)
                end = self.tokens[self.i - 1].end if self.i > start else self.tokens[start].end
                self.broken.append((broken.reason, self._snippet(self.tokens[start].start, end)))
        return found

    def _skip(self, *, in_group: bool) -> None:
        """Past a broken element: to the next ',' outside <...> (and outside a group at top level)."""
        angle, group = 0, False
        while self.i < len(self.tokens):
            tok = self.tokens[self.i]
            if tok.kind == _SPECIAL:
                if tok.text == "<":
                    angle += 1
                elif tok.text == ">":
                    angle = max(0, angle - 1)
                elif angle == 0 and not in_group and tok.text == ":":
                    group = True
                elif angle == 0 and tok.text == ";":
                    if in_group:
                        return
                    group = False
                elif angle == 0 and not group and tok.text == ",":
                    return
            self.i += 1

    def _snippet(self, start: int, end: int) -> str:
        snippet = clean_line(self.text[start:end]).replace('"', "'")
        return snippet if len(snippet) <= _SNIPPET_CHARS else snippet[: _SNIPPET_CHARS - 1] + "…"

    # one element
    def _element(self, *, in_group: bool) -> list[Address]:
        words = self._phrase()
        tok = self.peek()
        if tok is None or (tok.kind == _SPECIAL and (tok.text == "," or (in_group and tok.text == ";"))):
            if not words:
                return []  # only comments
            raise _Broken("no '@' in the address")
        if tok.kind != _SPECIAL:
            raise _Broken(_what(tok) if tok.kind == _ERROR else f"unexpected {_what(tok)}")
        if tok.text == "<":
            self.i += 1
            email = self._angle_addr()
            self._end_of_mailbox(in_group, after_angle=True)
            name = self._display(words) or self._comment_name()
            return [Address(name, email)]
        if tok.text == "@":
            email = self._addr_spec(words)
            self._end_of_mailbox(in_group, after_angle=False)
            return [Address(self._comment_name(), email)]
        if tok.text == ":":
            if in_group:
                raise _Broken("a group inside a group")
            if not self.allow_groups:
                raise _Broken("group syntax 'name: ...;' where one mailbox is expected")
            self.i += 1
            return self._group()
        raise _Broken(f"stray '{tok.text}'")

    def _phrase(self) -> list[_Token]:
        words: list[_Token] = []
        while (tok := self.peek()) is not None and (
            tok.kind in (_ATOM, _QUOTED) or (tok.kind == _SPECIAL and tok.text == ".")
        ):
            words.append(tok)
            self.i += 1
        return words

    def _group(self) -> list[Address]:
        members = self._elements(in_group=True)
        if self.peek() is None:
            return members  # tolerated: "undisclosed-recipients:" with no ';'
        self.i += 1  # the ';'
        tok = self.peek()
        if tok is not None and not (tok.kind == _SPECIAL and tok.text == ","):
            raise _Broken(f"{_what(tok)} after the group's ';'")
        return members

    def _angle_addr(self) -> str:
        if self.special("@"):
            self._route()
        words = self._phrase()
        tok = self.peek()
        if not words and tok is not None and tok.kind == _SPECIAL and tok.text == ">":
            raise _Broken("empty address '<>'")
        if tok is None or not (tok.kind == _SPECIAL and tok.text == "@"):
            if tok is not None and tok.kind == _SPECIAL and tok.text == "<":
                raise _Broken("'<' inside an angle address (nested <...<...>>)")
            if tok is not None and tok.kind == _ERROR:
                raise _Broken(tok.text)
            raise _Broken("no '@' in the address")
        email = self._addr_spec(words)
        tok = self.peek()
        if tok is None:
            raise _Broken("missing '>'")
        if tok.kind == _SPECIAL and tok.text == ">":
            self.i += 1
            return email
        if tok.kind == _SPECIAL and tok.text == "<":
            raise _Broken("'<' inside an angle address (nested <...<...>>)")
        raise _Broken(f"{_what(tok)} inside <...> after the address")

    def _route(self) -> None:
        """obs-route: "@" domain *("," ["@" domain]) ":" — checked and dropped."""
        while True:
            if not self.special("@"):
                raise _Broken("malformed source route in <@...:...>")
            self.i += 1
            self._check_domain(self._domain())
            while self.special(","):
                self.i += 1
            if self.special(":"):
                self.i += 1
                return

    def _end_of_mailbox(self, in_group: bool, *, after_angle: bool) -> None:
        tok = self.peek()
        if tok is None or (tok.kind == _SPECIAL and (tok.text == "," or (in_group and tok.text == ";"))):
            return
        where = "'>'" if after_angle else "the address"
        if tok.kind == _SPECIAL and tok.text == "<":
            if after_angle:
                raise _Broken("two angle addresses in one mailbox")
            raise _Broken("address followed by '<...>' without a separator")
        if tok.kind == _SPECIAL and tok.text == "@":
            raise _Broken("more than one '@' in the address")
        if tok.kind == _SPECIAL and tok.text == ">":
            raise _Broken(f"stray '>' after {where}")
        raise _Broken(f"{_what(tok)} after {where}")

    # addr-spec
    def _addr_spec(self, words: list[_Token]) -> str:
        local = self._local_part(words)
        self.i += 1  # the '@'
        domain_tokens = self._domain()
        if _looks_encoded("".join(t.text for t in [*words, *domain_tokens])):
            raise _Broken("encoded word (RFC 2047) where the address should be")
        domain = self._check_domain(domain_tokens)
        email = f"{local}@{domain}"
        if not all(ch.isprintable() for ch in email):
            raise _Broken("invisible or control character in the address")
        if len(email) > MAX_ADDRESS_CHARS:
            raise _Broken(f"address longer than {MAX_ADDRESS_CHARS} characters")
        return email.lower()

    def _local_part(self, words: list[_Token]) -> str:
        if not words:
            raise _Broken("empty local part before '@'")
        parts: list[str] = []
        expect_word = True
        for tok in words:
            is_dot = tok.kind == _SPECIAL
            if is_dot == expect_word:
                if is_dot:
                    raise _Broken("local part starts with '.' or has '..'")
                raise _Broken("space in the address (a display name needs <...>)")
            if not is_dot:
                parts.append(tok.text)
            expect_word = not expect_word
        if expect_word:
            raise _Broken("local part ends with '.'")
        value = ".".join(parts)
        if not value:
            raise _Broken("empty local part before '@'")
        if _is_dot_atom(value):
            return value
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def _domain(self) -> list[_Token]:
        tok = self.peek()
        if tok is None or tok.kind not in (_ATOM, _LITERAL):
            if tok is not None and tok.kind == _SPECIAL and tok.text == ".":
                raise _Broken("domain starts with '.'")
            if tok is not None and tok.kind == _SPECIAL and tok.text == "@":
                raise _Broken("more than one '@' in the address")
            raise _Broken("empty domain after '@'")
        self.i += 1
        labels = [tok]
        if tok.kind == _LITERAL:
            return labels
        while self.special("."):
            self.i += 1
            tok = self.peek()
            if tok is None or tok.kind != _ATOM:
                raise _Broken("empty label in the domain ('..' or a trailing '.')")
            self.i += 1
            labels.append(tok)
        return labels

    @staticmethod
    def _check_domain(labels: list[_Token]) -> str:
        if labels[0].kind == _LITERAL:
            return labels[0].text
        for label in labels:
            bad = next((ch for ch in label.text if ch not in _LDH and not _idn_char(ch)), None)
            if bad is not None:
                raise _Broken(f"character {bad!r} not allowed in a domain")
        return ".".join(label.text for label in labels)

    # display names
    def _display(self, words: list[_Token]) -> str:
        pieces: list[str] = []
        for tok in words:
            if pieces and tok.space:
                pieces.append(" ")
            pieces.append(tok.text)
        return clean_line(decode_header_value("".join(pieces)))

    def _comment_name(self) -> str:
        return clean_line(decode_header_value(" ".join(self.comments)))


def _looks_encoded(text: str) -> bool:
    start = text.find("=?")
    return start >= 0 and text.find("?=", start + 2) >= 0


def _idn_char(ch: str) -> bool:
    return ch >= "\x80" and unicodedata.category(ch)[0] in "LMN"


def _is_dot_atom(value: str) -> bool:
    return all(part and all(ch not in _NOT_ATEXT and not _is_control(ch) for ch in part) for part in value.split("."))
