"""One message, one atomic effect: parse -> thread -> classify -> store -> rules -> outbox.

Messages are processed in batches: each message runs inside its own
SAVEPOINT of the batch transaction, so its effects are all-or-nothing; a
message that raises is rolled back to its savepoint and quarantined with
the error while the rest of the batch goes on. A database failure aborts
the whole batch and leaves every message 'new' for the next try.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from mailticket.clock import Clock
from mailticket.domain import (
    Address,
    BounceReport,
    Direction,
    Envelope,
    ParsedMail,
    RawState,
    Role,
    SubjectTag,
    TicketStatus,
    Verdict,
)
from mailticket.errors import TemporaryError
from mailticket.ingest import agentmail
from mailticket.ingest.bounces import parse_bounce
from mailticket.ingest.budget import run_with_budget
from mailticket.ingest.classify import Identity, classify
from mailticket.ingest.commandcheck import check as check_commands
from mailticket.ingest.identity import DmarcResult, dmarc_from_headers
from mailticket.ingest.language import guess_language
from mailticket.ingest.parse import parse
from mailticket.ingest.replies import read_reply
from mailticket.ingest.threads import ThreadMatch, find_thread, merged_target
from mailticket.marks import CSAT_RATINGS, CsatTokenSigner, CsatVote, MessageIdSigner, ReplyTokenSigner
from mailticket.rules.bounces import record_bounce
from mailticket.rules.commands import parse_commands
from mailticket.rules.engine import Engine
from mailticket.rules.facts import Facts
from mailticket.settings import MailboxSettings, Settings
from mailticket.store import repo
from mailticket.store.db import Database
from mailticket.store.models import AttachmentRow, Message, Participant, RawMessage, Ticket

log = logging.getLogger("mailticket.pipeline")

MAX_BATCH_BYTES = 64 * 1024 * 1024
MAX_PARTICIPANTS_PER_MESSAGE = 20
PARSE_BUDGET_SECONDS = 10.0  # one message's parse; over it the message is quarantined
MAX_ADDRESS_CHARS = 254  # RFC 5321's limit for a path: a longer address cannot be written to


@dataclass(frozen=True)
class Outcome:
    raw_id: int
    message_id: str
    state: RawState
    ticket_number: int | None
    decision: str  # "new_ticket", "joined", "quarantined"
    verdict: str
    error: str | None = None


@dataclass(frozen=True)
class _Recognized:
    sender: Address
    is_agent: bool
    verdict: Verdict
    bounce: BounceReport | None
    match: ThreadMatch
    claim: agentmail.AgentClaim | None = None  # the sender is an agent: what their mail proves
    dmarc: DmarcResult | None = None  # a customer's mail, with trusted_authserv_ids set
    csat: CsatVote | None = None  # an accepted satisfaction rating for match.ticket_number
    csat_ignored: str = ""  # why a csat address among the recipients was not taken as a rating


@dataclass(frozen=True)
class _Identity:
    """How far the sender is who they say, for this ticket."""

    verified: bool | None = None  # None: not checked (a customer without trusted_authserv_ids, a new ticket)
    problem: str = ""  # why an agent's mail is not verified, or a customer's "sender not verified" note
    collision_with: int | None = None  # the outbound message that went out after the notification answered
    held: int | None = None  # the held reply this mail answers for (a collision mail's reply address)


@dataclass(frozen=True)
class Preview:
    mail: ParsedMail
    facts: Facts
    thread: ThreadMatch


class Pipeline:
    def __init__(self, db: Database, settings: Settings, clock: Clock, rules: Engine,
                 signer: MessageIdSigner, tokens: ReplyTokenSigner, *, parse_fn: Callable[[bytes], ParsedMail] = parse,
                 parse_budget: float | None = PARSE_BUDGET_SECONDS, csat: CsatTokenSigner | None = None) -> None:
        self._csat = csat  # None: csat addresses are ordinary recipients
        self._parse_fn = parse_fn
        self._parse_budget = parse_budget  # seconds one message's parse may take; None: unbounded
        self._db = db
        self._settings = settings
        self._clock = clock
        self._rules = rules
        self._signer = signer
        self._tokens = tokens
        self._tag = SubjectTag(settings.subject_tag_prefix)
        self._identity = Identity(settings.message_id_domain, settings.loop_token)

    # -- entry points -----------------------------------------------------

    def drain(self, batch_size: int = 50, limit: int | None = None) -> list[Outcome]:
        """Process 'new' messages until none is left (or ``limit`` were done)."""
        outcomes: list[Outcome] = []
        while limit is None or len(outcomes) < limit:
            size = batch_size if limit is None else min(batch_size, limit - len(outcomes))
            with self._db.transaction() as session:
                ids = repo.new_raw_ids(session, size, MAX_BATCH_BYTES)
            if not ids:
                break
            done = self.process(ids)
            outcomes.extend(done)
            if not done:  # all claimed by another instance meanwhile
                break
        return outcomes

    def process(self, raw_ids: Sequence[int]) -> list[Outcome]:
        """Process these raw messages (those still 'new'); returns what happened to each."""
        with self._db.transaction() as session:
            loaded = repo.raw_bytes(session, raw_ids)
        parsed = {raw_id: self._safe_parse(raw) for raw_id, raw in loaded}
        del loaded
        outcomes: list[Outcome] = []
        with self._db.transaction() as session:
            rows = repo.claim_new_raw(session, list(parsed))
            # One query per batch: which Message-IDs were also used by other (different) messages.
            shared = repo.raws_sharing_message_ids(session, {row.message_id for row in rows if row.message_id})
            for row in rows:
                outcomes.append(self._process_one(session, row, parsed[row.id], shared.get(row.message_id, [])))
        for outcome in outcomes:
            self._log(outcome)
        return outcomes

    def replay(self, raw_id: int) -> Outcome | None:
        """Put a quarantined message back to 'new' and process it now."""
        with self._db.transaction() as session:
            row = session.get(RawMessage, raw_id)
            if row is None or row.state != RawState.QUARANTINED:
                return None
            row.state = RawState.NEW
        outcomes = self.process([raw_id])
        return outcomes[0] if outcomes else None

    # -- one message --------------------------------------------------------

    def _safe_parse(self, raw: bytes) -> ParsedMail | BaseException:
        """Parse outside any transaction, within the budget (over it: BudgetExceeded, quarantined)."""
        try:
            return run_with_budget(lambda: self._parse_fn(raw), self._parse_budget)
        except Exception as exc:  # parse() is built not to raise; never trust that with a batch
            return exc

    def _process_one(self, session: Session, row: RawMessage, parsed: ParsedMail | BaseException,
                     shared: list[tuple[int, int | None]]) -> Outcome:
        now = self._clock.now()
        try:
            with session.begin_nested():
                if isinstance(parsed, BaseException):
                    raise parsed
                return self._handle(session, row, parsed, shared)
        except (OperationalError, TemporaryError):
            raise  # the database itself failed: abort the batch, retry later
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            error = _describe(exc)
        except Exception as exc:
            error = _describe(exc)
        row.state = RawState.QUARANTINED
        row.error = error
        row.attempts += 1
        row.processed_at = now
        repo.add_event(session, now, "quarantined", error, raw_id=row.id, message_id=row.message_id)
        return Outcome(row.id, row.message_id, RawState.QUARANTINED, None, "quarantined", "", error)

    def _recognize(self, session: Session, mail: ParsedMail, envelope: Envelope) -> _Recognized:
        """Who sent it, what it is, which ticket it belongs to (reads only)."""
        sender = _sender(mail, envelope.mail_from)
        is_agent = self._settings.is_agent(sender.email)
        verdict = classify(mail, envelope, self._identity)
        bounce = parse_bounce(mail, set(self._settings.support_addresses)) if verdict.kind == "bounce" else None
        returned = bounce.original_message_id if bounce is not None else ""
        cutoff = self._clock.now() - dt.timedelta(days=self._settings.reopen_days)
        match = find_thread(session, mail, sender.email, is_agent, self._tag, self._signer, returned, cutoff)
        agent = self._settings.agent_for(sender.email)
        claim = None
        if agent is not None:
            claim = agentmail.claim_of(session, self._settings, self._tokens, mail, _recipients(mail, envelope),
                                       agent)
            named = merged_target(session, claim.ticket) if claim.ticket is not None else None
            if named is not None and named != claim.ticket:
                claim = dataclasses.replace(claim, ticket=named)  # the token's ticket was merged into this one
            if named is not None and match.ticket_number is None and session.get(Ticket, named) is not None:
                # The signed token (or our notification) names the ticket: it holds even when the agent's
                # client dropped References and the subject tag, and even on a closed ticket.
                match = ThreadMatch(named, f"the {claim.via} of agent {agent.address} names #{named}", "agent")
        review = self._settings.machine_replies == "review_ticket"
        if match.ticket_number is not None and not verdict.is_human and review and agent is None:
            match = ThreadMatch(None, f"{match.reason}; {verdict.kind} mail goes to a new ticket for review "
                                      "(mail.machine_replies = review_ticket)")
        checked = None
        if agent is None and self._settings.identity.trusted_authserv_ids:
            checked = dmarc_from_headers(mail, self._settings.identity.trusted_authserv_ids)
        vote, ignored = None, ""
        if agent is None and self._csat is not None:
            vote = self._csat.find(self._settings.support_addresses, _recipients(mail, envelope))
            if vote is not None:
                ignored = self._csat_refusal(session, vote, sender, verdict, match, checked)
                if ignored:
                    vote = None
                elif match.ticket_number is None:
                    # A mailto link composes a new mail: no References, any subject. The signed address names
                    # the ticket, as an agent's token does.
                    match = ThreadMatch(vote.ticket, f"the signed rating address names #{vote.ticket}", "csat")
        return _Recognized(sender, is_agent, verdict, bounce, match, claim, checked, vote, ignored)

    @staticmethod
    def _csat_refusal(session: Session, vote: CsatVote, sender: Address, verdict: Verdict, match: ThreadMatch,
                      checked: DmarcResult | None) -> str:
        """Why this csat address is not a rating ("" when it is): the mail is then an ordinary one."""
        if not verdict.is_human:
            return f"{verdict.kind} mail is never a rating"
        if not vote.genuine:
            if vote.rating not in CSAT_RATINGS:
                return f"the rating address says {vote.rating or 'no rating'}, not 1 to 5"
            return "the rating address is not signed by this install (forged)"
        ticket = session.get(Ticket, vote.ticket)
        if ticket is None:
            return f"the rating address names #{vote.ticket}, which does not exist"
        if ticket.merged_into is not None:
            return f"the rating address names #{vote.ticket}, which was merged into #{ticket.merged_into}"
        if match.ticket_number is not None and match.ticket_number != vote.ticket:
            return f"the mail belongs to #{match.ticket_number}, its rating address names #{vote.ticket}"
        who = sender.email.lower()
        member = bool(who) and (who == ticket.requester.lower() or session.execute(
            select(Participant.id).where(Participant.ticket_number == ticket.number, Participant.email == who)
            .limit(1)).first() is not None)
        if not member:
            return f"{who or 'the sender'} is neither the requester nor a participant of #{vote.ticket}"
        if checked is not None and checked.verdict not in ("none", "pass"):
            return f"sender not verified: {checked.detail}"
        return ""

    def preview(self, raw: bytes, envelope: Envelope) -> Preview:
        """What processing would see in this message, storing nothing (`mailticket rules test`)."""
        parsed = self._safe_parse(raw)
        if isinstance(parsed, BaseException):
            raise parsed
        with self._db.transaction() as session:
            seen = self._recognize(session, parsed, envelope)
            number = seen.match.ticket_number
            ticket = session.get(Ticket, number) if number is not None else None
            where: tuple[int | None, TicketStatus, str, str]
            if ticket is not None:
                where = (ticket.number, TicketStatus(ticket.status), ticket.mailbox, ticket.queue)
            else:
                mailbox = self._mailbox(parsed, envelope)
                where = (None, TicketStatus.NEW, mailbox.address, mailbox.queue)
            facts = self._facts(session, parsed, seen, envelope, *where)
        return Preview(parsed, facts, seen.match)

    def _handle(self, session: Session, row: RawMessage, mail: ParsedMail,
                shared: list[tuple[int, int | None]]) -> Outcome:
        now = self._clock.now()
        envelope = Envelope(row.source, row.mail_from, tuple(row.recipients), row.peer)
        seen = self._recognize(session, mail, envelope)
        sender, is_agent, verdict, bounce, match = seen.sender, seen.is_agent, seen.verdict, seen.bounce, seen.match
        message_id = mail.message_id or f"sha256:{row.sha256}"

        created = match.ticket_number is None
        if created:
            ticket = self._new_ticket(session, mail, sender, self._mailbox(mail, envelope), verdict, now)
        else:
            # Locked (PostgreSQL) and read fresh: the due sweep may have just closed or reminded it; it skips a
            # ticket locked here, and this waits for one it holds.
            session.flush()
            ticket = session.get_one(Ticket, match.ticket_number, with_for_update=True, populate_existing=True)
            if is_agent and mail.message_id and self._replayed(session, ticket.number, mail.message_id):
                repo.add_event(session, now, "replayed", f"<{mail.message_id}> from agent {sender.email} is already "
                               f"on #{ticket.number}: nothing done again", ticket_number=ticket.number,
                               raw_id=row.id, message_id=message_id)
                row.state, row.processed_at, row.ticket_number, row.error = RawState.DONE, now, ticket.number, None
                return Outcome(row.id, message_id, RawState.DONE, ticket.number, "replayed", str(verdict.kind))
        identity = self._who(session, seen, mail, ticket, created, row)
        message = self._store_message(session, row, mail, message_id, ticket, sender, is_agent, verdict, now,
                                      identity)
        if created or match.joined_by in ("participant", "agent", "tag"):
            # Participants come from the requester and the Cc of a participant's (or agent's) mail,
            # never from a reference alone.
            self._add_participants(session, ticket, mail, sender, is_agent, created)
        repo.add_event(session, now, "classified", f"{verdict.kind}: {verdict.reason}",
                       ticket_number=ticket.number, raw_id=row.id, message_id=message_id)
        repo.add_event(session, now, "new_ticket" if created else "threaded", match.reason,
                       ticket_number=ticket.number, raw_id=row.id, message_id=message_id)
        if seen.csat_ignored:
            repo.add_event(session, now, "csat_ignored", f"not a satisfaction rating: {seen.csat_ignored}",
                           ticket_number=ticket.number, raw_id=row.id, message_id=message_id,
                           data={"reason": seen.csat_ignored})
        self._note_identity(session, row, mail, ticket, message_id, now,
                            [(raw_id, number) for raw_id, number in shared if raw_id < row.id])
        if match.linked_to is not None and created:
            self._link(session, ticket, match.linked_to, sender, message_id, now)
        if bounce is not None:
            record_bounce(session, bounce, ticket.number, message_id, now, self._settings.limits.bounce_suppress_days)
        checked, commands_only = None, False
        if seen.claim is not None and not created and verdict.is_human:
            parsed = parse_commands(message.visible_text)
            if parsed.commands or parsed.errors:
                checked = check_commands(session, self._settings, parsed, ticket, seen.claim.agent)
                commands_only = parsed.only_commands
                if identity.verified:
                    if not checked.errors:
                        message.visible_text = parsed.text.strip()  # what the customer gets: no command lines
                else:
                    identity = dataclasses.replace(identity, problem=f"{identity.problem}; its commands were "
                                                   f"not executed: {', '.join(checked.lines)}")
        facts = self._facts(session, mail, seen, envelope, ticket.number if not created else None,
                            TicketStatus(ticket.status), ticket.mailbox, ticket.queue, ticket_number=ticket.number,
                            identity=identity, text=message.visible_text)
        if checked is not None and identity.verified:
            facts = dataclasses.replace(facts, command_actions=checked.actions, command_errors=checked.errors,
                                        commands_only=commands_only, command_lines=checked.lines)
        if created and not is_agent and facts.language:
            ticket.language = facts.language  # the customer's own language, over the queue's
        self._rules.apply(session, ticket=ticket, message=message, facts=facts, raw_id=row.id, now=now)
        row.state = RawState.DONE
        row.processed_at = now
        row.ticket_number = ticket.number
        row.error = None
        return Outcome(row.id, message_id, RawState.DONE, ticket.number,
                       "new_ticket" if created else "joined", str(verdict.kind))

    def _who(self, session: Session, seen: _Recognized, mail: ParsedMail, ticket: Ticket, created: bool,
                  row: RawMessage) -> _Identity:
        if seen.claim is not None:
            if created:
                return _Identity()  # an agent opening a ticket answers nothing: there is nothing to earn
            problem = agentmail.verify(seen.claim, self._settings, mail, ticket.number, lambda: row.raw)
            if problem:
                return _Identity(False, problem)
            collision = None
            if seen.claim.issued is not None and seen.claim.held is None:
                collision = agentmail.reply_sent_since(session, ticket.number, seen.claim.issued, seen.claim.agent)
            return _Identity(True, "", collision, seen.claim.held)
        if seen.dmarc is not None and seen.dmarc.verdict != "none":
            if seen.dmarc.verdict == "pass":
                return _Identity(True)
            return _Identity(False, f"sender not verified: {seen.dmarc.detail}")
        return _Identity()

    @staticmethod
    def _replayed(session: Session, ticket: int, message_id: str) -> bool:
        return session.execute(
            select(Message.id).where(Message.ticket_number == ticket, Message.message_id == message_id,
                                     Message.direction == Direction.IN).limit(1)
        ).first() is not None

    def _facts(self, session: Session, mail: ParsedMail, seen: _Recognized, envelope: Envelope,
               joined: int | None, status: TicketStatus, mailbox: str, queue: str,
               ticket_number: int | None = None, identity: _Identity | None = None, text: str = "") -> Facts:
        """What the rules may look at: ``joined`` is the existing ticket the message joins (None: a new one),
        ``ticket_number`` the ticket it is stored on (excluded from "known customer")."""
        sender = seen.sender
        recipients = _recipients(mail, envelope)
        known = False
        if sender.email:
            query = select(Participant.id).where(Participant.email == sender.email)
            if ticket_number is not None:
                query = query.where(Participant.ticket_number != ticket_number)
            known = session.execute(query.limit(1)).first() is not None
        return Facts(
            mail=mail,
            verdict=seen.verdict,
            sender=sender,
            created=joined is None,
            status=status,
            sender_is_agent=seen.is_agent,
            sender_is_support=bool(sender.email) and self._settings.mailbox_for(sender.email) is not None,
            imported=envelope.source == "import",
            recipients=recipients,
            known_customer=known,
            mailbox=mailbox,
            queue=queue,
            acknowledge_new=self._settings.acknowledge_new,
            verified=identity.verified if identity else None,
            identity_problem=identity.problem if identity else "",
            collision_with=identity.collision_with if identity else None,
            held=identity.held if identity else None,
            text=text,
            language=guess_language(mail.header("Content-Language"), text),
            csat_rating=seen.csat.rating if seen.csat is not None else None,
            csat_comment=text.strip() if seen.csat is not None else "",
        )

    def _mailbox(self, mail: ParsedMail, envelope: Envelope) -> MailboxSettings:
        candidates = [*envelope.recipients, *(a.email for a in mail.to), *(a.email for a in mail.cc)]
        for address in candidates:
            mailbox = self._settings.mailbox_for(address)
            if mailbox is not None:
                return mailbox
        return self._settings.mailboxes[0]

    def _new_ticket(self, session: Session, mail: ParsedMail, sender: Address, mailbox: MailboxSettings,
                    verdict: Verdict, now: dt.datetime) -> Ticket:
        ticket = Ticket(
            subject=self._tag.strip(mail.subject) or "(no subject)",
            status=TicketStatus.NEW,
            priority="normal",
            tags=[],
            queue=mailbox.queue,
            mailbox=mailbox.address,
            requester=sender.email,
            requester_name=sender.name,
            needs_review=not verdict.is_human,
            created_at=now,
            updated_at=now,
        )
        session.add(ticket)
        session.flush()
        return ticket

    def _store_message(self, session: Session, row: RawMessage, mail: ParsedMail, message_id: str, ticket: Ticket,
                       sender: Address, is_agent: bool, verdict: Verdict, now: dt.datetime,
                       identity: _Identity) -> Message:
        reply = read_reply(mail.text, mail.html, mail.text_from_html)
        message = Message(
            ticket_number=ticket.number,
            raw_id=row.id,
            direction=Direction.IN,
            message_id=message_id,
            in_reply_to=list(mail.in_reply_to),
            references=list(mail.references),
            from_addr=sender.email,
            from_name=sender.name,
            from_header=mail.from_header[:2000],
            to_addrs=[a.email for a in mail.to],
            cc_addrs=[a.email for a in mail.cc],
            subject=mail.subject,
            date=mail.date,
            text=mail.text,
            visible_text=reply.text,
            quote_only=reply.quote_only,
            html=mail.html,
            author_role=Role.AGENT if is_agent else Role.CUSTOMER,
            verdict=verdict.kind,
            verdict_reason=verdict.reason,
            created_at=now,
            internal=is_agent and identity.verified is False,  # an unverified agent's mail is a note, never sent
            verified=identity.verified,
        )
        session.add(message)
        for attachment in mail.attachments:
            sha = repo.store_blob(session, attachment.content)
            message.attachments.append(AttachmentRow(
                filename=attachment.filename,
                original_filename=attachment.original_filename[:1000],
                content_type=attachment.content_type[:255],
                size=len(attachment.content),
                sha256=sha,
                inline=attachment.inline,
                content_id=attachment.content_id[:1000],
            ))
        return message

    def _add_participants(self, session: Session, ticket: Ticket, mail: ParsedMail, sender: Address,
                          is_agent: bool, created: bool) -> None:
        support = self._settings.support_addresses
        wanted: list[tuple[Address, str]] = []
        if sender.email and sender.email not in support and not is_agent:
            wanted.append((sender, "requester" if created else "cc"))
        others = [*mail.to, *mail.cc] if self._settings.cc_participants else []
        for address in others[:MAX_PARTICIPANTS_PER_MESSAGE]:
            # Our own addresses and agents never become participants: an agent's reply would Cc them.
            if address.email in support or self._settings.mailbox_for(address.email) is not None:
                continue
            if self._settings.is_agent(address.email):
                continue
            wanted.append((address, "cc"))
        existing: set[str] = set() if created else set(session.execute(
            select(Participant.email).where(Participant.ticket_number == ticket.number)
        ).scalars())
        for address, role in wanted:
            if address.email and address.email not in existing and len(address.email) <= MAX_ADDRESS_CHARS:
                session.add(Participant(ticket_number=ticket.number, email=address.email, name=address.name,
                                        role=role))
                existing.add(address.email)

    def _note_identity(self, session: Session, row: RawMessage, mail: ParsedMail, ticket: Ticket,
                       message_id: str, now: dt.datetime, earlier: list[tuple[int, int | None]]) -> None:
        """Events for what an agent must know about who sent this: an unknown sender, a reused Message-ID."""
        if mail.from_problem:
            repo.add_event(session, now, "sender_unknown",
                           f"From: {mail.from_header[:300]!r} does not parse strictly ({mail.from_problem}): "
                           "no mail goes to a guessed address", ticket_number=ticket.number, raw_id=row.id,
                           message_id=message_id)
        if earlier:
            others = ", ".join(f"raw #{raw_id}" + (f" (ticket #{number})" if number else "")
                               for raw_id, number in earlier[:5])
            repo.add_event(session, now, "message_id_reused",
                           f"Message-ID <{row.message_id}> was already used by a different message ({others}): "
                           "stored as a message of its own", ticket_number=ticket.number, raw_id=row.id,
                           message_id=message_id)

    def _link(self, session: Session, ticket: Ticket, other: int, sender: Address, message_id: str,
              now: dt.datetime) -> None:
        ticket.linked_to = other
        who = sender.email or "an unknown sender"
        repo.add_event(session, now, "linked", f"linked to #{other}: this mail references #{other}, but {who} "
                       f"is not a participant there", ticket_number=ticket.number, message_id=message_id)
        repo.add_event(session, now, "linked", f"#{ticket.number} was opened by {who} with a mail that references "
                       f"this ticket; not joined: {who} is not a participant", ticket_number=other,
                       message_id=message_id)

    def _log(self, outcome: Outcome) -> None:
        ticket = f"#{outcome.ticket_number}" if outcome.ticket_number is not None else "-"
        if outcome.state == RawState.QUARANTINED:
            log.warning("message <%s> raw=%d quarantined: %s", outcome.message_id, outcome.raw_id,
                        (outcome.error or "").splitlines()[0] if outcome.error else "")
        else:
            log.info("message <%s> raw=%d ticket=%s decision=%s verdict=%s", outcome.message_id,
                     outcome.raw_id, ticket, outcome.decision, outcome.verdict)


def _recipients(mail: ParsedMail, envelope: Envelope) -> tuple[str, ...]:
    """Envelope recipients, then To and Cc; lower-cased, each once."""
    every = [*envelope.recipients, *(a.email for a in mail.to), *(a.email for a in mail.cc)]
    return tuple(dict.fromkeys(r.strip("<>").lower() for r in every if r))


def _sender(mail: ParsedMail, envelope_from: str) -> Address:
    """From, parsed strictly; the envelope sender only when the mail has no From at all."""
    if mail.from_ is not None:
        return mail.from_
    if mail.from_problem or mail.from_header:
        return Address("", "")  # sender unknown: never a guessed address
    return Address("", envelope_from.strip("<>").lower())


def _describe(exc: BaseException) -> str:
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3)
    return f"{type(exc).__name__}: {exc}\n" + "".join(frames[-3:])[-2000:]

