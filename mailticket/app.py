"""The composition root: the one place that builds and wires everything."""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.utils import parseaddr

from mailticket.clock import Clock, SystemClock
from mailticket.errors import SchemaError
from mailticket.ingest.inbox import Inbox
from mailticket.ingest.pipeline import Pipeline
from mailticket.outbox.queue import OutboxWriter
from mailticket.outbox.render import Renderer
from mailticket.outbox.sender import Sender
from mailticket.outbox.transport import Transport, make_transport
from mailticket.rules import Rules
from mailticket.settings import MailboxSettings, Settings
from mailticket.sources.imap import ImapPoller
from mailticket.sources.status import StatusBoard
from mailticket.store.db import Database

log = logging.getLogger("mailticket")

TEMPLATES = ["ack_new"]


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        transport_factory: Callable[[], Transport] | None = None,
        database: Database | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.db = database or Database.from_url(settings.database_url)
        self.renderer = Renderer(settings.template_dir)
        self.outbox_writer = OutboxWriter(self.renderer, settings.message_id_domain, settings.loop_token)
        self.rules = Rules(settings, self.outbox_writer)
        self.inbox = Inbox(self.db, self.clock)
        self.pipeline = Pipeline(self.db, settings, self.clock, self.rules)
        envelope_from = parseaddr(settings.outbound.from_address)[1] or settings.mailboxes[0].address
        self.sender = Sender(
            self.db,
            transport_factory or (lambda: make_transport(settings.outbound)),
            settings.outbound,
            self.clock,
            envelope_from,
        )
        self.status = StatusBoard(self.db, self.clock)

    @property
    def imap_mailboxes(self) -> list[MailboxSettings]:
        return [m for m in self.settings.mailboxes if m.imap is not None]

    def imap_poller(self, mailbox: MailboxSettings, on_processed: Callable[[], None] | None = None) -> ImapPoller:
        return ImapPoller(mailbox, self.inbox, self.pipeline, self.db, self.clock, on_processed=on_processed)

    def prepare(self, upgrade: bool | None = None) -> None:
        """Check templates and schema; upgrade the schema when allowed (embedded default)."""
        self.renderer.check(TEMPLATES)
        allowed = self.settings.auto_upgrade if upgrade is None else upgrade
        try:
            self.db.check_schema()
        except SchemaError:
            if not allowed:
                raise
            before, after = self.db.upgrade()
            log.info("database schema upgraded from %s to %s", before or "(empty)", after)

    def close(self) -> None:
        self.db.dispose()
