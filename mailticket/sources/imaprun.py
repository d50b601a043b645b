"""Keeps one IMAP poller going inside `mailticket serve`: IDLE or interval polling,
reconnection with exponential backoff and jitter, state on the status board.

Each mailbox has its own thread, so one failing mailbox never stops the others.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading

from mailticket.sources import status
from mailticket.sources.imap import ImapPoller
from mailticket.sources.status import StatusBoard

log = logging.getLogger("mailticket.imap")

IDLE_RENEW_SECONDS = 240.0  # end and re-issue IDLE this often (RFC 2177: well within 29 minutes)
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 300.0


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: between half and all of min(cap, base * 2^(failures-1))."""
    ceiling: float = min(cap, base * 2.0 ** min(failures - 1, 30))
    return ceiling * rng.uniform(0.5, 1.0)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or "(no message)"
    return f"{type(exc).__name__}: {text}"


class ImapRunner:
    def __init__(
        self,
        poller: ImapPoller,
        board: StatusBoard,
        *,
        idle_renew: float = IDLE_RENEW_SECONDS,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.poller = poller
        self._board = board
        self._idle_renew = idle_renew
        self._backoff = (backoff_base, backoff_max)
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.poller.name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: still busy after %.0f s; leaving it (nothing is moved before its commit)",
                            self.poller.name, timeout)
            self._thread = None

    def _run(self) -> None:
        name = self.poller.name
        while not self._stop.is_set():
            try:
                if not self.poller.connected:
                    self._board.set(name, status.CONNECTING, self.poller.settings.account)
                result = self.poller.poll_once()
                self.failures = 0
                self._wait(result.fetched)
            except Exception as exc:  # any failure: drop the connection, back off, try again
                self.poller.disconnect(polite=False)
                self.failures += 1
                delay = backoff_delay(self.failures, *self._backoff, self._rng)
                retry_at = self._board.clock.now() + dt.timedelta(seconds=delay)
                error = _describe(exc)
                log.warning("%s: %s; reconnecting in %.1f s (attempt %d)", name, error, delay, self.failures)
                self._board.set(name, status.ERROR, f"attempt {self.failures}", error=error, next_retry_at=retry_at)
                self._stop.wait(delay)
        self.poller.disconnect()
        self._board.set(name, status.STOPPED)

    def _wait(self, fetched: int) -> None:
        """After a successful pass: IDLE when offered, else sleep the poll interval."""
        name = self.poller.name
        detail = f"{self.poller.settings.folder}: {fetched} fetched in the last pass"
        if self.poller.can_idle:
            self._board.set(name, status.IDLE, detail, success=True)
            self.poller.wait_for_mail(self._stop, self._idle_renew)
        else:
            interval = self.poller.settings.poll_interval
            retry_at = self._board.clock.now() + dt.timedelta(seconds=interval)
            self._board.set(name, status.WAITING, detail, success=True, next_retry_at=retry_at)
            self._stop.wait(interval)


def poll_once(poller: ImapPoller, board: StatusBoard) -> dict[str, object]:
    """One pass for `mailticket poll --once` (cron): fetch, commit, process, file; then log out."""
    name = poller.name
    report: dict[str, object] = {"mailbox": poller.mailbox.address, "account": poller.settings.account,
                                 "folder": poller.settings.folder}
    try:
        board.set(name, status.POLLING, poller.settings.account)
        result = poller.poll_once()
    except Exception as exc:
        error = _describe(exc)
        log.error("%s: %s", name, error)
        board.set(name, status.ERROR, "poll --once", error=error)
        report.update(ok=False, error=error)
    else:
        board.set(name, status.STOPPED, f"poll --once: {result.fetched} fetched", success=True)
        report.update(ok=True, error=None, **result.as_dict())
    finally:
        poller.disconnect()
    return report
