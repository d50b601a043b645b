"""`status` tells whether `serve` runs (heartbeats), and acknowledgements leave as fast as mail arrives."""

from __future__ import annotations

import email
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mailticket.app import App
from mailticket.clock import FrozenClock
from mailticket.domain import Envelope
from mailticket.outbox.sender import FlushResult
from mailticket.outbox.transport import Transport, make_transport
from mailticket.schedule.heartbeat import Heartbeat, describe
from mailticket.settings import Settings, load
from mailticket.store import readmodel
from tests.conftest import as_json, mail, run_cli
from tests.test_outbound import Sink, sink

__all__ = ["sink"]  # the aiosmtpd sink fixture, shared with test_outbound

DEADLINE = 120.0  # seconds a wait may take before the test fails; never a timing assertion



def status_report(app: App) -> dict[str, Any]:
    with app.db.transaction() as session:
        return readmodel.status_report(session, app.settings, app.clock.now())

def start_serve(config: Path) -> subprocess.Popen[bytes]:
    """`serve` as a subprocess (its log in serve.log beside the config), once its listener answers."""
    assert run_cli(config, "db", "upgrade").returncode == 0
    log = config.with_name("serve.log")
    with log.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "mailticket", "-c", str(config), "serve"],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    port = load(config).smtp.listen[0].port
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=10).quit()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"serve did not start listening: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)


def stop_serve(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def instances(config: Path) -> list[dict[str, Any]]:
    report = as_json(run_cli(config, "status", "--json"))
    assert isinstance(report, dict)
    assert {"config", "smtp", "mailboxes", "inbox", "outbox", "outbox_uncertain"} <= report.keys()
    found = report["instances"]
    assert isinstance(found, list)
    return found


# -- status -----------------------------------------------------------------------


def test_status_json_without_serve_says_none_runs(write_config: Callable[..., Path]) -> None:
    config = write_config()
    assert run_cli(config, "db", "upgrade").returncode == 0
    assert instances(config) == []
    text = run_cli(config, "status")
    assert text.returncode == 0 and "serve: not running (no heartbeat)" in text.stdout.decode()


def test_status_json_with_a_running_serve_then_after_its_clean_stop(write_config: Callable[..., Path]) -> None:
    config = write_config()
    proc = start_serve(config)
    try:
        found = instances(config)  # the first beat is written before the listener opens
        assert [(i["pid"], i["running"]) for i in found] == [(proc.pid, True)]
        [instance] = found
        assert {"host", "pid", "started_at", "last_seen", "running"} <= instance.keys()
        assert instance["host"] and instance["started_at"] <= instance["last_seen"]
        text = run_cli(config, "status").stdout.decode()
        assert f"serve: running on {instance['host']} pid {proc.pid} since " in text
        assert "not running" not in text
    finally:
        stop_serve(proc)
    assert instances(config) == []  # a clean stop removes its heartbeat
    assert "serve: not running (no heartbeat)" in run_cli(config, "status").stdout.decode()


def test_a_heartbeat_that_stopped_is_stale_and_forgotten_after_a_day(app: App, clock: FrozenClock) -> None:
    killed = Heartbeat(app.db, clock)
    killed.beat()
    [instance] = status_report(app)["instances"]
    assert instance["running"] is True and instance["id"] == killed.id
    clock.advance(seconds=10)
    assert status_report(app)["instances"][0]["running"] is True  # two beats missed: still counted running
    clock.advance(seconds=50)  # no beat for a minute: kill -9, or the host died
    [instance] = status_report(app)["instances"]
    assert instance["running"] is False
    assert describe(instance, clock.now()).endswith("last beat 60 s ago (killed?)")
    alive = Heartbeat(app.db, clock)
    alive.beat()
    assert [i["running"] for i in status_report(app)["instances"]] == [False, True]
    clock.advance(days=2)
    alive.beat()
    assert [i["id"] for i in status_report(app)["instances"]] == [alive.id]
    alive.remove()
    assert status_report(app)["instances"] == []


# -- the outbox keeps up ------------------------------------------------------------


def smtp_out(write_config: Callable[..., Path], sink: Sink) -> Path:
    return write_config(transport=f"smtp://127.0.0.1:{sink.port}")


def test_drain_sends_many_batches_over_one_connection_and_stops_when_asked(
    write_config: Callable[..., Path], sink: Sink, make_app: Callable[..., App]
) -> None:
    settings: Settings = load(smtp_out(write_config, sink))
    made: list[Transport] = []

    def factory() -> Transport:
        made.append(make_transport(settings.outbound))
        return made[-1]

    app = make_app(settings_override=settings, transport_factory=factory)
    for i in range(25):
        accepted = app.inbox.accept(mail(sender=f"c{i}@customer.example"), Envelope("pipe"))
        app.pipeline.process([accepted.raw_id])
    assert app.sender.drain(batch=4, should_stop=lambda: len(sink.accepted) >= 10) == FlushResult(sent=10)
    assert len(made) == 1
    assert app.sender.drain(batch=4) == FlushResult(sent=15)  # four batches, the last one short
    assert len(made) == 2 and len(sink.accepted) == 25
    assert app.sender.drain(batch=4) == FlushResult() and len(made) == 2  # nothing due: no connection
    assert sorted(d.rcpt_tos[0] for d in sink.accepted) == sorted(f"c{i}@customer.example" for i in range(25))


def test_300_acknowledgements_over_a_live_listener_all_reach_the_sink(
    write_config: Callable[..., Path], sink: Sink
) -> None:
    config = smtp_out(write_config, sink)
    total = 300
    proc = start_serve(config)
    port = load(config).smtp.listen[0].port
    try:
        def send(worker: int) -> int:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                for i in range(worker, total, 10):
                    sender = f"customer{i}@load.example"
                    refused = client.sendmail(sender, ["support@example.com"],
                                              mail(sender=sender, message_id=f"burst-{i}@load.example"))
                    assert refused == {}
            return worker

        with ThreadPoolExecutor(10) as pool:
            list(pool.map(send, range(10)))  # every 250 is in
        deadline = time.monotonic() + DEADLINE
        while len(sink.accepted) < total and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(sink.accepted) == total
    finally:
        stop_serve(proc)
    answered = [email.message_from_bytes(d.content)["In-Reply-To"] for d in sink.accepted]
    assert sorted(answered) == sorted(f"<burst-{i}@load.example>" for i in range(total))  # each once
    assert sorted({d.rcpt_tos[0] for d in sink.accepted}) == sorted(f"customer{i}@load.example"
                                                                     for i in range(total))
    listed = as_json(run_cli(config, "outbox", "list", "--json"))
    assert isinstance(listed, list) and len(listed) == total and {r["state"] for r in listed} == {"sent"}
