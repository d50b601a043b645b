"""Run one piece of pure work within a time budget: over it, the work is stopped.

``run_with_budget(work, seconds)`` runs ``work()`` in a worker thread of its
own and waits at most ``seconds``. Over budget it interrupts the worker (an
exception raised inside it with ``PyThreadState_SetAsyncExc``) and the caller
gets ``BudgetExceeded``; an exception from ``work`` reaches the caller as is.

Why this way, of the ways CPython offers:

- Giving up on a worker thread without stopping it bounds only the wait: the
  thread keeps its memory and keeps taking the GIL from everything else until
  it ends by itself (a 200,000-word header took 74 s of CPU).
- A process pool can kill anything, but pickles every result back (tens of MB
  of attachments), doubles memory, and pays a process start, or a fork of a
  daemon that runs SMTP, IMAP and scheduler threads (unsafe).
- SIGALRM reaches only the main thread; the pipeline runs in others.
- An asynchronous exception is delivered between bytecodes, so pure-Python
  work stops within milliseconds. It goes only to a thread of ours that runs
  nothing but ``work``: never to the caller, never to code that holds a
  database session or a lock of the caller's. ``work`` must be pure (nothing
  shared is left half-changed); ``parse`` is. The exception is a
  BaseException, so the ``except Exception`` handlers inside ``parse`` do not
  swallow it. At most one is sent, and a worker that finishes just as it is
  sent waits for it inside its own try block, so none can land in the
  threading machinery.

Limits: one long C call (a regex, a base64 decode) is interrupted only when
it returns; inputs are bounded upstream, and so are those calls. Work that
has not stopped ``grace`` seconds after the interrupt is abandoned (a daemon
thread) and the error says so. A thread per call (its start and the hand-over)
adds about 0.1-0.2 ms to a message that takes about 3 ms through the pipeline.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from mailticket.errors import BudgetExceeded

T = TypeVar("T")

GRACE_SECONDS = 2.0


class _Stop(BaseException):
    """Raised inside the worker. Not an Exception: `except Exception` in the work cannot catch it."""


def _send(ident: int, exc: type[BaseException]) -> None:
    """Make ``exc`` pending in thread ``ident``.

    Never called with NULL to withdraw one: on CPython 3.11 that leaves the
    interpreter's "async exception pending" flag set for good (every thread then
    takes the slow path at every check; seen to deadlock a thread start).
    """
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc))


class _Worker(Generic[T]):
    def __init__(self, work: Callable[[], T]) -> None:
        self._work = work
        self._lock = threading.Lock()
        self._running = True  # guarded by _lock: an interrupt is sent only while True
        self._sent = False  # guarded by _lock: the one interrupt was sent
        self._value: list[T] = []
        self._error: BaseException | None = None
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="mailticket-budget", daemon=True)

    def _run(self) -> None:
        try:
            try:
                self._value.append(self._work())
            except _Stop:
                raise
            except BaseException as exc:  # handed to the caller as is
                self._error = exc
            with self._lock:  # from here on no interrupt is sent
                self._running = False
                sent = self._sent
            if sent:
                # Sent just before we took the lock: it is pending on this thread and lands at the
                # next check of the eval loop, here, inside this try, not in the threading machinery.
                while True:
                    pass
        except _Stop:  # the one interrupt, wherever in the block above it landed
            self.stopped = True

    def interrupt(self) -> None:
        with self._lock:
            if self._running and self.thread.ident is not None:
                self._running = False  # never a second one
                self._sent = True
                _send(self.thread.ident, _Stop)

    def finished(self) -> bool:
        return not self.thread.is_alive() and not self.stopped

    def result(self) -> T:
        if self._error is not None:
            raise self._error
        return self._value[0]


def run_with_budget(work: Callable[[], T], seconds: float | None, grace: float = GRACE_SECONDS) -> T:
    """``work()``, stopped with BudgetExceeded when it runs longer than ``seconds`` (None: no budget)."""
    if seconds is None:
        return work()
    worker = _Worker(work)
    worker.thread.start()
    worker.thread.join(seconds)
    if worker.thread.is_alive():
        worker.interrupt()
        worker.thread.join(grace)
    if worker.finished():  # done in time, or just as the interrupt was sent: take what it made
        return worker.result()
    if worker.thread.is_alive():
        raise BudgetExceeded(seconds, f"; it did not stop within {grace:g} s of the interrupt and was abandoned")
    raise BudgetExceeded(seconds)
