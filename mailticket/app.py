"""The composition root: the one place that builds and wires everything, and runs it.

``App`` builds every part (storage, templates, rules, pipeline, outbox, and for
`serve` the listeners, pollers, heartbeat and the ticking jobs), starts them in
order and stops them in reverse. CLI commands use it as a context manager::

    with App.open(settings) as app:
        ...

and never build a component themselves. The rule list is made here
(``rule_list``): the order in which rules run is a decision of the whole
application, not of any one stage.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable, Sequence
from email.utils import parseaddr
from types import FrameType, TracebackType
from typing import IO, Any
from urllib.parse import quote

from mailticket.clock import Clock, SystemClock
from mailticket.domain import Envelope, RawState
from mailticket.errors import CantCreateError, ConfigError, SchemaError, TemporaryError
from mailticket.ingest.committer import GroupCommitter
from mailticket.ingest.inbox import Inbox
from mailticket.ingest.pipeline import Pipeline
from mailticket.marks import CsatTokenSigner, MessageIdSigner, ReplyTokenSigner
from mailticket.outbox.queue import OutboxWriter
from mailticket.outbox.render import RatingLink, Renderer
from mailticket.outbox.sender import Sender
from mailticket.outbox.transport import Transport, make_transport
from mailticket.rules.admin import Admin, Changes
from mailticket.rules.assign import Assigner
from mailticket.rules.base import Rule
from mailticket.rules.builtin import builtin_rules
from mailticket.rules.engine import Engine
from mailticket.rules.mailing import Mailer
from mailticket.rules.routing import RoutingRule
from mailticket.schedule.heartbeat import INTERVAL as HEARTBEAT_INTERVAL
from mailticket.schedule.heartbeat import Heartbeat
from mailticket.schedule.sweep import DueSweep
from mailticket.schedule.ticker import Ticker
from mailticket.settings import IdentitySettings, MailboxSettings, Settings
from mailticket.sla.clocks import Timekeeper
from mailticket.sources.imap import ImapPoller
from mailticket.sources.imaprun import ImapRunner, poll_once
from mailticket.sources.smtp import SmtpListener
from mailticket.sources.status import StatusBoard
from mailticket.store import agents, repo
from mailticket.store import paths as state_folders
from mailticket.store.db import Database
from mailticket.store.models import Ticket

log = logging.getLogger("mailticket")

TEMPLATES = ["ack_new", "agent_notify", "agent_reply", "identity_refused", "collision", "command_error",
             "command_receipt", "sla_reminder", "sla_escalation", "pending_reminder", "pending_closed",
             "solved_closed", "csat_survey"]
INBOX_JOB = "drain_inbox"
OUTBOX_JOB = "flush_outbox"
HEARTBEAT_JOB = "heartbeat"
SWEEP_JOB = "due_sweep"
INBOX_BATCH = 50  # the outbox is woken after each batch the pipeline commits
OUTBOX_BATCH = 100  # due rows read per query
OUTBOX_ROWS_PER_RUN = 5000  # then the job returns; its next tick (or wake) goes on


def rule_list(settings: Settings) -> list[Rule]:
    """Every rule, in the order it runs: who never gets an answer, the mail's own priority, the admin's
    routing, then assignment, acknowledgement and reopening."""
    routing: list[Rule] = [RoutingRule(r) for r in settings.routing]
    return builtin_rules(settings.priority_from_headers, routing, agents=bool(settings.agents),
                         receipts=settings.command_receipt == "always")


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        transport_factory: Callable[[], Transport] | None = None,
        database: Database | None = None,
        inbox_interval: float = 2.0,
        outbox_interval: float = 5.0,
        sweep_interval: float = 30.0,
        imap_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.db = database or Database.from_url(settings.database_url)
        self.renderer = Renderer(settings.template_dir)
        self.signer = MessageIdSigner(settings.message_id_domain, lambda: install_secret(settings.identity))
        self.tokens = ReplyTokenSigner(lambda: install_secret(settings.identity))
        self.csat_tokens = CsatTokenSigner(lambda: install_secret(settings.identity))
        self.outbox_writer = OutboxWriter(self.renderer, self.signer, settings)
        self.assigner = Assigner(settings)
        self.mailer = Mailer(settings, self.outbox_writer, self.tokens)
        self.keeper = Timekeeper(settings.sla, settings.lifecycle, csat=settings.csat_enabled)
        self.rules = Engine(settings, rule_list(settings), self.mailer, self.assigner, self.keeper)
        self.admin = Admin(settings, self.mailer, self.signer, self.keeper)
        self.inbox = Inbox(self.db, self.clock)
        self.pipeline = Pipeline(self.db, settings, self.clock, self.rules, self.signer, self.tokens,
                                 csat=self.csat_tokens)
        envelope_from = parseaddr(settings.outbound.from_address)[1] or settings.mailboxes[0].address
        self.sender = Sender(
            self.db,
            transport_factory or (lambda: make_transport(settings.outbound)),
            settings.outbound,
            self.clock,
            envelope_from,
        )
        self.status = StatusBoard(self.db, self.clock)
        self.sweep = DueSweep(self.db, self.keeper, self.mailer, self.clock, self._survey_links)
        # What start() runs; stop() takes it down in reverse.
        self._intervals = {INBOX_JOB: inbox_interval, OUTBOX_JOB: outbox_interval, SWEEP_JOB: sweep_interval}
        self._imap_options = imap_options or {}
        self.ticker: Ticker | None = None
        self.committer: GroupCommitter | None = None
        self.listener: SmtpListener | None = None
        self.imap_runners: list[ImapRunner] = []
        self.heartbeat: Heartbeat | None = None
        self._lock: IO[str] | None = None
        self._closed = False

    # -- opening and closing ---------------------------------------------------

    @classmethod
    def open(cls, settings: Settings, *, upgrade: bool | None = None, **kwargs: Any) -> App:
        """An App whose storage and schema are checked (upgraded when allowed); closed again on failure."""
        app = cls(settings, **kwargs)
        try:
            app.check_storage()
            app.prepare(upgrade)
        except BaseException:
            app.close()
            raise
        return app

    def __enter__(self) -> App:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop whatever runs, then release the database (idempotent)."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        self.db.dispose()

    def prepare(self, upgrade: bool | None = None) -> None:
        """Check templates and schema; upgrade the schema when allowed (embedded default)."""
        self.renderer.check(TEMPLATES)
        allowed = self.settings.auto_upgrade if upgrade is None else upgrade
        try:
            self.db.check_schema()
        except SchemaError:
            if not allowed:
                raise
            self.ensure_storage()
            before, after = self.db.upgrade()
            log.info("database schema upgraded from %s to %s", before or "(empty)", after)

    def check_storage(self) -> None:
        """CantCreateError (exit 73) when our state folders could not be written; nothing is created."""
        problems = state_folders.problems(self.settings)
        if problems:
            raise CantCreateError(problems)

    def ensure_storage(self) -> None:
        """Create the state folders 0700; CantCreateError (exit 73) names a folder that cannot be made."""
        state_folders.ensure(self.settings)

    # -- parts -----------------------------------------------------------------

    @property
    def imap_mailboxes(self) -> list[MailboxSettings]:
        return [m for m in self.settings.mailboxes if m.imap is not None]

    def imap_poller(self, mailbox: MailboxSettings) -> ImapPoller:
        """A poller whose committed messages go through the pipeline (quarantined ones are filed apart)."""
        return ImapPoller(mailbox, self.inbox, self.db, self.clock, process=self._process_fetched)

    def _process_fetched(self, ids: list[int]) -> set[int]:
        outcomes = self.pipeline.process(ids)
        if any(o.state != RawState.QUARANTINED for o in outcomes):
            self.wake(OUTBOX_JOB)  # acknowledgements are committed: send them now
        with self.db.transaction() as session:
            states = repo.raw_states(session, ids)
        return {raw_id for raw_id, state in states.items() if state == RawState.QUARANTINED}

    def poll_once(self, mailboxes: Sequence[MailboxSettings]) -> list[dict[str, object]]:
        """One pass over each mailbox (`poll --once`)."""
        return [poll_once(self.imap_poller(m), self.status) for m in mailboxes]

    # -- one-off commands ---------------------------------------------------------

    def test_rules(self, raw: bytes) -> dict[str, Any]:
        """Every rule's verdict on one message and where it would go; stores nothing."""
        preview = self.pipeline.preview(raw, Envelope("test"))
        mail, facts = preview.mail, preview.facts
        with self.db.transaction() as session:
            report = self.rules.dry_run(session, facts)
        stored = self.inbox.stored(raw)
        return {
            "message_id": mail.message_id,
            # Already accepted: ingesting it again would be a duplicate (nothing would happen).
            "duplicate_of": None if stored is None else {"raw_id": stored[0], "ticket": stored[1]},
            "from": facts.sender.email,
            "subject": mail.subject,
            "verdict": {"kind": str(facts.verdict.kind), "reason": facts.verdict.reason},
            "thread": {"ticket": preview.thread.ticket_number, "reason": preview.thread.reason},
            **report,
        }

    def reply_as(self, number: int, agent: str, text: str, *, internal: bool, by: str) -> str:
        """`tickets reply`: the Message-ID of the stored reply or note (its mail is queued for `serve`)."""
        with self.db.transaction() as session:
            message = self.admin.reply(session, number, agent, text, internal=internal, by=by, now=self.clock.now())
            return message.message_id

    def set_fields(self, number: int, changes: Changes, *, by: str) -> list[str]:
        """`tickets set`: what changed (all or nothing)."""
        with self.db.transaction() as session:
            return self.admin.change(session, number, changes, by=by, now=self.clock.now())

    def set_away(self, address: str, away: bool, *, by: str) -> None:
        with self.db.transaction() as session:
            agents.set_away(session, address, away, self.clock.now())
            repo.add_event(session, self.clock.now(), "agent_away" if away else "agent_back",
                           f"{address} {'away' if away else 'back'}: set by {by}", data={"agent": address,
                                                                                     "away": away, "by": by})

    # -- running ---------------------------------------------------------------

    def start(self, *, listen: bool = True, jobs: bool = True, mailboxes: Sequence[MailboxSettings] | None = None,
              ) -> None:
        """Start what `serve` runs: the SMTP/LMTP listener, one poller per IMAP mailbox, the inbox, outbox
        and heartbeat jobs. `poll` starts only pollers (``listen=False, jobs=False``)."""
        try:
            if jobs:
                self.ensure_storage()  # the outbox maildir and the secret's folder, before the first mail
                self._lock = self.db.serve_lock()
                self.heartbeat = Heartbeat(self.db, self.clock)
                self.heartbeat.beat()
                self.ticker = Ticker()
            if listen and self.settings.smtp.listen:
                self.committer = GroupCommitter(self.inbox)
                self.committer.start()
                self.listener = SmtpListener(self.settings, self.committer, lambda: self.wake(INBOX_JOB))
                self.listener.start()
            for mailbox in self.imap_mailboxes if mailboxes is None else mailboxes:
                runner = ImapRunner(self.imap_poller(mailbox), self.status, **self._imap_options)
                runner.start()
                self.imap_runners.append(runner)
            if self.ticker is not None and self.heartbeat is not None:
                self.ticker.every(INBOX_JOB, self._intervals[INBOX_JOB], self._drain_inbox)
                self.ticker.every(OUTBOX_JOB, self._intervals[OUTBOX_JOB], self._flush_outbox)
                self.ticker.every(SWEEP_JOB, self._intervals[SWEEP_JOB], self._due_sweep)
                self.ticker.every(HEARTBEAT_JOB, HEARTBEAT_INTERVAL.total_seconds(), self.heartbeat.beat,
                                  at_start=False)
                self.ticker.start()
                log.info("mailticket serving (%s)", self.settings.source)
        except BaseException:
            self.stop()
            raise

    def wake(self, job_id: str = INBOX_JOB) -> None:
        """Run a job now rather than at its next tick (safe from any thread; nothing when not serving)."""
        if self.ticker is not None:
            self.ticker.wake(job_id)

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting mail, answer what is in flight, let running jobs finish the message or mail in hand
        (the rest waits, committed, for the next start); remove this instance's heartbeat."""
        if self.listener is not None:
            self.listener.stop(grace)
            self.listener = None
        for runner in self.imap_runners:
            runner.request_stop()  # all at once; then wait for each
        for runner in self.imap_runners:
            runner.stop(grace)
        self.imap_runners.clear()
        if self.committer is not None:
            self.committer.stop()
            self.committer = None
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker = None
            log.info("mailticket stopped")
        if self.heartbeat is not None:
            self.heartbeat.remove()
            self.heartbeat = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def run_until_signal(self, stopped: threading.Event | None = None) -> None:
        """Wait for SIGTERM or SIGINT (SIGUSR1 prints every thread's stack), then stop."""
        event = stopped or threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        faulthandler.register(signal.SIGUSR1)
        try:
            while not event.wait(1.0):
                pass
        finally:
            self.stop()

    # -- the jobs the ticker runs ------------------------------------------------

    def _drain_inbox(self) -> None:
        stopping = self.ticker.stopping if self.ticker is not None else threading.Event()
        while not stopping.is_set():
            try:
                outcomes = self.pipeline.drain(limit=INBOX_BATCH)
            except TemporaryError as exc:
                log.warning("inbox: %s; will retry", exc)
                return
            if any(o.decision != "quarantined" for o in outcomes):
                self.wake(OUTBOX_JOB)  # its acknowledgements are committed: send them now
                self.wake(SWEEP_JOB)  # a ticket solved by mail gets its survey now, not at the next tick
            if len(outcomes) < INBOX_BATCH:
                return

    def _flush_outbox(self) -> None:
        """Send while rows are due: again whenever a wake came in meanwhile, up to a bound per run."""
        ticker = self.ticker
        if ticker is None:
            return
        budget = OUTBOX_ROWS_PER_RUN
        while budget > 0 and not ticker.stopping.is_set():
            ticker.woken(OUTBOX_JOB)
            try:
                result = self.sender.drain(OUTBOX_BATCH, budget, should_stop=ticker.stopping.is_set)
            except TemporaryError as exc:
                log.warning("outbox: %s; will retry", exc)
                return
            budget -= max(1, result.sent + result.retried + result.failed + result.uncertain)
            if result.unrecorded or not ticker.woken(OUTBOX_JOB):
                return


    def _due_sweep(self) -> None:
        ticker = self.ticker
        try:
            result = self.sweep.run(should_stop=ticker.stopping.is_set if ticker is not None else None)
        except TemporaryError as exc:
            log.warning("due sweep: %s; will retry", exc)
            return
        if result.queued:
            self.wake(OUTBOX_JOB)

    def _survey_links(self, ticket: Ticket) -> list[RatingLink]:
        """The survey's ratings 1..5: mailto links to the ticket's signed plus-addresses."""
        mailbox = self.outbox_writer.mailbox_of(ticket).email
        subject = quote(self.outbox_writer.subject_of(ticket))
        links = []
        for rating in range(1, 6):
            address = self.csat_tokens.address(mailbox, ticket.number, rating)
            links.append(RatingLink(rating, address, f"mailto:{address}?subject={subject}"))
        return links

    # -- `mailticket tick`: each job once ------------------------------------------------

    def tick(self) -> dict[str, Any]:
        """Poll each IMAP mailbox once, drain the inbox, sweep what is due, flush the outbox; what each did
        (`mailticket tick`, for cron-driven installs and for checks)."""
        report: dict[str, Any] = {"imap": self.poll_once(self.imap_mailboxes) if self.imap_mailboxes else []}
        outcomes = self.pipeline.drain(limit=None)
        report["inbox"] = {"processed": len(outcomes),
                           "quarantined": sum(1 for o in outcomes if o.state == RawState.QUARANTINED)}
        report["sweep"] = self.sweep.run().as_dict()
        flushed = self.sender.drain(OUTBOX_BATCH, OUTBOX_ROWS_PER_RUN)
        report["outbox"] = {"sent": flushed.sent, "retried": flushed.retried, "failed": flushed.failed,
                            "uncertain": flushed.uncertain}
        report["ok"] = all(r.get("ok", False) for r in report["imap"]) and not report["sweep"]["failed"]
        return report


def install_secret(identity: IdentitySettings) -> bytes:
    """The configured secret, else the generated one (made on first use, mode 0600)."""
    if identity.secret is not None:
        return identity.secret.encode("utf-8")
    path = identity.generated_file
    try:
        return path.read_text(encoding="ascii").strip().encode("ascii")
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"identity.secret_file: cannot read the generated secret {path}: {exc}"]) from None
    value = secrets.token_hex(32)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        state_folders.make_dir(path.parent)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # atomic: a second process starting at once keeps the first one's secret
        except FileExistsError:
            return path.read_text(encoding="ascii").strip().encode("ascii")
        finally:
            os.unlink(temporary)
    except OSError as exc:
        raise ConfigError([f"identity.secret_file: cannot create {path} ({exc.strerror}); create it, or set "
                           "[identity] secret_file / secret_env / secret_credential"]) from None
    log.info("generated the install secret in %s", path)
    return value.encode("ascii")
