"""Long headers, the parse budget and large messages: figures to read, nothing asserted.

    python benchmarks/headers.py [--words 50000 200000] [--size-mb 35]

1. Header decoding. ``parse()`` of a message whose Subject (then an X- header)
   is one line of N encoded words (``=?utf-8?q?w=C3=A4rd?=``), beside two
   baselines measured in the same run: ``parse()`` of an ordinary message,
   and the stdlib's ``email.header.decode_header`` (which mail-parser runs on
   every header) on 5,000 and 10,000 words of the same line. Linear work shows
   a ratio near 4 between N and N/4 words; the stdlib's quadratic loop shows a
   ratio near 4 for twice the words.
2. The budget: ``parse()`` of the ordinary message directly and through
   ``run_with_budget`` (a worker thread per call), microseconds per message.
3. Large messages: one message of about --size-mb MB (a binary attachment as
   base64) written to a file, parsed in a fresh child process each way
   (mail-parser first as for small mail, and the stdlib tree used above
   MAILPARSER_MAX_BYTES); wall time and the child's peak RSS above what it held
   after reading the file (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import base64
import email.header
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailticket.ingest.budget import run_with_budget
from mailticket.ingest.parse import parse

WORD = "=?utf-8?q?w=C3=A4rd?="
ORDINARY = (
    b"From: Alice Customer <alice@customer.example>\r\nTo: support@example.com\r\n"
    b"Subject: =?utf-8?q?Drucker_f=C3=A4ngt_Feuer?=\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <ordinary@customer.example>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello, my printer is on fire.\r\n"
)


def long_header(header: str, words: int) -> bytes:
    value = " ".join([WORD] * words)
    subject = value if header == "Subject" else "A long header"
    extra = "" if header == "Subject" else f"{header}: {value}\r\n"
    return (f"From: a@customer.example\r\nTo: support@example.com\r\nSubject: {subject}\r\n{extra}"
            "Message-ID: <long@customer.example>\r\n\r\nbody\r\n").encode()


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def headers(word_counts: list[int]) -> None:
    ordinary = best_of(200, lambda: parse(ORDINARY))
    print(f"baseline: parse() of an ordinary message       {ordinary * 1e3:8.3f} ms")
    stdlib: dict[int, float] = {}
    for words in (5_000, 10_000):
        value = " ".join([WORD] * words)
        stdlib[words] = best_of(1, functools.partial(email.header.decode_header, value))
        print(f"baseline: stdlib decode_header, {words:>7,} words  {stdlib[words] * 1e3:8.1f} ms")
    print(f"          stdlib ratio 10,000 / 5,000 words     {stdlib[10_000] / stdlib[5_000]:8.1f}x  (2x = linear)")
    for header in ("Subject", "X-Long"):
        measured: dict[int, float] = {}
        for words in word_counts:
            raw = long_header(header, words)
            measured[words] = best_of(3, functools.partial(parse, raw))
            print(f"parse(), {header:<7} of {words:>7,} words ({len(raw) / 1e6:4.1f} MB)  "
                  f"{measured[words] * 1e3:8.1f} ms  ({measured[words] / ordinary:6.0f}x the ordinary message)")
        low, high = min(word_counts), max(word_counts)
        if low != high:
            print(f"          ratio {high:,} / {low:,} words              {measured[high] / measured[low]:8.1f}x  "
                  f"({high / low:g}x = linear)")


def budget() -> None:
    runs = 2_000
    direct = best_of(3, lambda: [parse(ORDINARY) for _ in range(runs)]) / runs
    bounded = best_of(3, lambda: [run_with_budget(lambda: parse(ORDINARY), 10.0) for _ in range(runs)]) / runs
    print(f"parse() directly                                {direct * 1e6:8.0f} us per message")
    print(f"parse() within run_with_budget (worker thread)  {bounded * 1e6:8.0f} us per message  "
          f"(+{(bounded - direct) * 1e6:.0f} us, {100 * (bounded - direct) / direct:.0f}%)")


CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
import mailticket.ingest.parse as p
raw = open(sys.argv[1], "rb").read()
if sys.argv[2] == "stdlib":
    p.MAILPARSER_MAX_BYTES = 0
else:
    p.MAILPARSER_MAX_BYTES = len(raw) + 1
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
mail = p.parse(raw)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mb": (after - before) / 1024, "held_mb": before / 1024,
                  "attachments": [len(a.content) for a in mail.attachments], "text": mail.text[:40]}))
"""


def large(size_mb: float) -> None:
    content = os.urandom(int(size_mb * 1e6 / 1.37))
    encoded = base64.encodebytes(content).replace(b"\n", b"\r\n")
    head = (b"From: a@customer.example\r\nTo: support@example.com\r\nSubject: big\r\n"
            b"Message-ID: <big@customer.example>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n'
            b"See the attached file.\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
            b'Content-Disposition: attachment; filename="data.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n')
    raw = head + encoded + b"--b1--\r\n"
    root = str(Path(__file__).resolve().parent.parent)
    with tempfile.NamedTemporaryFile(suffix=".eml") as handle:
        handle.write(raw)
        handle.flush()
        del raw, encoded
        for way in ("mail-parser", "stdlib"):
            done = subprocess.run([sys.executable, "-c", CHILD, handle.name, way, root],
                                  capture_output=True, check=True, text=True)
            figures = json.loads(done.stdout)
            kept = "kept whole" if figures["attachments"] == [len(content)] else f"NOT kept {figures['attachments']}"
            size = os.path.getsize(handle.name)
            print(f"{size / 1e6:5.1f} MB message via {way:<11}  {figures['seconds']:6.2f} s  "
                  f"peak RSS +{figures['peak_mb']:5.0f} MiB over the {figures['held_mb']:.0f} MiB held before "
                  f"({figures['peak_mb'] * 2**20 / size:.1f}x the message); attachment {kept}; "
                  f"text {figures['text']!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--words", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--size-mb", type=float, default=35.0)
    args = parser.parse_args()
    print("== long headers")
    headers(args.words)
    print("== the parse budget")
    budget()
    print("== large messages")
    large(args.size_mb)


if __name__ == "__main__":
    main()
