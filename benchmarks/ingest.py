"""Bulk import: `mailticket import` on a maildir vs bare mail-parser over the same messages.

    python benchmarks/ingest.py [--messages 2000] [--scale] [--postgres URL] [--seed 1]

A deterministic corpus (seeded) is written as a maildir: plain-text and
multipart/alternative HTML messages from several senders, 10% carrying a
100 KB binary attachment, 30% replies (In-Reply-To/References to an earlier
message, "Re: ..." subject).

Baseline: ``mailparser.parse_from_bytes(raw)`` over every message, in this
process, timing only the parse calls (messages/second).

Pipeline: ``python -m mailticket -c CONFIG import MAILDIR --json`` as a child
process on a fresh database (SQLite file, or a fresh schema in --postgres URL)
whose schema was created beforehand by ``db upgrade``; wall clock from spawn
to exit, so interpreter start-up is included (the fixed cost of the command
on an empty folder is printed too). Peak RSS is the importing process's own
``ru_maxrss``, collected with ``os.wait4`` on its pid, so each run is measured
by itself (``RUSAGE_CHILDREN`` would be the maximum over all children so far).

With --scale the pipeline also runs on 20,000 messages and the peak RSS of
both sizes is printed (memory should stay flat). No asserts: these are
figures to read, measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.databases import scratch_database

SCALE_MESSAGES = 20_000
ATTACHMENT_BYTES = 100 * 1024
BLOCK = 10  # per block of 10 messages: 1 with an attachment, 3 replies, 4 HTML
QUOTED_LINES = 30  # a reply quotes at most this many lines of its parent
TARGET_RATIO = 0.40
TARGET_RSS_MB = 100.0

SENDERS = [
    ("Alice Customer", "alice@customer.example"),
    ("Bob Buyer", "bob@buyer.example"),
    ("Carol Client", "carol@client.example"),
    ("Dan Dealer", "dan.dealer@shop.example"),
    ("Erin Engineer", "erin@factory.example"),
    ("Frank Fielding", "frank.fielding@mail.example"),
    ("Grace Hopper-Smith", "grace@navy.example"),
    ("Heidi Müller", "heidi.mueller@beispiel.example"),
    ("Ivan Petrov", "ivan@petrov.example"),
    ("Judy Jones", "judy.jones@customer.example"),
    ("Mallory Martin", "mallory@martin.example"),
    ("Niaj Nakamura", "niaj@nakamura.example"),
    ("Olivia Ortiz", "olivia.ortiz@client.example"),
    ("Peggy Park", "peggy@park.example"),
    ("Rupert Rossi", "rupert@rossi.example"),
    ("Sybil Schmidt", "sybil@schmidt.example"),
]
MAILBOXES = ["support@example.com", "help@example.com"]
TOPICS = ["printer", "invoice", "login", "VPN", "laptop", "password reset", "e-mail quota", "license",
          "shipment", "refund", "monitor", "keyboard", "backup", "calendar", "phone", "badge"]
PROBLEMS = ["does not work", "is broken", "keeps failing", "shows an error", "is very slow",
            "stopped working after the update", "needs to be replaced", "was charged twice"]
_VOCABULARY = ("the a it we our since yesterday morning error message screen again please could you help "
         "check urgent team office remote access account order number customer request thanks "
         "restart tried already nothing changed attached log screenshot when open close printer "
         "invoice network server update version window button click report week month")
WORDS = _VOCABULARY.split()


# -- corpus -------------------------------------------------------------------

@dataclass(frozen=True)
class _Sent:
    message_id: str  # without angle brackets
    references: tuple[str, ...]
    subject: str  # without "Re: "
    sender: tuple[str, str]
    mailbox: str
    text: str


@dataclass
class Corpus:
    path: Path
    messages: int = 0
    plain: int = 0
    html: int = 0
    attachments: int = 0
    replies: int = 0
    bytes: int = 0


def _sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(6, 16))
    return " ".join(words).capitalize() + "."


def _paragraphs(rng: random.Random) -> list[str]:
    return [" ".join(_sentence(rng) for _ in range(rng.randint(2, 5))) for _ in range(rng.randint(1, 4))]


def _block_plan(seed: int, block: int) -> tuple[set[int], set[int], set[int]]:
    """Which offsets of this block of 10 get an attachment, are replies, are HTML (exact shares)."""
    rng = random.Random(f"{seed}:block:{block}")
    offsets = list(range(BLOCK))
    attachment = set(rng.sample(offsets, 1))
    # message 0 has nothing to reply to
    replies = set(rng.sample(offsets[1:] if block == 0 else offsets, 3))
    html = set(rng.sample(offsets, 4))
    return attachment, replies, html


def build_message(i: int, seed: int, start: dt.datetime, sent: list[_Sent],
                  attachment: bool, reply: bool, html: bool) -> tuple[EmailMessage, _Sent]:
    rng = random.Random(f"{seed}:message:{i}")
    message_id = f"bench.{seed}.{i}.{rng.getrandbits(48):012x}@{rng.choice(SENDERS)[1].split('@')[1]}"
    paragraphs = _paragraphs(rng)
    if reply:
        parent = sent[rng.randrange(len(sent))]
        sender, mailbox, subject = parent.sender, parent.mailbox, parent.subject
        references = (*parent.references[-9:], parent.message_id)
        quoted = "\n".join("> " + line for line in parent.text.splitlines()[:QUOTED_LINES])
        text = "\n\n".join(paragraphs) + f"\n\nOn {format_datetime(start)}, {sender[0]} wrote:\n{quoted}\n"
    else:
        sender, mailbox = rng.choice(SENDERS), rng.choice(MAILBOXES)
        topic = rng.choice(TOPICS)
        subject = f"{topic[0].upper()}{topic[1:]} {rng.choice(PROBLEMS)} (case {i})"
        references = ()
        text = "Hello,\n\n" + "\n\n".join(paragraphs) + f"\n\nRegards,\n{sender[0]}\n"

    msg = EmailMessage()
    msg["From"] = f"{sender[0]} <{sender[1]}>"
    msg["To"] = mailbox
    msg["Subject"] = f"Re: {subject}" if reply else subject
    msg["Date"] = format_datetime(start + dt.timedelta(minutes=i, seconds=rng.randrange(60)))
    msg["Message-ID"] = f"<{message_id}>"
    if reply:
        msg["In-Reply-To"] = f"<{references[-1]}>"
        msg["References"] = " ".join(f"<{r}>" for r in references)
    msg["MIME-Version"] = "1.0"
    msg.set_content(text)
    if html:
        body = "".join(f"<p>{p}</p>\n" for p in text.split("\n\n"))
        msg.add_alternative(f"<html><head><title>{subject}</title></head><body>\n{body}</body></html>\n",
                            subtype="html")
    if attachment:
        msg.add_attachment(rng.randbytes(ATTACHMENT_BYTES), maintype="application", subtype="octet-stream",
                           filename=f"diagnostics-{i}.bin")
    for n, part in enumerate(msg.walk()):  # fixed boundaries: the email package would draw random ones
        if part.is_multipart():
            part.set_boundary(f"=_bench_{seed}_{i}_{n}")
    return msg, _Sent(message_id, references, subject, sender, mailbox, text)


def generate(path: Path, count: int, seed: int) -> Corpus:
    """Write ``count`` messages into a maildir at ``path``; file names sort in generation order."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    start = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    corpus = Corpus(path)
    sent: list[_Sent] = []
    plan: tuple[set[int], set[int], set[int]] = (set(), set(), set())
    for i in range(count):
        if i % BLOCK == 0:
            plan = _block_plan(seed, i // BLOCK)
        offset = i % BLOCK
        attachment, reply, html = offset in plan[0], offset in plan[1], offset in plan[2]
        msg, record = build_message(i, seed, start, sent, attachment, reply, html)
        sent.append(record)
        raw = msg.as_bytes()
        (path / "new" / f"{i:08d}.bench.localhost").write_bytes(raw)
        corpus.messages += 1
        corpus.html += html
        corpus.plain += not html
        corpus.attachments += attachment
        corpus.replies += reply
        corpus.bytes += len(raw)
    return corpus


def maildir_files(path: Path) -> list[Path]:
    return sorted((path / "new").iterdir())


# -- baseline -----------------------------------------------------------------

def bare_parse(corpus: Corpus) -> float:
    """Seconds spent in mailparser.parse_from_bytes over the corpus (file reads not counted)."""
    import logging

    import mailparser

    logging.getLogger("mailparser").setLevel(logging.ERROR)  # as mailticket does
    elapsed = 0.0
    for file in maildir_files(corpus.path):
        raw = file.read_bytes()
        start = time.perf_counter()
        mailparser.parse_from_bytes(raw)
        elapsed += time.perf_counter() - start
    return elapsed


# -- pipeline -----------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    messages: int
    seconds: float
    peak_rss_mb: float
    summary: dict[str, object]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def _maxrss_mb(ru_maxrss: int) -> float:
    # Linux reports KiB, macOS bytes
    return ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else ru_maxrss / 1024


def run_child(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run one child to completion: (wall seconds, its own peak RSS in MB, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: exit {proc.returncode}\n{stderr[-4000:]}")
    return elapsed, _maxrss_mb(usage.ru_maxrss), stdout


@contextlib.contextmanager
def database(workdir: Path, postgres: str | None) -> Iterator[str]:
    """A database URL nobody else uses: a SQLite file, or a fresh PostgreSQL schema (dropped after)."""
    with scratch_database(workdir, postgres, "mt_bench") as url:
        yield url


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(workdir: Path, database_url: str) -> Path:
    lines = [
        "[database]",
        f"url = {_toml(database_url)}",
        "",
        *(line for i, address in enumerate(MAILBOXES) for line in (
            "[[mailboxes]]", f"address = {_toml(address)}", f'name = "Example {("Support", "Help")[i]}"',
            f'queue = "{("support", "help")[i]}"', "")),
        "[[agents]]",
        'address = "agent@example.com"',
        'name = "An Agent"',
        "",
        "[outbound]",
        f"transport = {_toml('maildir:' + str(workdir / 'outbox'))}",
        'from = "Example Support <support@example.com>"',
        "",
        "[mail]",
        'message_id_domain = "tickets.example.com"',
        "",
        "[log]",
        'level = "warning"',
    ]
    path = workdir / "mailticket.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pipeline(source: Path, postgres: str | None) -> Run:
    """`mailticket import SOURCE --json` in a child, on a fresh database and outbox."""
    with tempfile.TemporaryDirectory(prefix="mt-bench-run-") as tmp, database(Path(tmp), postgres) as url:
        workdir = Path(tmp)
        config = write_config(workdir, url)
        command = [sys.executable, "-m", "mailticket", "-c", str(config)]
        run_child([*command, "db", "upgrade"], workdir)  # not timed
        seconds, rss, stdout = run_child([*command, "import", str(source), "--json"], workdir)
    summary: dict[str, object] = json.loads(stdout)
    messages = summary.get("messages")
    return Run(messages if isinstance(messages, int) else 0, seconds, rss, summary)


# -- report -------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="corpus size (default 2000)")
    parser.add_argument("--scale", action="store_true", help=f"also import {SCALE_MESSAGES:,} messages")
    parser.add_argument("--postgres", metavar="URL", help="run the pipeline on PostgreSQL instead of SQLite")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.messages < 1:
        parser.error("--messages must be at least 1")

    backend = "PostgreSQL" if args.postgres else "SQLite"
    with tempfile.TemporaryDirectory(prefix="mt-bench-corpus-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        corpus = generate(root / "maildir", args.messages, args.seed)
        generated = time.perf_counter() - started
        (root / "empty").mkdir()

        bare_seconds = bare_parse(corpus)
        bare_rate = corpus.messages / bare_seconds
        empty = pipeline(root / "empty", args.postgres)
        run = pipeline(corpus.path, args.postgres)

        big: Run | None = None
        if args.scale:
            large = generate(root / "maildir-scale", SCALE_MESSAGES, args.seed)
            big = pipeline(large.path, args.postgres)

    ratio = run.rate / bare_rate
    print(f"corpus: {corpus.messages} messages, {corpus.bytes / 1e6:.1f} MB in a maildir "
          f"({corpus.plain} plain, {corpus.html} HTML multipart/alternative, "
          f"{corpus.attachments} with a 100 KB attachment, {corpus.replies} replies, "
          f"{len(SENDERS)} senders; generated in {generated:.1f} s)")
    print(f"messages:              {corpus.messages}")
    print(f"bare parse:            {bare_rate:8.0f} msg/s   (mailparser.parse_from_bytes, in-process, "
          f"{bare_seconds:.2f} s)")
    print(f"pipeline ({backend + '):':<12} {run.rate:8.0f} msg/s   (mailticket import --json, child process, "
          f"{run.seconds:.2f} s wall; {empty.seconds:.2f} s of it is the command's fixed cost on an empty folder)")
    print(f"ratio:                 {ratio:8.0%}       pipeline/bare (target >= {TARGET_RATIO:.0%})")
    print(f"peak RSS:              {run.peak_rss_mb:8.1f} MB    importing process (target <= {TARGET_RSS_MB:.0f} MB;"
          f" {empty.peak_rss_mb:.1f} MB on an empty folder)")
    s = run.summary
    unreadable = s.get("unreadable")
    print(f"import summary:        tickets {s.get('tickets_created')}, replies threaded {s.get('replies_threaded')}, "
          f"duplicates {s.get('duplicates')}, quarantined {s.get('quarantined')}, "
          f"unreadable {len(unreadable) if isinstance(unreadable, list) else '?'}")
    if run.messages != corpus.messages:
        print(f"WARNING: the import read {run.messages} messages, the corpus has {corpus.messages}")
    rss_ok = run.peak_rss_mb <= TARGET_RSS_MB
    if big is not None:
        growth = big.peak_rss_mb - run.peak_rss_mb
        print(f"scale:                 peak RSS {run.peak_rss_mb:.1f} MB at {run.messages:,} messages vs "
              f"{big.peak_rss_mb:.1f} MB at {big.messages:,} ({growth:+.1f} MB); "
              f"{big.rate:.0f} msg/s at {big.messages:,}")
        rss_ok = rss_ok and big.peak_rss_mb <= TARGET_RSS_MB
    print(f"targets: throughput {'met' if ratio >= TARGET_RATIO else 'NOT met'} "
          f"({ratio:.0%} vs >= {TARGET_RATIO:.0%}); "
          f"memory {'met' if rss_ok else 'NOT met'} (<= {TARGET_RSS_MB:.0f} MB)")


if __name__ == "__main__":
    main()
