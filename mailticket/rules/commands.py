"""The command lines at the top of an agent's reply: ``#status solved``, ``#tag +vip`` ...

Pure syntax, no database: :func:`parse_commands` reads the lines at the top of the reply's
visible text and returns the commands, the errors (so the agent can be told), and the text
without the command block. Whether the agent, queue or merge target exists is checked by
the caller.

How a line at the top is read (after a leading BOM, and with trailing whitespace and CR dropped):

* a blank line is skipped (before, between and right after the commands);
* ``#`` + a known verb + (end of line, whitespace or ``:``) is a command, case-insensitive:
  its arguments are checked, and a bad one is a :class:`CommandError` (the line still belongs
  to the command block, so it is never relayed);
* ``#`` + a word of letters (then end of line, whitespace or ``:``) that is *close to* a known
  verb is an "unknown command" error with a suggestion (``#stauts`` -> ``#status``): the
  distance (Damerau-Levenshtein, adjacent swaps count once) is at most 1, or at most 2 when
  both the word and the verb have at least 5 letters, so ``#state``, ``#asign``, ``#priorty``
  and ``#tga`` are caught but ``#the``, ``#ok`` or ``#hashtag`` are not; so is a bare status
  or priority value (``#solved`` -> ``#status solved``, ``#urgent`` -> ``#priority urgent``);
* anything else is text and ends the command block: ``#1 reason is ...``, ``#2fa broke``,
  ``# heading``, ``#hashtag ...`` (a word far from every verb), ``#no-reply``, prose, and
  ``>``-quoted lines (never commands).

A command below the first line of text is text, as is a hashtag in the middle of a line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from mailticket.domain import PRIORITIES

STATUSES = ("open", "pending", "solved", "closed")
AWAY = ("on", "off")
VERBS = ("status", "priority", "assign", "queue", "tag", "cc", "internal", "merge", "away")
SINGLE = frozenset({"status", "priority", "assign", "queue", "merge", "away", "internal"})  # given once

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")
_HEAD = re.compile(r"#([A-Za-z]+)(?::|(?=\s|$))")  # "#word" then whitespace, the end or ":"
_NUMBER = re.compile(r"#?([0-9]{1,18})")
_ADDRESS = re.compile(r"[^@\s<>,;\"()\[\]]+@[^@\s<>,;\"()\[\]]+\.[^@\s<>,;\"()\[\].]+")
_SIGNATURE = re.compile(r"--[ \t]*(?:\r\n|\r|\n|$)")


@dataclass(frozen=True)
class Command:
    verb: str  # one of VERBS, lower-case
    args: tuple[str, ...]  # normalised, see parse_commands
    line: str  # the line as written (without its line ending)
    number: int  # 1-based line number in the text


@dataclass(frozen=True)
class CommandError:
    line: str  # the line as written (without its line ending)
    number: int  # 1-based line number in the text
    reason: str  # for the agent, e.g. 'unknown command "#stauts" (did you mean #status?)'


@dataclass(frozen=True)
class Parsed:
    commands: tuple[Command, ...]
    errors: tuple[CommandError, ...]
    text: str  # the text without the command block (nor the blank lines right after it)
    only_commands: bool  # commands or errors, then nothing (blank lines, or a signature only): relay nothing


def parse_commands(text: str) -> Parsed:
    """Read the command block at the top of ``text``; only the top is scanned.

    Arguments are normalised: status, priority, away, ``me`` and ``none`` lower-case; assign
    and queue one argument (the words joined by one space); tags ``+x``/``-x`` lower-case (a
    bare ``x`` is ``+x``, commas separate too); cc ``+addr``/``-addr`` lower-case (bare is
    ``+``, ``<>`` and ``mailto:`` dropped); merge the number as digits (``#merge #12`` -> ``12``).
    A single-valued verb given again with the same arguments is dropped, with other arguments
    it is an error. When there is no command block at all, ``text`` is returned unchanged.
    """
    start = 1 if text.startswith("\ufeff") else 0
    commands: list[Command] = []
    errors: list[CommandError] = []
    seen: dict[str, Command] = {}
    rest = len(text)  # where the text after the block begins
    found = False
    for number, begin, raw in _lines(text, start):
        line = raw.rstrip()
        if not line.strip():
            continue
        head = _HEAD.match(line.lstrip())
        verb = head.group(1).lower() if head else ""
        if head is None or (verb not in VERBS and _suggest(verb) is None):
            rest = begin
            break
        found = True
        if verb not in VERBS:
            errors.append(CommandError(raw, number, f'unknown command "#{head.group(1)}" '
                                                    f"(did you mean #{_suggest(verb)}?)"))
            continue
        words = tuple(line.lstrip()[head.end():].split())
        outcome = _read(verb, words)
        if isinstance(outcome, str):
            errors.append(CommandError(raw, number, f'"{line.strip()}": {outcome}'))
            continue
        command = Command(verb, outcome, raw, number)
        earlier = seen.get(verb)
        if earlier is not None:
            if earlier.args != command.args:
                errors.append(CommandError(raw, number, f'"{line.strip()}": conflicts with '
                                                        f'"{earlier.line.strip()}" on line {earlier.number}'))
            continue
        if verb in SINGLE:
            seen[verb] = command
        commands.append(command)
    if not found:
        return Parsed((), (), text, False)
    remainder = text[rest:]
    return Parsed(tuple(commands), tuple(errors), remainder, not _says_something(remainder))


def _lines(text: str, pos: int) -> Iterator[tuple[int, int, str]]:
    """(1-based number, start offset, line without its ending), lazily from ``pos``."""
    number = 0
    size = len(text)
    while pos < size:
        match = _LINE.match(text, pos)
        assert match is not None  # the pattern matches the empty string
        number += 1
        body = match.group().rstrip("\r\n")
        yield number, pos, body
        pos = match.end()


def _says_something(remainder: str) -> bool:
    """Whether the text after the block has anything but blank lines or a signature ("-- ")."""
    stripped = remainder.lstrip()
    if not stripped:
        return False
    # the remainder begins at its first non-blank line: a signature separator there means nothing else
    return _SIGNATURE.match(stripped) is None


def _read(verb: str, words: tuple[str, ...]) -> tuple[str, ...] | str:
    """The normalised arguments of a known verb, or why they are wrong."""
    if verb in ("status", "priority", "away"):
        allowed = {"status": STATUSES, "priority": PRIORITIES, "away": AWAY}[verb]
        if len(words) == 1 and words[0].lower() in allowed:
            return (words[0].lower(),)
        return "one of " + ", ".join(allowed)
    if verb == "internal":
        return "takes nothing after it" if words else ()
    if verb == "merge":
        if not words:
            return "needs a ticket number"
        match = _NUMBER.fullmatch(words[0])
        if len(words) != 1 or match is None or int(match.group(1)) == 0:
            return "needs one ticket number, e.g. #merge 123"
        return (str(int(match.group(1))),)
    if verb == "queue":
        return (" ".join(words),) if words else "needs a queue name"
    if verb == "assign":
        if not words:
            return "needs an address, an agent's name, me or none"
        value = " ".join(words)
        if value.lower() in ("me", "none"):
            return (value.lower(),)
        if "@" in value:
            address = _address(value)
            return (address,) if address else "not an address"
        return (value,)
    items = [item for word in words for item in word.split(",") if item]
    if not items:
        return "needs something to add (+x) or remove (-x)" if verb == "tag" else \
            "needs an address to add (+addr) or remove (-addr)"
    result: list[str] = []
    for item in items:
        sign, value = (item[0], item[1:]) if item[0] in "+-" else ("+", item)
        if verb == "tag":
            if not value or value[0] in "+-":
                return f'"{item}" is not a tag'
            value = value.lower()
        else:
            address = _address(value)
            if not address:
                return f'"{item}" is not an address'
            value = address
        if sign + value not in result:
            result.append(sign + value)
    return tuple(result)


def _address(value: str) -> str:
    """The lower-cased address in ``value`` (``<a@b.c>``, ``mailto:a@b.c``), or "" when it is none."""
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    if value.lower().startswith("mailto:"):
        value = value[7:]
    return value.lower() if _ADDRESS.fullmatch(value) else ""


def _suggest(word: str) -> str | None:
    """What ``word`` (not a verb) is a slip of (see the module's docstring), or None."""
    if word in STATUSES:
        return f"status {word}"
    if word in PRIORITIES:
        return f"priority {word}"
    best: tuple[int, str] | None = None
    for verb in VERBS:
        limit = 2 if min(len(word), len(verb)) >= 5 else 1
        if abs(len(word) - len(verb)) > limit:
            continue
        distance = _distance(word, verb)
        if distance <= limit and (best is None or distance < best[0]):
            best = (distance, verb)
    return best[1] if best else None


def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]
