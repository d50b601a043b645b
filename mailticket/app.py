"""The composition root: the one place that builds and wires everything."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from email.utils import parseaddr

from mailticket.clock import Clock, SystemClock
from mailticket.errors import CantCreateError, ConfigError, SchemaError
from mailticket.ingest.inbox import Inbox
from mailticket.ingest.pipeline import Pipeline
from mailticket.marks import MessageIdSigner
from mailticket.outbox.queue import OutboxWriter
from mailticket.outbox.render import Renderer
from mailticket.outbox.sender import Sender
from mailticket.outbox.transport import Transport, make_transport
from mailticket.rules import Rules
from mailticket.settings import IdentitySettings, MailboxSettings, Settings
from mailticket.sources.imap import ImapPoller
from mailticket.sources.status import StatusBoard
from mailticket.store import paths as state_folders
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
        self.signer = MessageIdSigner(settings.message_id_domain, lambda: install_secret(settings.identity))
        self.outbox_writer = OutboxWriter(self.renderer, self.signer, settings.loop_token)
        self.rules = Rules(settings, self.outbox_writer)
        self.inbox = Inbox(self.db, self.clock)
        self.pipeline = Pipeline(self.db, settings, self.clock, self.rules, self.signer)
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

    def close(self) -> None:
        self.db.dispose()


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
