"""Is this agent's mail really the agent's answer to this ticket? Identity is earned, not claimed.

A mail counts as an agent's answer only when its From is an agent's address or
alias AND it carries proof bound to that agent and ticket — the signed token of a
notification's reply address (``support+<token>@``), or an In-Reply-To naming the
notification we sent to that agent — AND, with ``[identity] agent_checks`` holding
"dmarc", the sender's domain vouched for it (a trusted Authentication-Results, else
a DKIM signature we verify ourselves). Anything less is a claim: stored as an
unverified internal note, relayed nowhere, executed never.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.domain import Direction, ParsedMail
from mailticket.ingest.identity import dkim_verify, dmarc_from_headers
from mailticket.marks import ReplyTokenSigner
from mailticket.settings import AgentSettings, Settings
from mailticket.store.models import Message, OutboxRow

ANSWERABLE = ("agent_notify", "collision")  # our mails an agent answers


@dataclass(frozen=True)
class AgentClaim:
    agent: AgentSettings
    ticket: int | None  # the ticket the proof names (None: no usable proof)
    issued: dt.datetime | None  # when the notification (or collision mail) answered was made
    held: int | None  # a held reply's message id (answering a collision mail)
    via: str  # "token", "notification" or "none"
    problem: str  # "" when the proof holds (before the DMARC check and the ticket match)


def claim_of(session: Session, settings: Settings, tokens: ReplyTokenSigner, mail: ParsedMail,
             recipients: Iterable[str], agent: AgentSettings) -> AgentClaim:
    """What the mail proves about itself: a token in a recipient address, else a notification it answers."""
    found = tokens.find(settings.support_addresses, recipients)
    if found is not None:
        _ext, token = found
        if token is None:
            return AgentClaim(agent, None, None, None, "token",
                              "its reply address carries a token that does not verify (forged or garbled)")
        if not tokens.bound_to(token, token.ticket, agent.address):
            return AgentClaim(agent, token.ticket, token.issued, None, "token",
                              f"its reply address was made for another agent, not {agent.address}")
        return AgentClaim(agent, token.ticket, token.issued, token.held, "token", "")
    refs = [*mail.in_reply_to, *reversed(mail.references)][:200]
    if refs:
        rows = session.execute(
            select(OutboxRow.message_id, OutboxRow.to_addr, OutboxRow.ticket_number, OutboxRow.created_at)
            .where(OutboxRow.message_id.in_(refs), OutboxRow.kind.in_(ANSWERABLE))
        ).all()
        by_id = {row[0]: row for row in rows}
        for ref in refs:
            row = by_id.get(ref)
            if row is None:
                continue
            if agent.owns(row[1]):
                return AgentClaim(agent, row[2], row[3], None, "notification", "")
            return AgentClaim(agent, row[2], row[3], None, "notification",
                              f"it answers a notification sent to {row[1]}, not to {agent.address}")
    return AgentClaim(agent, None, None, None, "none",
                      "it carries no reply token (it was not sent to the reply address of a notification)")


def verify(claim: AgentClaim, settings: Settings, mail: ParsedMail, ticket: int,
           raw: Callable[[], bytes]) -> str:
    """"" when the agent's mail to ``ticket`` is verified, else why not (one line, for the agent)."""
    if claim.problem:
        return claim.problem
    if claim.ticket != ticket:
        return f"its reply token is for ticket #{claim.ticket}, but the mail answers ticket #{ticket}"
    if "dmarc" in settings.identity.agent_checks:
        result = dmarc_from_headers(mail, settings.identity.trusted_authserv_ids)
        if result.verdict == "none":
            domain = (mail.from_.email if mail.from_ else "").rpartition("@")[2]
            result = dkim_verify(raw(), domain)
        if result.verdict != "pass":
            return f"its sender's domain did not vouch for it (DMARC/DKIM {result.verdict}: {result.detail})"
    return ""


def reply_sent_since(session: Session, ticket: int, since: dt.datetime, agent: AgentSettings) -> int | None:
    """The outbound message of a public reply another agent (or an admin) sent on the ticket after ``since``."""
    rows = session.execute(
        select(OutboxRow.message_id, Message.from_addr)
        .outerjoin(Message, (Message.raw_id == OutboxRow.caused_by) & (Message.direction == Direction.IN))
        .where(OutboxRow.ticket_number == ticket, OutboxRow.kind == "agent_reply", OutboxRow.created_at > since)
        .order_by(OutboxRow.id.desc())
    ).all()
    for message_id, author in rows:
        if author is not None and agent.owns(author):
            continue  # the same agent's earlier answer to the same notification is no collision
        return session.execute(
            select(Message.id).where(Message.message_id == message_id, Message.direction == Direction.OUT)
        ).scalar()
    return None
