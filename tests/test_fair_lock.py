"""The SQLite writer lock: reentrant, served in arrival order, and a waiter that gives up leaves no hole."""

from __future__ import annotations

import threading
import time

from mailticket.store.db import FairRLock


def test_reentrant_and_served_in_arrival_order() -> None:
    lock = FairRLock()
    order: list[int] = []
    arrived: list[threading.Event] = []
    with lock, lock:  # reentrant
        threads = []
        for i in range(5):
            ready = threading.Event()
            arrived.append(ready)

            def take(i: int = i, ready: threading.Event = ready) -> None:
                ready.set()
                with lock:
                    order.append(i)

            thread = threading.Thread(target=take)
            thread.start()
            ready.wait(5)
            # wait until the thread is queued behind us before starting the next one
            deadline = time.monotonic() + 5
            while len(lock._waiting) < i + 1 and time.monotonic() < deadline:
                time.sleep(0.001)
            threads.append(thread)
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4]


class _Interrupt(Exception):
    pass


def test_a_waiter_that_is_interrupted_leaves_the_queue() -> None:
    lock = FairRLock()
    cond = lock._cond
    original = cond.wait
    calls = {"n": 0}

    def wait_once_then_fail(timeout: float | None = None) -> bool:
        calls["n"] += 1
        raise _Interrupt

    holder = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with lock:
            holder.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    holder.wait(5)
    cond.wait = wait_once_then_fail  # type: ignore[method-assign]
    try:
        with lock:
            raise AssertionError("acquired a held lock")
    except _Interrupt:
        pass
    finally:
        cond.wait = original  # type: ignore[method-assign]
    assert calls["n"] == 1 and list(lock._waiting) == []
    release.set()
    thread.join(5)
    with lock:  # still usable
        pass
