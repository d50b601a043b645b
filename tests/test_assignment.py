"""Choosing the agent for a new ticket: round robin, least open, skills, away agents, and two
instances on PostgreSQL taking turns on one queue."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.app import App
from mailticket.clock import FrozenClock
from mailticket.settings import AgentSettings, QueueSettings, Settings
from mailticket.store import agents as agent_store
from mailticket.store.db import Database
from mailticket.store.models import QueueTurn, Ticket

A, B, C = "alex@example.com", "bob@example.com", "cara@example.com"
BILLING = "bill@example.com"
ROOT = Path(__file__).resolve().parents[1]


def configured(settings: Settings, assignment: str, queue: str = "support") -> Settings:
    """The test settings with three agents (cara knows billing) and one queue using ``assignment``."""
    return dataclasses.replace(
        settings,
        agents=(AgentSettings(A, "Alex"), AgentSettings(B, "Bob", skills=("shipping",)),
                AgentSettings(C, "Cara", skills=("Billing", "refunds"))),
        queues=(QueueSettings(queue, assignment=assignment, agents=(A, B, C)),),
    )


def new_ticket(session: Session, now: dt.datetime, queue: str = "support", tags: Sequence[str] = (),
               assignee: str | None = None, status: str = "new") -> Ticket:
    ticket = Ticket(subject="Help", status=status, queue=queue, mailbox="support@example.com",
                    requester="customer@example.net", assignee=assignee, created_at=now, updated_at=now,
                    tags=list(tags))
    session.add(ticket)
    session.flush()
    return ticket


def assign_one(app: App, queue: str = "support", tags: Sequence[str] = ()) -> str | None:
    from mailticket.rules.assign import Assigner

    now = app.clock.now()
    with app.db.transaction() as s:
        ticket = new_ticket(s, now, queue, tags)
        ticket.assignee = Assigner(app.settings).choose(s, queue, tags, now).agent
        return ticket.assignee


def turn(app: App, queue: str = "support") -> tuple[str, int] | None:
    with app.db.transaction() as s:
        row = s.get(QueueTurn, queue)
        return (row.last_agent, row.turns) if row else None


def test_round_robin_spreads_a_thousand_tickets_evenly(make_app: Callable[..., App], settings: Settings) -> None:
    from mailticket.rules.assign import Assigner

    app = make_app(configured(settings, "round_robin"))
    assigner = Assigner(app.settings)
    now = app.clock.now()
    got: list[str | None] = []
    for _batch in range(20):  # several tickets per transaction, and many transactions
        with app.db.transaction() as s:
            for _ in range(50):
                ticket = new_ticket(s, now)
                choice = assigner.choose(s, "support", [], now)
                assert choice.strategy == "round_robin"
                ticket.assignee = choice.agent
                got.append(choice.agent)
    counts = collections.Counter(got)
    assert set(counts) == {A, B, C}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert sorted(counts.values()) == [333, 333, 334]
    assert got[:4] == [A, B, C, A]  # config order, wrapping
    assert all(x != y for x, y in itertools.pairwise(got))
    assert turn(app) == (got[-1], 1000)


def test_an_away_agent_gets_nothing_until_back(make_app: Callable[..., App], settings: Settings) -> None:
    app = make_app(configured(settings, "round_robin"))
    now = app.clock.now()
    with app.db.transaction() as s:
        agent_store.set_away(s, B, True, now)
    with app.db.transaction() as s:
        assert agent_store.away_agents(s) == {B}
    assert [assign_one(app) for _ in range(4)] == [A, C, A, C]
    with app.db.transaction() as s:
        agent_store.set_away(s, B, False, now)
    with app.db.transaction() as s:
        assert agent_store.away_agents(s) == set()
    assert [assign_one(app) for _ in range(3)] == [A, B, C]  # after C comes A, then B again


def test_away_reason_and_everyone_away(make_app: Callable[..., App], settings: Settings) -> None:
    from mailticket.rules.assign import Assigner

    app = make_app(configured(settings, "round_robin"))
    now = app.clock.now()
    assert assign_one(app) == A
    with app.db.transaction() as s:
        agent_store.set_away(s, B, True, now)
        choice = Assigner(app.settings).choose(s, "support", [], now)
    assert choice.agent == C
    assert choice.reason == f"round_robin in support: {C}, next after {A} ({B} away)"
    with app.db.transaction() as s:
        for agent in (A, B, C):
            agent_store.set_away(s, agent, True, now)
        choice = Assigner(app.settings).choose(s, "support", [], now)
    assert choice.agent is None and choice.strategy == "round_robin"
    assert "every agent of support is away" in choice.reason
    assert turn(app) == (C, 2)  # nobody chosen: the turn did not move


def test_round_robin_restarts_when_the_last_agent_left_the_queue(make_app: Callable[..., App],
                                                                  settings: Settings) -> None:
    app = make_app(configured(settings, "round_robin"))
    now = app.clock.now()
    with app.db.transaction() as s:
        s.add(QueueTurn(queue="support", last_agent="gone@example.com", turns=7, updated_at=now))
    assert assign_one(app) == A
    assert turn(app) == (A, 8)


def test_none_and_unconfigured_queues_assign_nobody(make_app: Callable[..., App], settings: Settings) -> None:
    from mailticket.rules.assign import Assigner

    app = make_app(dataclasses.replace(configured(settings, "none"), queues=(
        QueueSettings("support", "none", (A, B)), QueueSettings("empty", "least_open", ()))))
    now = app.clock.now()
    assigner = Assigner(app.settings)
    with app.db.transaction() as s:
        assert assigner.choose(s, "support", [], now).agent is None
        assert assigner.choose(s, "support", [], now).strategy == "none"
        elsewhere = assigner.choose(s, "help", [], now)
        assert (elsewhere.agent, elsewhere.strategy) == (None, "none")
        assert "not in [[queues]]" in elsewhere.reason
        empty = assigner.choose(s, "empty", [], now)
        assert (empty.agent, empty.strategy) == (None, "least_open")
        assert "no agents" in empty.reason
    assert turn(app) is None and turn(app, "empty") is None


def test_least_open_balances_after_tickets_are_solved(make_app: Callable[..., App], settings: Settings,
                                                      clock: FrozenClock) -> None:
    app = make_app(configured(settings, "least_open"))
    now = clock.now()
    with app.db.transaction() as s:
        alex = [new_ticket(s, now, assignee=A, status=status).number
                for status in ("new", "open", "pending", "open", "new")]
        new_ticket(s, now, assignee=B, status="solved")  # solved and closed work does not count
        new_ticket(s, now, assignee=C, status="closed")
        new_ticket(s, now, queue="help", assignee=B, status="open")  # open work in another queue does
        assert agent_store.open_counts(s, [A, B, C, "nobody@example.com"]) == {
            A: 5, B: 1, C: 0, "nobody@example.com": 0}
    # A has 5, B 1, C 0: C, then B and C tie at 1 (B first in config order), then C...
    assert [assign_one(app) for _ in range(4)] == [C, B, C, B]
    with app.db.transaction() as s:
        assert agent_store.open_counts(s, [A, B, C]) == {A: 5, B: 3, C: 2}
        for number in alex:
            ticket = s.get(Ticket, number)
            assert ticket is not None
            ticket.status = "solved"
    # Now A 0, B 3, C 2: A catches up (winning its tie with C at 2), then C, then the tie at 3.
    assert [assign_one(app) for _ in range(6)] == [A, A, A, C, A, B]
    with app.db.transaction() as s:
        assert agent_store.open_counts(s, [A, B, C]) == {A: 4, B: 4, C: 3}
    assert turn(app) == (B, 10)


def test_least_open_counts_tickets_assigned_earlier_in_the_same_transaction(make_app: Callable[..., App],
                                                                           settings: Settings) -> None:
    from mailticket.rules.assign import Assigner

    app = make_app(configured(settings, "least_open"))
    assigner = Assigner(app.settings)
    now = app.clock.now()
    got = []
    with app.db.transaction() as s:
        for _ in range(6):
            ticket = Ticket(subject="x", status="new", queue="support", mailbox="support@example.com",
                            requester="c@example.net", created_at=now, updated_at=now)
            s.add(ticket)  # not flushed by the caller: choose flushes before it counts
            ticket.assignee = assigner.choose(s, "support", [], now).agent
            got.append(ticket.assignee)
    assert got == [A, B, C, A, B, C]


def test_skills_send_billing_to_the_billing_agent_and_fall_back_otherwise(make_app: Callable[..., App],
                                                                         settings: Settings) -> None:
    from mailticket.rules.assign import Assigner

    app = make_app(configured(settings, "skills"))
    now = app.clock.now()
    assigner = Assigner(app.settings)
    with app.db.transaction() as s:
        for _ in range(3):  # C is the busiest agent, still the only one who knows billing
            new_ticket(s, now, assignee=C, status="open")
        ticket = new_ticket(s, now, tags=["BILLING"])
        choice = assigner.choose(s, "support", ["BILLING"], now)
        ticket.assignee = choice.agent
    assert (choice.agent, choice.strategy) == (C, "skills")
    assert choice.reason == f"skills in support: {C}, skill billing, 3 open"
    with app.db.transaction() as s:
        choice = assigner.choose(s, "support", ["vip", "hardware"], now)
    assert (choice.agent, choice.strategy) == (A, "skills")
    assert "no available agent has a skill for tags [hardware, vip], fell back to least_open" in choice.reason
    with app.db.transaction() as s:
        choice = assigner.choose(s, "support", [], now)
    assert choice.agent == A and "fell back to least_open" in choice.reason
    with app.db.transaction() as s:  # the billing agent away: billing falls back to everyone else
        agent_store.set_away(s, C, True, now)
        choice = assigner.choose(s, "support", ["billing"], now)
    assert choice.agent == A and "fell back" in choice.reason and f"({C} away)" in choice.reason
    with app.db.transaction() as s:  # two skilled agents: the less busy one
        agent_store.set_away(s, C, False, now)
        choice = assigner.choose(s, "support", ["billing", "shipping"], now)
    assert choice.agent == B and "skill shipping" in choice.reason


@pytest.mark.parametrize("assignment", ["round_robin", "least_open", "skills"])
def test_preview_writes_nothing_and_predicts_choose(make_app: Callable[..., App], settings: Settings,
                                                     assignment: str) -> None:
    from mailticket.rules.assign import Assigner

    app = make_app(configured(settings, assignment))
    assigner = Assigner(app.settings)
    with app.db.transaction() as s:  # no turn row yet: preview does not create one
        first = assigner.preview(s, "support", ["refunds"])
    assert turn(app) is None
    assert first.agent == (C if assignment == "skills" else A)
    seen = []
    for _ in range(5):
        before = turn(app)
        with app.db.transaction() as s:
            predicted = assigner.preview(s, "support", ["refunds"])
            again = assigner.preview(s, "support", ["refunds"])
        assert turn(app) == before and predicted == again
        now = app.clock.now()
        with app.db.transaction() as s:
            ticket = new_ticket(s, now, tags=["refunds"])
            chosen = assigner.choose(s, "support", ["refunds"], now)
            ticket.assignee = chosen.agent
        assert chosen == predicted
        seen.append(chosen.agent)
    after = turn(app)
    assert after == (seen[-1], 5)
    expected = {"round_robin": [A, B, C, A, B], "least_open": [A, B, C, A, B], "skills": [C] * 5}
    assert seen == expected[assignment]


# -- two instances on PostgreSQL ------------------------------------------------------------------------

WORKER = """
import sys
from tests.test_assignment import worker
worker(sys.argv[1], int(sys.argv[2]))
"""


def worker(config: str, count: int) -> None:
    """One instance: wait for "go" on stdin, then assign ``count`` tickets, one transaction each,
    printing "TURN AGENT" for each committed ticket."""
    from mailticket.rules.assign import Assigner
    from mailticket.settings import load

    settings = configured(load(Path(config)), "round_robin")
    db = Database.from_url(settings.database_url)
    assigner = Assigner(settings)
    now = dt.datetime.now(dt.UTC)
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    lines = []
    try:
        for _ in range(count):
            with db.transaction() as s:
                ticket = new_ticket(s, now)
                ticket.assignee = assigner.choose(s, "support", [], now).agent
                row = s.get(QueueTurn, "support")
                assert row is not None
                number = row.turns
            lines.append(f"{number} {ticket.assignee}")
    finally:
        db.dispose()
    print("\n".join(lines), flush=True)


def test_two_processes_take_turns_on_postgresql(make_app: Callable[..., App], settings: Settings,
                                                write_config: Callable[..., Path]) -> None:
    if not settings.database_url.startswith("postgresql"):
        # Not a missing part: the suite's PostgreSQL pass (MAILTICKET_TEST_POSTGRES_URL, as .ci/run runs it)
        # runs this test; SQLite has one writer and no row locks to test.
        pytest.skip("PostgreSQL only (row locks across processes): runs in the suite's PostgreSQL pass")
    app = make_app(configured(settings, "round_robin"))
    config = write_config()  # the same database URL (the test's own schema)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(config), "100"], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    try:
        for proc in procs:  # both connected and waiting: start them together
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    turns: dict[int, str] = {}
    for out, _err in outputs:
        mine = [line.split() for line in out.splitlines() if line.strip()]
        assert len(mine) == 100
        for number, agent in mine:
            assert int(number) not in turns, f"turn {number} given twice"
            turns[int(number)] = agent
    assert sorted(turns) == list(range(1, 201))  # every turn exactly once: no two tickets on one turn
    sequence = [turns[n] for n in range(1, 201)]
    assert sequence == [(A, B, C)[i % 3] for i in range(200)]  # strict rotation across both instances
    assert turn(app) == (sequence[-1], 200)
    with app.db.transaction() as s:
        assigned = collections.Counter(s.execute(select(Ticket.assignee)).scalars())
    assert sum(assigned.values()) == 200
    assert max(assigned.values()) - min(assigned.values()) <= 1
