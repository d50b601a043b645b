"""Group commit for concurrent intake.

Sources that receive many messages at once (the SMTP listener) hand each
message to one writer thread, which commits everything that is waiting in a
single transaction and then answers every caller. Each caller still gets
its answer only after its bytes are committed; the disk syncs once per
group instead of once per message.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from mailticket.domain import Envelope
from mailticket.ingest.inbox import Accepted, Inbox

log = logging.getLogger("mailticket.intake")

MAX_GROUP = 200
MAX_GROUP_BYTES = 64 * 1024 * 1024


class GroupCommitter:
    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox
        self._queue: queue.Queue[tuple[bytes, Envelope, Future[Accepted]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="mailticket-intake", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._thread.start()
            self._started = True

    def submit(self, raw: bytes, envelope: Envelope) -> Future[Accepted]:
        future: Future[Accepted] = Future()
        self._queue.put((raw, envelope, future))
        return future

    def stop(self) -> None:
        """Commit what is waiting, then end the writer thread."""
        if self._started:
            self._queue.put(None)
            self._thread.join()
            self._started = False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            size = len(item[0])
            stop = False
            while len(group) < MAX_GROUP and size < MAX_GROUP_BYTES:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
                size += len(more[0])
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[tuple[bytes, Envelope, Future[Accepted]]]) -> None:
        try:
            results = self._inbox.accept_each([(raw, envelope) for raw, envelope, _ in group])
        except BaseException as exc:  # every caller must hear: not stored
            log.warning("intake: could not commit %d message(s): %s", len(group), exc)
            for _, _, future in group:
                future.set_exception(exc)
            return
        for (_, _, future), result in zip(group, results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
