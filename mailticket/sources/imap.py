"""IMAP poller: every message in the folder becomes a ticket exactly once.

Per folder the database keeps UIDVALIDITY and the last UID fully handled. A
pass fetches the UIDs above it in batches (``BODY.PEEK[]``, so nothing is
marked read early), commits the raw bytes, processes them, and only then
moves or flags them on the server and advances the cursor. A crash before
the commit leaves the message where it was; a crash after it fetches the
message again, which the inbox recognises as a duplicate, and moves it then.
A new UIDVALIDITY rescans the folder from the start: duplicates again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from imapclient import DELETED, SEEN, IMAPClient

from mailticket.clock import Clock
from mailticket.domain import Envelope
from mailticket.ingest.inbox import Inbox
from mailticket.settings import ImapSettings, MailboxSettings
from mailticket.sources import imapconn
from mailticket.store import repo
from mailticket.store.db import Database

log = logging.getLogger("mailticket.imap")

FETCH_BYTES = 32 * 1024 * 1024  # at most this much message data in memory per FETCH
IDLE_CHECK_SECONDS = 1.0  # how often an IDLE wait looks at the stop flag


@dataclass
class PassResult:
    """What one pass over the folder did."""

    fetched: int = 0
    new: int = 0
    duplicates: int = 0
    quarantined: int = 0
    oversize: int = 0
    filed: int = 0  # moved or flagged after commit

    def add(self, other: PassResult) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _by_bytes(uids: Sequence[int], sizes: dict[int, int], budget: int) -> Iterator[list[int]]:
    group: list[int] = []
    total = 0
    for uid in uids:
        if group and total + sizes[uid] > budget:
            yield group
            group, total = [], 0
        group.append(uid)
        total += sizes[uid]
    if group:
        yield group


class ImapPoller:
    """One support mailbox's IMAP folder. Not thread-safe: one thread drives it."""

    def __init__(
        self,
        mailbox: MailboxSettings,
        inbox: Inbox,
        db: Database,
        clock: Clock,
        connect: Callable[[ImapSettings], IMAPClient] = imapconn.connect,
        process: Callable[[list[int]], set[int]] | None = None,
    ) -> None:
        """``process`` (injected by the composition root) is handed the raw ids just committed and
        returns those that ended in quarantine, so they can be filed in the quarantine folder; without
        it the messages wait in the inbox for `serve` and every one is filed as handled."""
        if mailbox.imap is None:
            raise ValueError(f"mailbox {mailbox.address} has no [mailboxes.imap] table")
        self.mailbox = mailbox
        self.settings: ImapSettings = mailbox.imap
        self._inbox = inbox
        self._db = db
        self._clock = clock
        self._connect = connect
        self._process = process
        self.client: IMAPClient | None = None
        self._warned_no_uidplus = False

    @property
    def name(self) -> str:
        return f"imap:{self.mailbox.address}"

    @property
    def connected(self) -> bool:
        return self.client is not None

    # -- connection ---------------------------------------------------------

    def connection(self) -> IMAPClient:
        if self.client is None:
            client = self._connect(self.settings)
            try:
                for folder in (self.settings.move_to, self.settings.quarantine_folder):
                    if folder and not client.folder_exists(folder):
                        client.create_folder(folder)
                        client.subscribe_folder(folder)
                        log.info("%s: created folder %s", self.name, folder)
            except BaseException:
                imapconn.close(client)
                raise
            self.client = client
        return self.client

    def disconnect(self, polite: bool = True) -> None:
        """Log out (polite) or just drop the socket (after an error: the connection may be dead)."""
        client, self.client = self.client, None
        if client is not None:
            (imapconn.close if polite else imapconn.drop)(client)

    @property
    def can_idle(self) -> bool:
        return self.settings.idle and self.client is not None and bool(self.client.has_capability("IDLE"))

    # -- one pass -----------------------------------------------------------

    def poll_once(self) -> PassResult:
        """Fetch, commit, process and file everything above the stored cursor."""
        client = self.connection()
        folder = self.settings.folder
        info = client.select_folder(folder)
        _take_new_mail_notice(client)  # what SELECT said is what this pass sees
        uidvalidity = int(info[b"UIDVALIDITY"])
        last_uid = self._cursor(uidvalidity)
        # "N:*" always matches the highest UID, even when it is below N: filter.
        uids = sorted(uid for uid in client.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid)
        result = PassResult()
        for chunk in _chunks(uids, self.settings.fetch_batch):
            result.add(self._handle_chunk(client, uidvalidity, chunk))
        if result.fetched or result.oversize:
            log.info("%s: %s", self.name, ", ".join(f"{k} {v}" for k, v in result.as_dict().items()))
        return result

    def _cursor(self, uidvalidity: int) -> int:
        account, folder = self.settings.account, self.settings.folder
        with self._db.transaction() as session:
            stored = repo.imap_cursor(session, account, folder)
            if stored is not None and stored[0] == uidvalidity:
                return stored[1]
            if stored is not None:
                log.warning(
                    "%s: UIDVALIDITY of %s changed (%d -> %d): rescanning the folder; messages already "
                    "stored are recognised as duplicates", self.name, folder, stored[0], uidvalidity,
                )
                repo.add_event(session, self._clock.now(), "imap_uidvalidity",
                               f"{account}/{folder}: UIDVALIDITY {stored[0]} -> {uidvalidity}, rescanning")
            repo.save_imap_cursor(session, account, folder, uidvalidity, 0, self._clock.now())
        return 0

    def _advance(self, uidvalidity: int, last_uid: int) -> None:
        with self._db.transaction() as session:
            repo.save_imap_cursor(
                session, self.settings.account, self.settings.folder, uidvalidity, last_uid, self._clock.now()
            )

    def _handle_chunk(self, client: IMAPClient, uidvalidity: int, chunk: Sequence[int]) -> PassResult:
        result = PassResult()
        sizes: dict[int, int] = {}
        for uid, data in client.fetch(list(chunk), ["RFC822.SIZE"]).items():
            sizes[int(uid)] = int(data.get(b"RFC822.SIZE", 0))
        present = [uid for uid in chunk if uid in sizes]  # others were expunged meanwhile
        oversize = [uid for uid in present if sizes[uid] > self.settings.max_message_size]
        if oversize:
            self._oversize(client, oversize, sizes)
            result.oversize += len(oversize)
        wanted = [uid for uid in present if sizes[uid] <= self.settings.max_message_size]
        for group in _by_bytes(wanted, sizes, FETCH_BYTES):
            result.add(self._handle_group(client, uidvalidity, group))
            self._advance(uidvalidity, group[-1])
        if chunk:
            self._advance(uidvalidity, max(chunk))
        return result

    def _handle_group(self, client: IMAPClient, uidvalidity: int, group: list[int]) -> PassResult:
        result = PassResult()
        fetched = client.fetch(group, ["BODY.PEEK[]"])
        uids: list[int] = []
        items: list[tuple[bytes, Envelope]] = []
        peer = f"imap://{self.settings.account}/{self.settings.folder};UIDVALIDITY={uidvalidity}"
        for uid in group:
            body = fetched.get(uid, {}).get(b"BODY[]")
            if body is None:
                continue  # expunged between the two FETCHes
            uids.append(uid)
            items.append((bytes(body), Envelope("imap", "", (self.mailbox.address,), f"{peer}/;UID={uid}")))
        del fetched
        if not items:
            return result
        accepted = self._inbox.accept_many(items)  # committed from here on
        del items
        result.fetched = len(accepted)
        result.duplicates = sum(a.duplicate for a in accepted)
        result.new = result.fetched - result.duplicates
        ids = [a.raw_id for a in accepted]
        bad = self._process(ids) if self._process is not None else set()
        quarantined = [uid for uid, a in zip(uids, accepted, strict=True) if a.raw_id in bad]
        result.quarantined = len(quarantined)
        done = uids
        if quarantined and self.settings.quarantine_folder:
            self._move(client, quarantined, self.settings.quarantine_folder)
            done = [uid for uid, a in zip(uids, accepted, strict=True) if a.raw_id not in bad]
        self._file(client, done)
        result.filed = len(uids)
        return result

    def _file(self, client: IMAPClient, uids: list[int]) -> None:
        if not uids:
            return
        if self.settings.move_to:
            self._move(client, uids, self.settings.move_to)
        else:
            client.add_flags(uids, [SEEN])

    def _move(self, client: IMAPClient, uids: list[int], folder: str) -> None:
        if client.has_capability("MOVE"):
            client.move(uids, folder)
            return
        client.copy(uids, folder)
        client.add_flags(uids, [DELETED])
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        elif not self._warned_no_uidplus:
            self._warned_no_uidplus = True
            log.warning("%s: the server has neither MOVE nor UIDPLUS: moved messages are copied and flagged "
                        "\\Deleted in %s, and left for the server (or a mail client) to expunge",
                        self.name, self.settings.folder)

    def _oversize(self, client: IMAPClient, uids: list[int], sizes: dict[int, int]) -> None:
        where = self.settings.quarantine_folder
        for uid in uids:
            detail = (f"{self.settings.account}/{self.settings.folder} UID {uid}: {sizes[uid]} bytes is over "
                      f"max_message_size ({self.settings.max_message_size}); "
                      + (f"moved to {where}" if where else "left unread in the folder"))
            log.warning("%s: %s", self.name, detail)
            with self._db.transaction() as session:
                repo.add_event(session, self._clock.now(), "imap_oversize", detail)
        if where:
            self._move(client, uids, where)

    # -- waiting for mail ------------------------------------------------------

    def wait_for_mail(self, stop: threading.Event, renew_seconds: float) -> bool:
        """IDLE until the server reports new mail, ``renew_seconds`` pass, or ``stop`` is set.

        Ending IDLE (DONE) after ``renew_seconds`` is also the keepalive: on a
        silently dead connection it times out, and the caller reconnects.
        Returns True when new mail was reported.
        """
        client = self.connection()
        # Mail that arrived during the pass was announced there (or not yet at all: a server
        # need not announce in IDLE what it could have reported before). NOOP makes the server
        # report it now, and doubles as a liveness check.
        noop = client.noop()[1]
        if _take_new_mail_notice(client) or any(len(r) > 1 and r[1] == b"EXISTS" for r in noop):
            return True
        client.idle()
        news = False
        quick_empty = 0
        try:
            deadline = time.monotonic() + renew_seconds
            while not stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                responses = client.idle_check(timeout=IDLE_CHECK_SECONDS)
                if any(r and r[0] == b"BYE" for r in responses):
                    raise ConnectionError(f"the server ended the session: {_text(responses)}")
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    news = True
                    break
                # imapclient's idle_check swallows EOF and returns nothing at once: a closed
                # connection shows as empty answers that did not wait for the timeout.
                quick = not responses and time.monotonic() - started < IDLE_CHECK_SECONDS / 2
                quick_empty = quick_empty + 1 if quick else 0
                if quick_empty >= 3:
                    raise ConnectionError("the server closed the connection during IDLE")
        except BaseException:
            self.disconnect(polite=False)
            raise
        client.idle_done()
        return news


def _take_new_mail_notice(client: IMAPClient) -> bool:
    """True when the server announced new mail (``* N EXISTS``) during an earlier command.

    A server reports a new message once, in whatever response comes next: a
    message that arrives during the pass's SEARCH or MOVE is announced there,
    not in the IDLE that follows. imaplib keeps such untagged responses (until
    the next SELECT); imapclient has no public accessor for them.
    """
    pending = getattr(getattr(client, "_imap", None), "untagged_responses", None)
    return isinstance(pending, dict) and bool(pending.pop("EXISTS", None))


def _text(responses: list[Any]) -> str:
    return " ".join(
        part.decode("utf-8", "replace") if isinstance(part, bytes) else str(part)
        for response in responses for part in response
    )[:300]
