"""Which agent gets a new ticket in a queue: the queue's ``assignment`` strategy.

``none`` assigns nobody. The others choose among the queue's agents in config order
who are not away:

* ``round_robin``: the first one after the agent who got the queue's last ticket (wrapping).
* ``least_open``: the one with the fewest unsolved tickets (new, open, pending); ties go
  to the earlier in config order.
* ``skills``: least_open among those whose skills meet the ticket's tags; when nobody's
  do, least_open among all (and the reason says so).

``choose`` locks the queue's QueueTurn row for the rest of the transaction (FOR UPDATE on
PostgreSQL; SQLite's writer lock does the same), so two instances take turns one after
the other: never two tickets on one turn, and least_open counts include the ticket the
other instance assigned (visible once it commits, which is when the lock is released).
The caller sets ``ticket.assignee``; ``preview`` makes the same decision and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mailticket.settings import QueueSettings, Settings
from mailticket.store import agents as store

STRATEGIES = ("none", "round_robin", "least_open", "skills", "explicit")


@dataclass(frozen=True)
class Choice:
    agent: str | None  # primary address, or None (nobody available / assignment "none" / queue not configured)
    strategy: str  # "none", "round_robin", "least_open", "skills", "explicit"
    reason: str  # one line for the event log


class Assigner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._skills = {a.address: frozenset(s.lower() for s in a.skills) for a in settings.agents}

    def choose(self, session: Session, queue: str, tags: Sequence[str], now: dt.datetime) -> Choice:
        """Decide, and advance the queue's turn (locked until the transaction ends)."""
        return self._decide(session, queue, tags, now)

    def preview(self, session: Session, queue: str, tags: Sequence[str]) -> Choice:
        """The decision ``choose`` would make now; writes and locks nothing."""
        return self._decide(session, queue, tags, None)

    # -- the decision -------------------------------------------------------

    def _decide(self, session: Session, queue: str, tags: Sequence[str], now: dt.datetime | None) -> Choice:
        config = self.settings.queue_for(queue)
        if config is None:
            return Choice(None, "none", f"queue {queue} is not in [[queues]]: nobody assigned")
        strategy = config.assignment
        if strategy == "none":
            return Choice(None, "none", f"assignment in {queue} is none: nobody assigned")
        if not config.agents:
            return Choice(None, strategy, f"{strategy} in {queue}: no agents")
        if now is not None:
            session.flush()  # tickets the caller made earlier in this transaction count too
        away = store.away_agents(session)
        candidates = [a for a in config.agents if a not in away]
        away_note = _away_note(config, away)
        if not candidates:
            return Choice(None, strategy, f"{strategy} in {queue}: every agent of {queue} is away")
        # Lock (or, for a preview, just read) the turn row before counting: the other
        # instance's ticket is committed by the time we hold the lock.
        turn = store.lock_turn(session, queue, now) if now is not None else store.peek_turn(session, queue)
        if strategy == "round_robin":
            agent, why = _next_after(config, candidates, turn.last_agent if turn else "")
        elif strategy == "least_open":
            agent, why = _least_open(candidates, store.open_counts(session, candidates))
        else:  # skills
            agent, why = self._by_skills(session, candidates, tags)
        if turn is not None and now is not None:
            turn.last_agent = agent
            turn.turns += 1
            turn.updated_at = now
        return Choice(agent, strategy, f"{strategy} in {queue}: {agent}, {why}{away_note}")

    def _by_skills(self, session: Session, candidates: list[str], tags: Sequence[str]) -> tuple[str, str]:
        wanted = {t.lower() for t in tags}
        skilled = [a for a in candidates if self._skills.get(a, frozenset()) & wanted]
        if not skilled:
            shown = ", ".join(sorted(wanted)) or "none"
            agent, why = _least_open(candidates, store.open_counts(session, candidates))
            return agent, f"no available agent has a skill for tags [{shown}], fell back to least_open: {why}"
        agent, why = _least_open(skilled, store.open_counts(session, skilled))
        matched = ", ".join(sorted(self._skills.get(agent, frozenset()) & wanted))
        return agent, f"skill {matched}, {why}"


def _next_after(config: QueueSettings, candidates: list[str], last: str) -> tuple[str, str]:
    """The first candidate after ``last`` in the queue's configured order, wrapping."""
    if last not in config.agents:
        return candidates[0], "first turn" if not last else f"first in order ({last} no longer in the queue)"
    order = list(config.agents)
    start = order.index(last)
    available = set(candidates)
    for step in range(1, len(order) + 1):
        agent = order[(start + step) % len(order)]
        if agent in available:
            return agent, f"next after {last}"
    raise AssertionError("candidates is a non-empty subset of the queue's agents")


def _least_open(candidates: list[str], counts: Mapping[str, int]) -> tuple[str, str]:
    """Fewest unsolved tickets; ties to the earlier in config order (min keeps the first)."""
    agent = min(candidates, key=lambda a: counts.get(a, 0))
    others = ", ".join(f"{a} {counts.get(a, 0)}" for a in candidates if a != agent)
    return agent, f"{counts.get(agent, 0)} open" + (f" (others: {others})" if others else "")


def _away_note(config: QueueSettings, away: set[str]) -> str:
    gone = [a for a in config.agents if a in away]
    return f" ({', '.join(gone)} away)" if gone else ""
