"""The real-mail corpus (../shared/corpus) through the whole intake path.

Every full message goes in exactly as ``mailticket ingest`` takes it:
``inbox.accept(raw, Envelope("pipe"))`` then ``pipeline.process``. The
expectation files that ship with the corpus (Zammad ``.yml``, Discourse
``expectations.json``) and the MANIFEST's ``kind`` column are checked against
what ends up in the database. Every corpus test takes the ``corpus``
fixture, which skips with a reason when the corpus is absent.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailticket.app import App
from mailticket.domain import Direction, Envelope, RawState
from mailticket.ingest.parse import parse
from mailticket.ingest.pipeline import Outcome
from mailticket.store.models import AttachmentRow, Blob, Message, OutboxRow, RawMessage, Ticket

pytestmark = pytest.mark.corpus

BATCH = 50
MAX_QUARANTINE_RATE = 0.01
MIN_MACHINE_AGREEMENT = 0.95


# -- the corpus ---------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    path: str
    source: str
    kind: str
    size: int


def manifest(corpus: Path) -> list[Entry]:
    lines = (corpus / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["path", "source", "kind", "size_bytes"], lines[0]
    entries = []
    for line in lines[1:]:
        if line.strip():
            path, source, kind, size = line.split("\t")
            entries.append(Entry(path, source, kind, int(size)))
    return entries


def is_full_message(path: str) -> bool:
    """reply/* inputs are bodies, not RFC 5322 messages, except talon's .eml files."""
    if not path.startswith("reply/"):
        return True
    return path.startswith("reply/talon/") and path.endswith(".eml")


def full_messages(corpus: Path) -> list[Entry]:
    return [e for e in manifest(corpus) if is_full_message(e.path)]


@dataclass
class Ingested:
    """What happened to a set of corpus files fed through accept + process."""

    raw_ids: dict[str, int] = field(default_factory=dict)  # path -> raw id, first copy only
    duplicates: list[tuple[str, int, str]] = field(default_factory=list)  # (path, raw id of original, Message-ID)
    outcomes: dict[int, Outcome] = field(default_factory=dict)  # raw id -> what the pipeline did

    def path_of(self) -> dict[int, str]:
        return {raw_id: path for path, raw_id in self.raw_ids.items()}


def ingest(app: App, corpus: Path, paths: Iterable[str]) -> Ingested:
    """Accept every file as the MTA pipe would; process what was stored, in batches."""
    result = Ingested()
    pending: list[int] = []

    def flush() -> None:
        for outcome in app.pipeline.process(pending):
            assert outcome.raw_id not in result.outcomes, f"raw {outcome.raw_id} processed twice"
            result.outcomes[outcome.raw_id] = outcome
        pending.clear()

    for path in paths:
        raw = (corpus / path).read_bytes()
        accepted = app.inbox.accept(raw, Envelope("pipe"))
        if accepted.duplicate:
            result.duplicates.append((path, accepted.raw_id, accepted.message_id))
            continue
        assert accepted.raw_id not in result.raw_ids.values(), f"{path}: raw id {accepted.raw_id} reused"
        result.raw_ids[path] = accepted.raw_id
        pending.append(accepted.raw_id)
        if len(pending) >= BATCH:
            flush()
    flush()
    return result


def messages_by_raw_id(app: App, raw_ids: Iterable[int]) -> dict[int, Message]:
    wanted = list(raw_ids)
    found: dict[int, Message] = {}
    with app.db.transaction() as session:
        for start in range(0, len(wanted), 500):
            rows = session.execute(select(Message).where(Message.raw_id.in_(wanted[start:start + 500]))).scalars()
            for message in rows:
                assert message.raw_id not in found, f"raw {message.raw_id} stored as two messages"
                found[message.raw_id] = message
        session.expunge_all()
    return found


def acked_message_ids(app: App) -> Counter[int]:
    """Message row id -> number of acknowledgements queued for it.

    An ack is only queued when a message creates a ticket, so it belongs to
    the first message of the ticket it was queued for.
    """
    counts: Counter[int] = Counter()
    with app.db.transaction() as session:
        rows = session.execute(select(OutboxRow.ticket_number, OutboxRow.kind)).all()
        for ticket_number, kind in rows:
            assert kind == "ack_new", f"unexpected outbox kind {kind!r} for ticket #{ticket_number}"
            assert ticket_number is not None
            first = session.execute(
                select(func.min(Message.id)).where(Message.ticket_number == ticket_number,
                                                  Message.direction == Direction.IN)
            ).scalar_one()
            counts[first] += 1
    return counts


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def html_text_nodes(markup: str) -> list[str]:
    """The text between tags, entity-decoded and whitespace-collapsed (an independent, crude reading)."""
    markup = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", markup)
    nodes = [collapse(html.unescape(chunk)) for chunk in re.split(r"<[^>]*>", markup)]
    return [node for node in nodes if node]


def blob(app: App, sha256: str) -> bytes:
    with app.db.transaction() as session:
        row = session.get(Blob, sha256)
        assert row is not None, f"attachment blob {sha256} missing"
        assert row.size == len(row.content)
        return bytes(row.content)


# -- a tiny reader for Zammad's ruby-tagged YAML ------------------------------------
# PyYAML is not a dependency. The .yml files use: block mappings, one block
# sequence of mappings ("- !ruby/hash:..."), plain / single-quoted /
# double-quoted (multi-line, escaped) scalars and literal blocks ("|").

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(?: +(?P<rest>.*))?$")
_ITEM = re.compile(r"^(?P<indent> *)- ?(?P<rest>.*)$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", '"': '"', "\\": "\\", "/": "/", " ": " ",
            "a": "\a", "b": "\b", "e": "\x1b", "f": "\f", "v": "\v", "N": "\x85", "_": "\xa0",
            "L": "\u2028", "P": "\u2029"}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _fold(lines: list[str]) -> str:
    """Flow-scalar line folding: a single break is a space, n empty lines are n newlines."""
    out = lines[0].rstrip(" \t") if len(lines) > 1 else lines[0]
    empties = 0
    for index, line in enumerate(lines[1:], start=1):
        piece = line.strip(" \t") if index < len(lines) - 1 else line.lstrip(" \t")
        if not piece and index < len(lines) - 1:
            empties += 1
            continue
        if out.endswith("\\") and (len(out) - len(out.rstrip("\\"))) % 2 == 1:
            out = out[:-1] + "\x00ESCAPED-BREAK\x00" + piece
        else:
            out += ("\n" * empties if empties else " ") + piece
        empties = 0
    return out


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        code = text[i + 1]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}[code]
        out.append(chr(int(text[i + 2:i + 2 + width], 16)))
        i += 2 + width
    return "".join(out)


def _quoted(lines: list[str], i: int, rest: str) -> tuple[str, int]:
    quote = rest[0]
    body = [rest[1:]]
    while True:
        current = body[-1]
        j = 0
        while j < len(current):
            if quote == '"' and current[j] == "\\":
                j += 2
                continue
            if current[j] == quote:
                if quote == "'" and current[j + 1:j + 2] == "'":
                    j += 2
                    continue
                body[-1] = current[:j]
                text = _fold(body)
                if quote == "'":
                    return text.replace("''", "'"), i + 1
                return _unescape(text).replace("\x00ESCAPED-BREAK\x00", ""), i + 1
            j += 1
        i += 1
        body.append(lines[i])


def _literal(lines: list[str], i: int, parent_indent: int, header: str) -> tuple[str, int]:
    block: list[str] = []
    j = i + 1
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > parent_indent):
        block.append(lines[j])
        j += 1
    content = [line for line in block if line.strip()]
    width = min(_indent(line) for line in content) if content else 0
    text = "\n".join(line[width:] for line in block)
    if header == "|-":
        text = text.rstrip("\n")
    elif header != "|+":
        text = text.rstrip("\n") + "\n"
    return text, j


def _scalar(lines: list[str], i: int, parent_indent: int, rest: str) -> tuple[str, int]:
    if rest.startswith(("'", '"')):
        return _quoted(lines, i, rest)
    if rest in ("|", "|-", "|+"):
        return _literal(lines, i, parent_indent, rest)
    assert not rest.startswith((">", "&", "*", "[", "{")), f"YAML construct not handled: {rest!r}"
    parts = [rest]
    j = i + 1
    while j < len(lines) and lines[j].strip() and _indent(lines[j]) > parent_indent:
        parts.append(lines[j])
        j += 1
    return _fold(parts).strip(), j


def _node(lines: list[str], i: int, indent: int) -> tuple[Any, int]:
    """A block mapping or sequence whose lines start at column ``indent``."""
    if _ITEM.match(lines[i]) and _indent(lines[i]) == indent and not _KEY.match(lines[i]):
        items: list[Any] = []
        while i < len(lines) and _indent(lines[i]) == indent and re.match(r"-( |$)", lines[i][indent:]):
            rest = lines[i][indent + 1:].strip()
            if rest:  # "- key: value" starts the item's mapping on the dash line
                lines[i] = " " * (indent + 2) + rest
                item, i = _node(lines, i, indent + 2)
            else:
                item, i = _node(lines, i + 1, indent + 2)
            items.append(item)
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        if _indent(lines[i]) < indent:
            break
        match = _KEY.match(lines[i])
        assert match and len(match["indent"]) == indent, f"YAML line not understood: {lines[i]!r}"
        rest = (match["rest"] or "").strip()
        if rest:
            mapping[match["key"]], i = _scalar(lines, i, indent, rest)
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j < len(lines) and (_indent(lines[j]) > indent or re.match(r"-( |$)", lines[j][indent:])):
            mapping[match["key"]], i = _node(lines, j, _indent(lines[j]))
        else:
            mapping[match["key"]], i = None, i + 1
    return mapping, i


def read_zammad_yaml(text: str) -> dict[str, Any]:
    text = re.sub(r" ?!ruby/[\w:]+", "", normalize_newlines(text))
    lines = text.split("\n")
    assert lines[0].strip() == "---", lines[0]
    document, end = _node(lines[1:], 0, 0)
    assert all(not line.strip() for line in lines[1 + end:]), "YAML text left over"
    assert isinstance(document, dict)
    return document


def test_yaml_reader_on_known_shapes() -> None:
    """The reader above is itself code: check it on the shapes the Zammad files use."""
    doc = read_zammad_yaml(
        "--- !ruby/hash:ActiveSupport::HashWithIndifferentAccess\n"
        "from: '\"Lon L. Peters\" <lp@example.com>'\n"
        "subject: plain words\n"
        "  continued here\n"
        'body: "Hallo.<br>Jetzt \\"quoted\\"\n'
        "  folded line\\nnext\n"
        "\n"
        '  after blank \\u00e4\\x41"\n'
        "block: |\n"
        "  line one\n"
        "\n"
        "    indented\n"
        "attachments:\n"
        "- !ruby/hash:ActiveSupport::HashWithIndifferentAccess\n"
        "  data: Hello Zammad\n"
        "  filename: a b.txt\n"
        "  preferences: !ruby/hash:ActiveSupport::HashWithIndifferentAccess\n"
        "    Content-Type: application/msword; name=x;\n"
        "      x-mac-type=5738424e\n"
        "    original-format: true\n"
        "- !ruby/hash:ActiveSupport::HashWithIndifferentAccess\n"
        "  data: |\n"
        "    Reporting-MTA: dns; mx1\n"
        "  filename: Delivery report.txt\n"
        "empty: ''\n"
    )
    assert doc["from"] == '"Lon L. Peters" <lp@example.com>'
    assert doc["subject"] == "plain words continued here"
    assert doc["body"] == 'Hallo.<br>Jetzt "quoted" folded line\nnext\nafter blank äA'
    assert doc["block"] == "line one\n\n  indented\n"
    first, second = doc["attachments"]
    assert first["data"] == "Hello Zammad"
    assert first["filename"] == "a b.txt"
    assert first["preferences"] == {"Content-Type": "application/msword; name=x; x-mac-type=5738424e",
                                    "original-format": "true"}
    assert second == {"data": "Reporting-MTA: dns; mx1\n", "filename": "Delivery report.txt"}
    assert doc["empty"] == ""


# -- 1. the whole corpus goes through -------------------------------------------------


def test_every_corpus_message_is_ingested_or_quarantined_with_a_reason(app: App, corpus: Path) -> None:
    entries = full_messages(corpus)
    missing = [e.path for e in entries if not (corpus / e.path).is_file()]
    assert not missing, f"MANIFEST lists files that are not there: {missing[:10]}"
    assert len(entries) > 100, "the corpus is suspiciously small"

    result = ingest(app, corpus, (e.path for e in entries))
    stored = set(result.raw_ids.values())
    assert len(result.raw_ids) + len(result.duplicates) == len(entries)

    # Every stored message was processed exactly once, and nothing is left 'new'.
    assert set(result.outcomes) == stored
    with app.db.transaction() as session:
        states = dict(session.execute(
            select(RawMessage.state, func.count()).group_by(RawMessage.state)
        ).all())
        quarantined_rows = session.execute(
            select(RawMessage.id, RawMessage.error).where(RawMessage.state == RawState.QUARANTINED)
        ).all()
        done_without_ticket = session.execute(
            select(func.count()).select_from(RawMessage)
            .where(RawMessage.state == RawState.DONE, RawMessage.ticket_number.is_(None))
        ).scalar_one()
        message_rows = session.execute(
            select(func.count()).select_from(Message).where(Message.direction == Direction.IN)
        ).scalar_one()
        originals = dict(session.execute(select(RawMessage.id, RawMessage.message_id)).all())
    assert states.get(RawState.NEW, 0) == 0, states
    assert states.get(RawState.DONE, 0) + states.get(RawState.QUARANTINED, 0) == len(stored), states
    assert done_without_ticket == 0
    assert message_rows == states.get(RawState.DONE, 0), "every processed raw message is one inbound message"

    # What was stored is storable anywhere: PostgreSQL refuses NUL in text columns.
    with app.db.transaction() as session:
        for columns in session.execute(select(
                Message.raw_id, Message.subject, Message.from_name, Message.text, Message.visible_text, Message.html,
        ).where(Message.direction == Direction.IN)):
            assert not any("\x00" in value for value in columns[1:]), f"NUL in {result.path_of()[columns[0]]}"

    decisions = Counter(o.decision for o in result.outcomes.values())
    assert set(decisions) <= {"new_ticket", "joined", "quarantined"}, decisions
    for outcome in result.outcomes.values():
        assert (outcome.decision == "quarantined") == (outcome.state == RawState.QUARANTINED), outcome
        assert (outcome.ticket_number is None) == (outcome.state == RawState.QUARANTINED), outcome

    # Quarantine is rare and always says why.
    paths = result.path_of()
    quarantined = [paths[raw_id] for raw_id, _ in quarantined_rows]
    assert len(quarantined_rows) == decisions["quarantined"]
    assert len(quarantined_rows) < MAX_QUARANTINE_RATE * len(entries), quarantined
    for raw_id, error in quarantined_rows:
        assert error and error.strip(), f"{paths[raw_id]} quarantined without an error"

    # Duplicates are the same Message-ID (or the same bytes) as a file stored earlier; they parse too.
    for path, raw_id, message_id in result.duplicates:
        assert raw_id in stored, f"{path}: duplicate of raw {raw_id}, which this run did not store"
        raw = (corpus / path).read_bytes()
        if message_id:
            assert originals[raw_id] == message_id, path
        else:
            assert (corpus / paths[raw_id]).read_bytes() == raw, path
        assert parse(raw).message_id == message_id, f"{path}: parser and dedupe disagree on the Message-ID"

    rate = len(quarantined_rows) / len(entries)
    print(f"\ncorpus: {len(entries)} full messages, {len(stored)} stored, {len(result.duplicates)} duplicates "
          f"(same Message-ID), decisions {dict(decisions)}, quarantined {len(quarantined_rows)} ({rate:.2%})")
    for path in quarantined:
        print(f"  quarantined: {path}")


# -- 2. Zammad's expectations --------------------------------------------------------

ZAMMAD_CASES = [
    "mail007",
    "mail033-undelivered-mail-returned-to-sender-notification",
    "mail078-content_transfer_encoding_x_uuencode",
]


def _ingest_one(app: App, corpus: Path, path: str) -> Message:
    result = ingest(app, corpus, [path])
    assert not result.duplicates
    [raw_id] = result.raw_ids.values()
    outcome = result.outcomes[raw_id]
    assert outcome.state == RawState.DONE, outcome.error
    assert outcome.decision == "new_ticket"
    return messages_by_raw_id(app, [raw_id])[raw_id]


def _attachments(app: App, message: Message) -> list[AttachmentRow]:
    with app.db.transaction() as session:
        rows = session.execute(
            select(AttachmentRow).where(AttachmentRow.message_row_id == message.id).order_by(AttachmentRow.id)
        ).scalars().all()
        session.expunge_all()
        return list(rows)


@pytest.mark.parametrize("name", ZAMMAD_CASES)
def test_zammad_expectations(app: App, corpus: Path, name: str) -> None:
    expected = read_zammad_yaml((corpus / "zammad" / f"{name}.yml").read_text(encoding="utf-8"))
    message = _ingest_one(app, corpus, f"zammad/{name}.box")

    assert message.from_addr == expected["from_email"].lower()
    assert message.from_name == expected["from_display_name"]
    assert message.subject == expected["subject"]

    if expected["content_type"] == "text/plain":
        assert normalize_newlines(message.text).strip() == normalize_newlines(expected["body"]).strip()
    else:
        assert expected["content_type"] == "text/html"
        assert message.html, "an HTML body is kept as HTML"
        # Zammad sanitises the HTML; compare what a reader sees: every text
        # node of the expected body appears, in order, in our text version.
        ours = collapse(message.text)
        position = 0
        nodes = html_text_nodes(expected["body"])
        assert sum(len(n) for n in nodes) > 500, "expected body should be substantial"
        for node in nodes:
            found = ours.find(node, position)
            assert found >= 0, f"{node!r} missing from stored text after offset {position}: {ours[position:][:200]!r}"
            position = found + len(node)

    stored = _attachments(app, message)
    real = []
    for attachment in expected.get("attachments") or []:
        preferences = attachment.get("preferences") or {}
        if preferences.get("original-format") == "true":
            # Zammad files the original HTML body as "message.html"; we keep it as the message's html.
            assert normalize_newlines(attachment["data"]).strip() in normalize_newlines(message.html), name
        else:
            real.append(attachment)
    assert sorted(a.filename for a in stored) == sorted(a["filename"] for a in real)
    for attachment in real:
        [row] = [a for a in stored if a.filename == attachment["filename"]]
        content = blob(app, row.sha256)
        assert row.size == len(content)
        # Line ends are compared without trailing blanks: Python's generator writes an empty
        # header ("In-Reply-To:") back as "In-Reply-To: ".
        assert _lines(content.decode("utf-8")) == _lines(attachment["data"]), attachment["filename"]


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in normalize_newlines(text).strip().split("\n")]


# -- 3. Discourse's expectations ------------------------------------------------------

_DISCOURSE_KEYS = {
    "auto_generated", "why", "subject", "to", "body", "text_plain", "text_html_contains", "charset",
    "in_reply_to", "attachment_filename", "attachment_content_type", "forwarded_block", "content_type",
    "visible_text",
}


def test_discourse_expectations(app: App, corpus: Path) -> None:
    spec = json.loads((corpus / "discourse" / "expectations.json").read_text(encoding="utf-8"))
    cases = spec["cases"]
    assert cases
    result = ingest(app, corpus, [f"discourse/{case['fixture']}" for case in cases])
    assert not result.duplicates
    messages = messages_by_raw_id(app, result.raw_ids.values())
    acked = acked_message_ids(app)

    for case in cases:
        expect = case["expect"]
        fixture = case["fixture"]
        unknown = set(expect) - _DISCOURSE_KEYS
        assert not unknown, f"{fixture}: expectation keys this test does not check: {unknown}"
        raw_id = result.raw_ids[f"discourse/{fixture}"]
        assert result.outcomes[raw_id].state == RawState.DONE, result.outcomes[raw_id].error
        message = messages[raw_id]
        attachments = _attachments(app, message)

        if "auto_generated" in expect:
            if expect["auto_generated"]:
                assert message.verdict != "human", f"{fixture}: {message.verdict_reason}"
                assert acked[message.id] == 0, f"{fixture}: a machine was acknowledged"
                # The verdict names the header that decided it.
                assert expect["why"].split(":", 1)[0] in message.verdict_reason, (fixture, message.verdict_reason)
            else:
                assert message.verdict == "human", f"{fixture}: {message.verdict_reason}"
        if "subject" in expect:
            assert message.subject == (expect["subject"] or ""), fixture
        if "to" in expect:
            assert message.to_addrs == ([] if expect["to"] is None else [expect["to"].lower()]), fixture
        if "body" in expect:
            assert normalize_newlines(message.text) == normalize_newlines(expect["body"]), fixture
        if "text_plain" in expect:
            assert normalize_newlines(message.text) == normalize_newlines(expect["text_plain"]), fixture
        if "text_html_contains" in expect:
            assert expect["text_html_contains"] in message.html, fixture
        if "charset" in expect:
            # The charset itself is not stored; it is right when the decoded text above is.
            assert "text_plain" in expect or "text_html_contains" in expect, fixture
        if "in_reply_to" in expect:
            assert message.in_reply_to == [expect["in_reply_to"].strip("<>")], fixture
        if "attachment_filename" in expect:
            named = [a for a in attachments if a.filename == expect["attachment_filename"]]
            assert len(named) == 1, (fixture, [a.filename for a in attachments])
            if "attachment_content_type" in expect:
                assert named[0].content_type == expect["attachment_content_type"], fixture
            assert named[0].size > 0 and len(blob(app, named[0].sha256)) == named[0].size
        if expect.get("forwarded_block"):
            text = normalize_newlines(message.text)
            assert "---------- Forwarded message ----------" in text, fixture
            assert "Test attachments with Base64 encoded filename." in text, fixture
        if "content_type" in expect:
            assert expect["content_type"] == "text/html", "only HTML-only fixtures are expected here"
            assert message.html, fixture
            assert "<" not in message.text, f"{fixture}: the text version still carries markup"
        if "visible_text" in expect:
            assert normalize_newlines(message.visible_text).strip() == normalize_newlines(expect["visible_text"])


# -- 4. machines are not answered, humans are -----------------------------------------


def test_autoreplies_and_bounces_get_no_acknowledgement(app: App, corpus: Path) -> None:
    entries = [e for e in full_messages(corpus) if e.kind in ("autoreply", "bounce")]
    assert entries
    kinds = {e.path: e.kind for e in entries}
    result = ingest(app, corpus, (e.path for e in entries))
    messages = messages_by_raw_id(app, result.raw_ids.values())
    acked = acked_message_ids(app)
    assert sum(acked.values()) == sum(acked[m.id] for m in messages.values()), "acks for messages not in this run"

    human: list[str] = []
    answered: list[str] = []
    judged = 0
    with app.db.transaction() as session:
        for path, raw_id in result.raw_ids.items():
            message = messages.get(raw_id)
            if message is None:  # quarantined; covered by the whole-corpus test
                continue
            judged += 1
            if message.verdict == "human":
                human.append(f"{path} [{kinds[path]}] From={message.from_addr!r} Subject={message.subject[:60]!r}")
            else:
                # Machine mail is never answered, and a ticket it opens waits for review.
                assert acked[message.id] == 0, f"{path}: {message.verdict} mail was acknowledged"
                ticket = session.get_one(Ticket, message.ticket_number)
                if session.execute(select(func.min(Message.id)).where(
                        Message.ticket_number == ticket.number, Message.direction == Direction.IN,
                )).scalar_one() == message.id:
                    assert ticket.needs_review, path
            if acked[message.id]:
                answered.append(path)

    assert judged >= 0.99 * len(result.raw_ids)
    agreement = 1 - len(human) / judged
    not_answered = 1 - len(answered) / judged
    print(f"\nautoreply/bounce: {len(entries)} files, {len(result.duplicates)} duplicates, {judged} judged; "
          f"non-human verdict {judged - len(human)}/{judged} ({agreement:.1%}), "
          f"no acknowledgement {judged - len(answered)}/{judged} ({not_answered:.1%})")
    for line in human:
        print(f"  verdict human: {line}")
    assert agreement >= MIN_MACHINE_AGREEMENT
    assert not_answered >= MIN_MACHINE_AGREEMENT


def test_human_corpus_messages_get_exactly_one_acknowledgement(app: App, corpus: Path) -> None:
    paths = ["zammad/mail007.box", "discourse/big5.eml", "discourse/exchange_html_reply.eml"]
    paths += sorted(f"helpdesk/{p.name}" for p in (corpus / "helpdesk").glob("*.eml"))
    assert len(paths) >= 8
    result = ingest(app, corpus, paths)
    assert not result.duplicates
    messages = messages_by_raw_id(app, result.raw_ids.values())

    with app.db.transaction() as session:
        for path in paths:
            raw_id = result.raw_ids[path]
            outcome = result.outcomes[raw_id]
            assert outcome.state == RawState.DONE, f"{path}: {outcome.error}"
            assert outcome.decision == "new_ticket", path
            message = messages[raw_id]
            assert message.verdict == "human", f"{path}: {message.verdict} ({message.verdict_reason})"
            assert message.from_addr, path
            ticket = session.get_one(Ticket, message.ticket_number)
            assert not ticket.needs_review, path
            acks = session.execute(
                select(OutboxRow).where(OutboxRow.ticket_number == message.ticket_number)
            ).scalars().all()
            assert [(a.kind, a.to_addr) for a in acks] == [("ack_new", message.from_addr)], path
