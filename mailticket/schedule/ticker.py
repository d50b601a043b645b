"""APScheduler 3.x ticking the callables it is handed: the database decides the work.

Each job is a callable that claims what is due from the database, so several
instances on PostgreSQL share the work. ``wake`` runs a job now instead of at
its next tick (from any thread); a wake that meets the job running is skipped
by APScheduler, so the job can ask ``woken`` whether one came in meanwhile and
look once more before it returns. ``stopping`` tells running jobs to return soon.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler


class Ticker:
    def __init__(self) -> None:
        self._scheduler = BackgroundScheduler(timezone=dt.UTC)
        self._woken: dict[str, threading.Event] = {}
        self.stopping = threading.Event()

    def every(self, job_id: str, seconds: float, function: Callable[[], None], *, at_start: bool = True) -> None:
        """Run ``function`` every ``seconds`` (one run at a time; missed runs coalesce)."""
        self._woken[job_id] = threading.Event()
        self._scheduler.add_job(function, "interval", seconds=seconds, id=job_id, max_instances=1, coalesce=True,
                                next_run_time=dt.datetime.now(dt.UTC) if at_start else None)

    def start(self) -> None:
        self._scheduler.start()

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def wake(self, job_id: str) -> None:
        flag = self._woken.get(job_id)
        if flag is not None:
            flag.set()
        if not self._scheduler.running:
            return
        job = self._scheduler.get_job(job_id)
        if job is not None:
            job.modify(next_run_time=dt.datetime.now(dt.UTC))

    def woken(self, job_id: str) -> bool:
        """Whether a wake came in since the last call (and forget it)."""
        flag = self._woken.get(job_id)
        if flag is None or not flag.is_set():
            return False
        flag.clear()
        return True

    def stop(self) -> None:
        """Running jobs see ``stopping`` and return; waits for them."""
        self.stopping.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
