"""IMAP intake: `mailticket poll --once` on a backlog in Dovecot, beside the same run's baselines.

    python benchmarks/imap.py [--messages 5000] [--after seen|move] [--postgres URL] [--seed 1]

Needs Dovecot (Debian package dovecot-imapd) and root, like the IMAP tests:
a private instance is started with tests/dovecot.py on a free loopback port.

The backlog is the ingest benchmark's generated corpus (plain and HTML
messages, 10% with a 100 KB attachment, 30% replies), delivered into the
INBOX maildir before Dovecot starts. Three figures, each on the same messages:

- bare fetch: imapclient, SELECT INBOX, UID SEARCH ALL, UID FETCH BODY.PEEK[]
  in batches of 100 (the messages are read and dropped) - what IMAP costs;
- pipeline: the same messages handed to the inbox as live mail (source "pipe",
  so acknowledgements are queued as for polled mail; `import` would not queue
  them), committed and processed in batches of 200 as the poller does, in a
  child process on a fresh database - the pipeline's own cost, without IMAP;
- poll: `mailticket poll --once` on a fresh database - IMAP plus pipeline.

The bare fetch runs first, so Dovecot's index is built before anything is
timed against the pipeline. Target: poll takes at most 15% longer than the
pipeline alone. The peak RSS of the polling process is printed too (memory
must not grow with the backlog). No asserts: figures to read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from ingest import database, generate, maildir_files, run_child, write_config  # noqa: E402

from tests.dovecot import Dovecot  # noqa: E402

TARGET_OVERHEAD = 0.15
FETCH_BATCH = 100
PIPE_BATCH = 200  # as the poller's default fetch_batch


def bare_fetch(server: Dovecot) -> tuple[int, float, int]:
    """(messages, seconds, bytes) for fetching every message of INBOX with imapclient."""
    client = server.client()
    try:
        start = time.perf_counter()
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        total = 0
        for i in range(0, len(uids), FETCH_BATCH):
            for data in client.fetch(uids[i : i + FETCH_BATCH], ["BODY.PEEK[]"]).values():
                total += len(data[b"BODY[]"])
        return len(uids), time.perf_counter() - start, total
    finally:
        client.logout()


def pipe_child(config: str, maildir: str) -> None:
    """Child process body for --pipe-child: live-mail intake of every file in the maildir, no IMAP."""
    from mailticket.app import App
    from mailticket.domain import Envelope
    from mailticket.settings import load

    app = App(load(Path(config)))
    app.prepare()
    address = app.settings.mailboxes[-1].address
    files = maildir_files(Path(maildir))
    for i in range(0, len(files), PIPE_BATCH):
        items = [(f.read_bytes(), Envelope("pipe", "", (address,))) for f in files[i : i + PIPE_BATCH]]
        accepted = app.inbox.accept_many(items)
        app.pipeline.process([a.raw_id for a in accepted])
    app.close()


def pipe(corpus: Path, postgres: str | None) -> tuple[float, float]:
    """The pipeline alone on live mail, in a child on a fresh database: (seconds, peak RSS MB)."""
    with tempfile.TemporaryDirectory(prefix="mt-bench-pipe-") as tmp, database(Path(tmp), postgres) as url:
        workdir = Path(tmp)
        config = write_config(workdir, url)
        run_child([sys.executable, "-m", "mailticket", "-c", str(config), "db", "upgrade"], workdir)
        seconds, rss, _ = run_child([sys.executable, __file__, "--pipe-child", str(config), str(corpus)], workdir)
        return seconds, rss


def poll(server: Dovecot, after: str, postgres: str | None) -> tuple[float, float, str]:
    """`mailticket poll --once --json` on a fresh database: (seconds, peak RSS MB, stdout)."""
    with tempfile.TemporaryDirectory(prefix="mt-bench-imap-") as tmp, database(Path(tmp), postgres) as url:
        workdir = Path(tmp)
        config = write_config(workdir, url)
        (workdir / "imap-password").write_text(server.password)
        move = 'after = "move:Processed"\n' if after == "move" else 'after = "seen"\n'
        with config.open("a") as handle:
            handle.write(  # attaches to the last [[mailboxes]] entry
                f'\n[mailboxes.imap]\nhost = "{server.host}"\nport = {server.port}\ntls = "none"\ninsecure = true\n'
                f'username = "{server.user}"\npassword_file = "{workdir / "imap-password"}"\n{move}'
            )
        command = [sys.executable, "-m", "mailticket", "-c", str(config)]
        run_child([*command, "db", "upgrade"], workdir)  # not timed
        return run_child([*command, "poll", "--once", "--json"], workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--after", choices=["seen", "move"], default="seen",
                        help="what the poller does after commit (default seen: the backlog stays for reruns)")
    parser.add_argument("--postgres", metavar="URL", help="run the pipeline on PostgreSQL instead of SQLite")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pipe-child", nargs=2, metavar=("CONFIG", "MAILDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipe_child:
        pipe_child(*args.pipe_child)
        return
    reason = Dovecot.available()
    if reason:
        raise SystemExit(f"benchmarks/imap.py needs Dovecot: {reason}")

    with tempfile.TemporaryDirectory(prefix="mt-bench-imap-corpus-") as tmp:
        root = Path(tmp)
        corpus = generate(root / "maildir", args.messages, args.seed)
        server = Dovecot(root / "dovecot")
        for file in maildir_files(corpus.path):
            server.deliver_to_maildir("INBOX", file.read_bytes())
        server.start()
        try:
            fetched, fetch_seconds, fetched_bytes = bare_fetch(server)
            pipe_seconds, pipe_rss = pipe(corpus.path, args.postgres)
            poll_seconds, poll_rss, stdout = poll(server, args.after, args.postgres)
        finally:
            server.close()

    import json

    (report,) = json.loads(stdout)
    overhead = poll_seconds / pipe_seconds - 1
    print(f"backlog:        {fetched} messages, {fetched_bytes / 1e6:.1f} MB in Dovecot's INBOX")
    print(f"bare fetch:     {fetched / fetch_seconds:8.0f} msg/s   (imapclient BODY.PEEK[], batches of {FETCH_BATCH}, "
          f"{fetch_seconds:.2f} s)")
    print(f"pipeline:       {fetched / pipe_seconds:8.0f} msg/s   (the same messages as live mail, no IMAP, "
          f"{pipe_seconds:.2f} s)")
    print(f"poll --once:    {fetched / poll_seconds:8.0f} msg/s   ({poll_seconds:.2f} s; "
          f"fetched {report.get('fetched')}, new {report.get('new')}, quarantined {report.get('quarantined')}, "
          f"after = {args.after})")
    print(f"IMAP overhead:  {overhead:+8.1%}       poll vs pipeline alone (target <= +{TARGET_OVERHEAD:.0%})")
    print(f"peak RSS:       {poll_rss:8.1f} MB    polling process (pipeline alone: {pipe_rss:.1f} MB)")
    print(f"target: {'met' if overhead <= TARGET_OVERHEAD else 'NOT met'}")


if __name__ == "__main__":
    main()
