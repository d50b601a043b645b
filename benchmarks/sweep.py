"""The due sweep: its cost grows with the due rows, not with the table.

    python benchmarks/sweep.py [--tickets 1000000] [--due 1000] [--postgres URL]

Two databases, built in this run: a large one (``--tickets`` tickets, of which ``--due`` are due)
and a small one (``--due`` tickets in all, every one due). The due tickets are the same in both:
pending since eight days, so each sweep closes them and queues their ``pending_closed`` notice;
the rest of the large table is open tickets whose ``wake_at`` lies in the future or is empty. The
sweep (``DueSweep.run``, as `serve` and `tick` run it) is timed on each, from the first query to
the last commit; the baseline is the small database, and the figure to read is the ratio
large/small (1.0 = the table's size costs nothing; the index on ``wake_at`` should keep it near 1).
Rows are inserted with bulk INSERTs (not timed). No asserts: figures to read, measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert

from mailticket.app import App
from mailticket.clock import FrozenClock
from mailticket.settings import load
from mailticket.store.models import SweepState, Ticket
from tests.databases import scratch_database

NOW = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
CHUNK = 20_000


def config(directory: Path, url: str) -> Path:
    path = directory / "mailticket.toml"
    path.write_text(f"""
[database]
url = "{url}"

[[mailboxes]]
address = "support@example.com"
name = "Example Support"

[outbound]
transport = "maildir:{directory / 'outbox'}"

[smtp]
listen = []
""", encoding="utf-8")
    return path


def rows(start: int, count: int, due: bool, plan: str) -> list[dict[str, object]]:
    created = NOW - dt.timedelta(days=9)
    result: list[dict[str, object]] = []
    for i in range(start, start + count):
        row: dict[str, object] = {
            "subject": f"Ticket {i}", "priority": "normal", "queue": "support", "mailbox": "support@example.com",
            "requester": f"customer{i}@example.net", "requester_name": "", "needs_review": False,
            "created_at": created, "updated_at": created, "tags": [], "pauses": [], "paused_at": None,
            "sla_plan": plan}
        if due:
            row.update(status="pending", paused_at=NOW - dt.timedelta(days=8),
                       wake_at=NOW - dt.timedelta(days=1))
        else:
            # open tickets with something planned later (half of them) or nothing at all
            row.update(status="open", wake_at=NOW + dt.timedelta(hours=1 + i % 500) if i % 2 else None)
        result.append(row)
    return result


def build(directory: Path, url: str, total: int, due: int) -> App:
    app = App(load(config(directory, url)), clock=FrozenClock(NOW))
    app.prepare(upgrade=True)
    # The due tickets spread through the table, not all at its start.
    every = max(1, total // due)
    made = 0
    with app.db.engine.begin() as connection:
        while made < total:
            count = min(CHUNK, total - made)
            batch: list[dict[str, object]] = []
            for offset in range(count):
                number = made + offset
                batch.extend(rows(number, 1, due=number % every == 0 and number // every < due,
                                  plan=app.keeper.plan_key))
            connection.execute(insert(Ticket), batch)
            made += count
        # planned under the current configuration, as a running install's tickets are
        connection.execute(insert(SweepState), [{"name": "plan_key", "value": app.keeper.plan_key, "updated_at": NOW}])
    return app


def timed_sweep(app: App) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    result = app.sweep.run(limit=10**9)
    return time.perf_counter() - started, result.done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument("--postgres", help="a PostgreSQL URL: each database is a fresh schema there")
    args = parser.parse_args()
    figures: dict[str, tuple[int, float, dict[str, int]]] = {}
    for name, total in (("small", args.due), ("large", args.tickets)):
        with tempfile.TemporaryDirectory() as tmp, scratch_database(Path(tmp), args.postgres, "bench_sweep") as url:
            started = time.perf_counter()
            app = build(Path(tmp), url, total, args.due)
            print(f"{name}: {total:,} tickets built in {time.perf_counter() - started:.1f} s", flush=True)
            try:
                seconds, done = timed_sweep(app)
            finally:
                app.close()
            figures[name] = (total, seconds, done)
    small, large = figures["small"], figures["large"]
    database = "PostgreSQL" if args.postgres else "SQLite"
    print(f"\ndue sweep on {database}, {args.due:,} due tickets each (closed, with a pending_closed notice):")
    for name, (total, seconds, done) in figures.items():
        print(f"  {name:<6} {total:>10,} tickets: {seconds:7.3f} s  ({args.due / seconds:,.0f} due tickets/s)  "
              f"done {done}")
    print(f"  ratio large/small: {large[1] / small[1]:.2f}x (the cost follows the due rows when near 1)")


if __name__ == "__main__":
    main()
