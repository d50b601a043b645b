"""The visible text of a reply, scored on ../shared/corpus/reply/ against the reply-parser libraries.

    python benchmarks/replies.py [--corpus ../shared/corpus] [--failures]

Every case of the five sets (zapier, crisp, mail-parser-reply, talon, trimmer) is run through
``mailticket.ingest.replies.visible_text`` and, in the same run, through email-reply-parser and
mail-parser-reply (``pip install -e '.[bench]'``; a library that is not installed is skipped with a note).

Scoring (the same for every parser):

* Only checks on the visible new text count: targets ``reply`` / ``parse_reply()`` / ``visible_text`` /
  ``fragments[0]`` (and their ``.content`` / ``.trim()`` / ``.strip()`` forms), mail-parser-reply's
  ``replies[0].body`` (the newest reply's text), talon's reply text (plain, and HTML compared as text), and
  trimmer's ``trimmed/`` files. Checks on other targets (fragment flags and counts, signatures, older replies,
  the quoted part) are ignored; a case with none left is *skipped*.
* ``equals`` compares after ``strip()`` of both sides (upstream compares fragments with their trailing newline).
* *lost new text*: a line of the expected visible text (or a ``contains`` value) is missing from the output
  (whitespace collapsed). Expected lines our signature policy drops (a ``-- `` block, device lines such as
  "Sent from my iPhone") do not count as written by the author — for every parser alike.
"""

from __future__ import annotations

import argparse
import email
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mailticket.ingest.htmltext import html_to_text  # noqa: E402
from mailticket.ingest.replies import is_device_line, visible_text  # noqa: E402

SETS = ("zapier", "crisp", "mail-parser-reply", "talon", "trimmer")
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
_PORTABLE = re.compile(
    r"^(?:reply|parse_reply\(\)|visible_text|fragments\[0\]|replies\[0\]\.body)"
    r"(?:\.content|\.trim\(\)|\.strip\(\))?$"
)


@dataclass
class Case:
    id: str  # "<set>/<fixture>[#<upstream test>]"
    set: str
    text: str
    html: str = ""
    from_html: bool = False
    checks: list[dict[str, Any]] = field(default_factory=list)
    skip: str = ""  # why the case is not scored
    languages: list[str] = field(default_factory=list)


@dataclass
class Result:
    passed: bool
    lost: bool
    failures: list[str]


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _first_plain(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=policy.default)
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload.decode(part.get_content_charset() or "utf-8", errors="replace")
    return ""


def _expectation_cases(folder: Path, name: str) -> list[Case]:
    data = json.loads((folder / "expectations.json").read_text(encoding="utf-8"))
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for entry in data["cases"]:
        fixture = entry["fixture"]
        label = f"{name}/{fixture}" + (f"#{entry['upstream_test']}" if entry.get("upstream_test") else "")
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label += f"~{seen[label]}"
        path = folder / fixture
        case = Case(id=label, set=name, text="",
                    languages=list(entry.get("parser_options", {}).get("languages", [])))
        if name == "talon":
            _talon(case, entry, path)
        else:
            case.text = _read(path)
            case.checks = [c for c in entry["checks"]
                           if c["check"] == "parse_max_seconds" or _PORTABLE.match(c.get("target") or "")]
        if not case.checks and not case.skip:
            case.skip = "no check on the visible new text"
        cases.append(case)
    return cases


def _talon(case: Case, entry: dict[str, Any], path: Path) -> None:
    target = entry.get("target", "")
    if target.startswith("(text, signature)"):
        case.text = _read(path)
        case.skip = "talon's signature split (text, signature), not the visible text"
        return
    if path.suffix == ".html":
        case.html = _read(path)
        case.text, case.from_html = html_to_text(case.html), True
    elif "whole file" in entry.get("input", ""):
        case.text = _read(path)
    else:
        case.text = _first_plain(path.read_bytes())
    for check in entry["checks"]:
        check = dict(check)
        if "HTML with quotation removed" in target:  # expected HTML, compared as its text
            check["value"] = html_to_text(check["value"])
        if check["check"] == "equals" and check.get("note", "").startswith("compare after"):
            reply_text = path.with_name(path.stem + "_reply_text")
            if reply_text.is_file():
                check["value"] = _read(reply_text)
        case.checks.append(check)


def _trimmer_cases(folder: Path) -> list[Case]:
    cases = []
    for path in sorted((folder / "emails").glob("*.txt")):
        trimmed = folder / "trimmed" / path.name
        case = Case(id=f"trimmer/{path.name}", set="trimmer", text=_read(path))
        if trimmed.is_file():
            case.checks = [{"check": "equals", "value": _read(trimmed)}]
        else:
            case.skip = "no trimmed/ file"
        cases.append(case)
    return cases


def load_cases(corpus: Path) -> list[Case]:
    reply = corpus / "reply"
    cases: list[Case] = []
    for name in SETS:
        folder = reply / name
        cases += _trimmer_cases(folder) if name == "trimmer" else _expectation_cases(folder, name)
    return cases


# --- Scoring --------------------------------------------------------------------------------------------------

def _squash(text: str) -> str:
    return " ".join(text.split())


def _js_flags(flags: str) -> int:
    return (re.I if "i" in flags else 0) | (re.M if "m" in flags else 0) | (re.S if "s" in flags else 0)


def _authored_lines(expected: str) -> list[str]:
    """The lines of an expected visible text the author wrote: not '>' lines, a "-- " block, device lines."""
    lines = []
    for line in expected.replace("\r\n", "\n").split("\n"):
        if line.strip() == "--":
            break
        if re.search(r"\w", line) and not line.lstrip().startswith(">") and not is_device_line(line):
            lines.append(_squash(line))
    return lines


