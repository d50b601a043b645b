"""SMTP intake: mailticket's listener (durable commits, pipeline behind it) vs a bare aiosmtpd handler.

    python benchmarks/smtp.py [--messages 2000] [--sessions 20]

Both servers run as their own process on a free loopback port and get the same
load from an asyncio client: S concurrent sessions, a new connection per
message. Printed: messages/second, and p50/p99 time from the end of DATA to the
250, for each, with the ratio; and whether the pipeline kept up (the inbox
backlog while the load ran, and how long it took to drain afterwards); and
whether the sender kept up: each message (from its own customer) gets an
acknowledgement, sent over SMTP to an aiosmtpd sink in this process, so the
acknowledgements per second (during the load, and from its start to the last
one) print beside the intake rate, with how long the last one took after the
last 250.
No asserts: these are figures to read, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BARE_SERVER = """
import sys, time
from aiosmtpd.controller import Controller
class Handler:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Ok"
controller = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not come up")


def message(i: int) -> bytes:
    body = "".join(f"Line {n} of a support request about the broken widget.\r\n" for n in range(20))
    return (f"From: Customer {i} <customer{i}@load.example>\r\nTo: support@localhost\r\n"
            f"Subject: Load test message {i}\r\nMessage-ID: <load-{i}-{time.time_ns()}@load.example>\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n{body}").encode()


async def one(port: int, i: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    await reply()
    for command in (b"EHLO load.example\r\n", b"MAIL FROM:<sender@load.example>\r\n",
                    b"RCPT TO:<support@localhost>\r\n", b"DATA\r\n"):
        writer.write(command)
        await reply()
    writer.write(message(i) + b".\r\n")
    start = time.perf_counter()
    await writer.drain()
    answer = await reply()
    elapsed = time.perf_counter() - start
    if not answer.startswith(b"250"):
        raise RuntimeError(f"message {i}: {answer!r}")
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()
    await writer.wait_closed()
    return elapsed


async def load(port: int, messages: int, sessions: int) -> tuple[float, list[float]]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(messages):
        queue.put_nowait(i)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            latencies.append(await one(port, queue.get_nowait()))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    return time.perf_counter() - start, latencies


def describe(name: str, elapsed: float, latencies: list[float]) -> tuple[float, str]:
    rate = len(latencies) / elapsed
    cuts = statistics.quantiles(latencies, n=100)
    return rate, f"{name:<28} {rate:8.0f} msg/s   p50 {cuts[49] * 1000:7.2f} ms   p99 {cuts[98] * 1000:7.2f} ms"


def backlog(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM raw_messages WHERE state = 'new'").fetchone()[0])
    finally:
        conn.close()


class AckSink:
    """Where mailticket's acknowledgements go: counts each, with when it arrived."""

    def __init__(self) -> None:
        self.arrived: list[float] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.arrived.append(time.monotonic())
        return "250 2.0.0 Ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()

    port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        wait_port(port)
        bare_elapsed, bare_latencies = asyncio.run(load(port, args.messages, args.sessions))
    finally:
        bare.communicate(b"", timeout=30)

    from aiosmtpd.controller import Controller

    acks = AckSink()
    sink = Controller(acks, hostname="127.0.0.1", port=free_port())
    sink.start()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        db = Path(tmp) / "bench.db"
        config = Path(tmp) / "mailticket.toml"
        config.write_text(f'[database]\nurl = "sqlite:///{db}"\nauto_upgrade = true\n'
                          f'[outbound]\ntransport = "smtp://127.0.0.1:{sink.port}"\n'
                          f'[smtp]\nlisten = ["127.0.0.1:{port}"]\nmax_connections_per_ip = 1000\n'
                          f'[log]\nlevel = "warning"\n')
        log = (Path(tmp) / "serve.log").open("wb")
        serve = subprocess.Popen([sys.executable, "-m", "mailticket", "-c", str(config), "serve"],
                                 stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_port(port)
            peak = [0]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.5):
                    peak[0] = max(peak[0], backlog(db))

            sampler = threading.Thread(target=sample)
            sampler.start()
            load_start = time.monotonic()
            elapsed, latencies = asyncio.run(load(port, args.messages, args.sessions))
            load_end = time.monotonic()
            acks_during = len(acks.arrived)
            done.set()
            sampler.join()
            at_end = backlog(db)
            drain_start = time.perf_counter()
            while backlog(db) and time.perf_counter() - drain_start < 600:
                time.sleep(0.2)
            drain = time.perf_counter() - drain_start
            left = backlog(db)
            last_progress = time.monotonic()
            seen = len(acks.arrived)
            while seen < args.messages and time.monotonic() - last_progress < 60:
                time.sleep(0.2)
                if len(acks.arrived) > seen:
                    seen, last_progress = len(acks.arrived), time.monotonic()
        finally:
            serve.terminate()
            serve.wait(timeout=60)
            log.close()
        sink.stop()
        if serve.returncode != 0:
            print((Path(tmp) / "serve.log").read_text()[-2000:], file=sys.stderr)

    bare_rate, bare_line = describe("bare aiosmtpd (stores nothing)", bare_elapsed, bare_latencies)
    rate, line = describe("mailticket serve (durable)", elapsed, latencies)
    print(f"{args.messages} messages, {args.sessions} concurrent sessions, a new connection per message")
    print(bare_line)
    print(line)
    print(f"ratio: {rate / bare_rate:.0%} of the bare handler's rate (target: at least 50%)")
    print(f"inbox backlog: peak {peak[0]}, {at_end} left when the load ended, drained in {drain:.1f} s"
          f"{'' if not left else f' ({left} still new after 600 s)'}")
    sent = len(acks.arrived)
    print(f"acknowledgements: {sent} of {args.messages} sent over SMTP; {acks_during} while the load ran "
          f"({acks_during / (load_end - load_start):.0f}/s beside {rate:.0f} msg/s intake)")
    if sent:
        last = acks.arrived[-1]
        print(f"  {sent / (last - load_start):.0f} acknowledgements/s from the load's start to the last one, "
              f"which left {max(0.0, last - load_end):.1f} s after the last 250"
              + ("" if sent == args.messages else " (then none for 60 s)"))


if __name__ == "__main__":
    main()
