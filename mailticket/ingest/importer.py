"""`mailticket import`: RFC 5322 files, maildir folders and mbox files, streamed.

Messages are read one at a time and committed in batches, so memory stays
flat however large the mailbox is; each batch is processed before the next
is read.
"""

from __future__ import annotations

import mailbox
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mailticket.domain import Envelope
from mailticket.ingest.inbox import Inbox
from mailticket.ingest.pipeline import Pipeline

BATCH_MESSAGES = 200
BATCH_BYTES = 32 * 1024 * 1024


@dataclass
class ImportSummary:
    messages: int = 0
    tickets_created: int = 0
    replies_threaded: int = 0
    duplicates: int = 0
    quarantined: int = 0
    unreadable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "tickets_created": self.tickets_created,
            "replies_threaded": self.replies_threaded,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "unreadable": list(self.unreadable),
        }


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def _is_mbox(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(5) == b"From "
    except OSError:
        return False


@dataclass(frozen=True)
class _Source:
    kind: str  # "file", "maildir", "mbox"
    path: Path
    count: int


def plan(paths: list[Path]) -> list[_Source]:
    """What will be read, with a message count for the progress bar."""
    sources: list[_Source] = []
    for path in paths:
        if path.is_dir() and _is_maildir(path):
            sources.append(_Source("maildir", path, len(mailbox.Maildir(str(path), create=False))))
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if not name.startswith("."):
                        sources.extend(plan([Path(root) / name]))
        elif path.is_file() and _is_mbox(path):
            sources.append(_Source("mbox", path, len(mailbox.mbox(str(path), create=False))))
        else:
            sources.append(_Source("file", path, 1))
    return sources


def read(sources: list[_Source], summary: ImportSummary) -> Iterator[tuple[str, bytes]]:
    for source in sources:
        try:
            if source.kind == "file":
                yield str(source.path), source.path.read_bytes()
            elif source.kind == "maildir":
                box = mailbox.Maildir(str(source.path), create=False)
                for key in sorted(box.iterkeys()):
                    yield f"{source.path}:{key}", box.get_bytes(key)
            else:
                mbox = mailbox.mbox(str(source.path), create=False)
                for key in mbox.iterkeys():
                    yield f"{source.path}:{key}", mbox.get_bytes(key)
        except OSError as exc:
            summary.unreadable.append(f"{source.path}: {exc.strerror or exc}")


def run_import(
    paths: list[Path],
    inbox: Inbox,
    pipeline: Pipeline,
    progress: Callable[[int, int, ImportSummary], None] | None = None,
) -> ImportSummary:
    summary = ImportSummary()
    sources = plan(paths)
    total = sum(s.count for s in sources)
    batch: list[tuple[bytes, Envelope]] = []
    size = 0

    def flush() -> None:
        nonlocal size
        accepted = inbox.accept_many(batch)
        summary.messages += len(batch)
        summary.duplicates += sum(a.duplicate for a in accepted)
        fresh = [a.raw_id for a in accepted if not a.duplicate]
        for outcome in pipeline.process(fresh):
            if outcome.decision == "new_ticket":
                summary.tickets_created += 1
            elif outcome.decision == "joined":
                summary.replies_threaded += 1
            else:
                summary.quarantined += 1
        batch.clear()
        size = 0
        if progress:
            progress(summary.messages, total, summary)

    for label, raw in read(sources, summary):
        batch.append((raw, Envelope("import", peer=label[:500])))
        size += len(raw)
        if len(batch) >= BATCH_MESSAGES or size >= BATCH_BYTES:
            flush()
    if batch:
        flush()
    return summary