def score(case: Case, parse: Callable[[Case], str]) -> Result:
    failures: list[str] = []
    lost = False
    started = time.perf_counter()
    output = parse(case) or ""
    seconds = time.perf_counter() - started
    squashed = _squash(output)
    for check in case.checks:
        kind, value = check["check"], check.get("value")
        ok = True
        if kind == "equals":
            ok = output.strip() == str(value).strip()
            missing = [line for line in _authored_lines(str(value)) if line not in squashed]
            lost = lost or bool(missing)
        elif kind == "equals_ignoring_all_whitespace":
            ok = re.sub(r"\s", "", output) == re.sub(r"\s", "", str(value))
            nows = re.sub(r"\s", "", output)
            lost = lost or any(re.sub(r"\s", "", line) not in nows for line in _authored_lines(str(value)))
        elif kind == "contains":
            ok = str(value) in output
            lost = lost or (not ok and _squash(str(value)) not in squashed)
        elif kind == "not_contains":
            ok = str(value) not in output
        elif kind == "startswith":
            ok = output.startswith(str(value))
        elif kind == "regex_match_at_start":
            ok = re.match(str(value), output) is not None
        elif kind == "regex_search":
            ok = re.search(str(value), output, _js_flags(check.get("flags", ""))) is not None
        elif kind == "not_regex_search":
            ok = re.search(str(value), output, _js_flags(check.get("flags", ""))) is None
        elif kind == "non_empty":
            ok = bool(output.strip())
            lost = lost or not ok
        elif kind == "parse_max_seconds":
            ok = seconds <= float(value)  # type: ignore[arg-type]
        else:
            ok = False
        if not ok:
            failures.append(f"{kind} {str(value)[:60]!r}")
    return Result(passed=not failures, lost=lost, failures=failures)


# --- The parsers ----------------------------------------------------------------------------------------------

def ours(case: Case) -> str:
    return visible_text(case.text, case.html, case.from_html)


def _libraries() -> tuple[dict[str, Callable[[Case], str]], list[str]]:
    parsers: dict[str, Callable[[Case], str]] = {}
    notes = []
    try:
        from email_reply_parser import EmailReplyParser as ZapierParser

        parsers["email-reply-parser"] = lambda case: ZapierParser.parse_reply(case.text) or ""
    except ImportError:
        notes.append("email-reply-parser is not installed (pip install -e '.[bench]'): skipped")
    try:
        from mailparser_reply import EmailReplyParser as MprParser
        from mailparser_reply.constants import MAIL_LANGUAGES

        every = sorted(MAIL_LANGUAGES)

        def mpr(case: Case) -> str:
            return MprParser(languages=case.languages or list(every)).parse_reply(case.text) or ""

        parsers["mail-parser-reply"] = mpr
    except ImportError:
        notes.append("mail-parser-reply is not installed (pip install -e '.[bench]'): skipped")
    return parsers, notes


def _safe(parse: Callable[[Case], str]) -> Callable[[Case], str]:
    def run(case: Case) -> str:
        try:
            return parse(case)
        except Exception as error:  # a library's crash is a failed case, not a failed run
            return f"<error {type(error).__name__}>"
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--failures", action="store_true", help="list our failing cases")
    args = parser.parse_args(argv)
    if not (args.corpus / "reply").is_dir():
        print(f"no reply corpus at {args.corpus / 'reply'}")
        return 1
    cases = load_cases(args.corpus)
    libraries, notes = _libraries()
    parsers: dict[str, Callable[[Case], str]] = {"mailticket": ours, **libraries}
    for note in notes:
        print(f"note: {note}")
    results = {name: {c.id: score(c, _safe(p)) for c in cases if not c.skip} for name, p in parsers.items()}
    names = list(parsers)
    print(f"{'set':<19}{'cases':>6}{'skip':>6}" + "".join(f"{n + ' pass/lost':>32}" for n in names))
    totals = {n: [0, 0] for n in names}
    for set_name in (*SETS, "all"):
        chosen = [c for c in cases if set_name in ("all", c.set)]
        scored = [c for c in chosen if not c.skip]
        row = f"{set_name:<19}{len(chosen):>6}{len(chosen) - len(scored):>6}"
        for n in names:
            passed = sum(results[n][c.id].passed for c in scored)
            lost = sum(results[n][c.id].lost for c in scored)
            if set_name == "all":
                totals[n] = [passed, lost]
            share = f"{passed}/{len(scored)} ({100 * passed / max(1, len(scored)):.0f}%) lost {lost}"
            row += f"{share:>32}"
        print(row)
    scored_count = sum(not c.skip for c in cases)
    ratio_base = max((totals[n][0] for n in libraries), default=0)
    union = sum(any(results[n][c.id].passed for n in libraries) for c in cases if not c.skip)
    print(f"\nmailticket: {totals['mailticket'][0]}/{scored_count} scored cases "
          f"({100 * totals['mailticket'][0] / max(1, scored_count):.1f}%), lost new text in "
          f"{totals['mailticket'][1]}; {sum(bool(c.skip) for c in cases)} cases skipped")
    if libraries:
        print(f"best library: {ratio_base}/{scored_count}; mailticket / best library = "
              f"{totals['mailticket'][0] / max(1, ratio_base):.2f}; union of the libraries: {union}/{scored_count}")
    if args.failures:
        for c in cases:
            result = results["mailticket"].get(c.id)
            if result and not result.passed:
                print(f"FAIL {c.id}{' LOST' if result.lost else ''}: {'; '.join(result.failures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
