"""`mailticket serve`: a few fixed sweeps on APScheduler; the database decides the work.

APScheduler only ticks: each job claims what is due from the database, so
several instances on PostgreSQL share the work. Sources wake a job early
(``wake``) instead of waiting for its next tick: the inbox job wakes the
outbox job after each committed batch, and the outbox job keeps sending
(one SMTP connection for many mails) while rows are due and wakes come in.
A third job writes this instance's heartbeat for `mailticket status`.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import threading
from pathlib import Path
from typing import IO, Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import make_url

from mailticket.app import App
from mailticket.errors import ConfigError, TemporaryError
from mailticket.ingest.committer import GroupCommitter
from mailticket.schedule.heartbeat import INTERVAL as HEARTBEAT_INTERVAL
from mailticket.schedule.heartbeat import Heartbeat
from mailticket.sources.imaprun import ImapRunner
from mailticket.sources.smtp import SmtpListener

log = logging.getLogger("mailticket.serve")

INBOX_JOB = "drain_inbox"
OUTBOX_JOB = "flush_outbox"
HEARTBEAT_JOB = "heartbeat"
INBOX_BATCH = 50  # the outbox is woken after each batch the pipeline commits
OUTBOX_BATCH = 100  # due rows read per query
OUTBOX_ROWS_PER_RUN = 5000  # then the job returns; its next tick (or wake) goes on


class Service:
    def __init__(
        self,
        app: App,
        inbox_interval: float = 2.0,
        outbox_interval: float = 5.0,
        imap_options: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self._imap_options = imap_options or {}
        self.imap_runners: list[ImapRunner] = []
        self._scheduler = BackgroundScheduler(timezone=dt.UTC)
        self._intervals = {INBOX_JOB: inbox_interval, OUTBOX_JOB: outbox_interval}
        self._lock_file: IO[str] | None = None
        self.stopped = threading.Event()
        self.committer = GroupCommitter(app.inbox)
        self.listener: SmtpListener | None = None
        self.heartbeat = Heartbeat(app.db, app.clock)
        self._stopping = threading.Event()  # running jobs return soon; what they leave waits for the next start
        self._outbox_woken = threading.Event()  # rows were committed since the outbox job last looked

    def start(self) -> None:
        self._single_instance_on_sqlite()
        self.heartbeat.beat()
        self.committer.start()
        if self.app.settings.smtp.listen:
            self.listener = SmtpListener(self.app.settings, self.committer, self.wake)
            try:
                self.listener.start()
            except ConfigError:
                self.committer.stop()
                self.heartbeat.remove()
                self._release_lock()
                raise
        for mailbox in self.app.imap_mailboxes:
            poller = self.app.imap_poller(mailbox, on_processed=lambda: self.wake(OUTBOX_JOB))
            runner = ImapRunner(poller, self.app.status, **self._imap_options)
            runner.start()
            self.imap_runners.append(runner)
        for job_id, function in ((INBOX_JOB, self.drain_inbox), (OUTBOX_JOB, self.flush_outbox)):
            self._scheduler.add_job(
                function, "interval", seconds=self._intervals[job_id], id=job_id,
                max_instances=1, coalesce=True, next_run_time=dt.datetime.now(dt.UTC),
            )
        self._scheduler.add_job(self.heartbeat.beat, "interval", seconds=HEARTBEAT_INTERVAL.total_seconds(),
                                id=HEARTBEAT_JOB, max_instances=1, coalesce=True)
        self._scheduler.start()
        log.info("mailticket serving (%s)", self.app.settings.source)

    def wake(self, job_id: str = INBOX_JOB) -> None:
        """Run a job now rather than at its next tick (safe from any thread).

        A wake that meets the job running is skipped by APScheduler; the outbox job
        sees the flag instead and looks once more before it returns.
        """
        if job_id == OUTBOX_JOB:
            self._outbox_woken.set()
        if not self._scheduler.running:
            return
        job = self._scheduler.get_job(job_id)
        if job is not None:
            job.modify(next_run_time=dt.datetime.now(dt.UTC))

    def drain_inbox(self) -> None:
        while not self._stopping.is_set():
            try:
                outcomes = self.app.pipeline.drain(limit=INBOX_BATCH)
            except TemporaryError as exc:
                log.warning("inbox: %s; will retry", exc)
                return
            if any(o.decision != "quarantined" for o in outcomes):
                self.wake(OUTBOX_JOB)  # its acknowledgements are committed: send them now
            if len(outcomes) < INBOX_BATCH:
                return

    def flush_outbox(self) -> None:
        """Send while rows are due: again whenever a wake came in meanwhile, up to a bound per run."""
        budget = OUTBOX_ROWS_PER_RUN
        while budget > 0 and not self._stopping.is_set():
            self._outbox_woken.clear()
            try:
                result = self.app.sender.drain(OUTBOX_BATCH, budget, should_stop=self._stopping.is_set)
            except TemporaryError as exc:
                log.warning("outbox: %s; will retry", exc)
                return
            budget -= max(1, result.sent + result.retried + result.failed + result.uncertain)
            if result.unrecorded or not self._outbox_woken.is_set():
                return

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
        self.committer.stop()
        self._stopping.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        self.heartbeat.remove()
        self._release_lock()
        self.stopped.set()
        log.info("mailticket stopped")

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _single_instance_on_sqlite(self) -> None:
        if not self.app.db.is_sqlite:
            return
        database = make_url(self.app.settings.database_url).database or ""
        if not database or database == ":memory:":
            return
        path = Path(database + ".serve.lock")
        handle = path.open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ConfigError([
                f"database.url: another `mailticket serve` already runs on {database}; SQLite takes one "
                "instance: stop it, or move to PostgreSQL to run several"
            ]) from None
        self._lock_file = handle
