"""The folders mailticket keeps its state in: checked without touching the disk, or created 0700.

``problems`` is what `check-config` reports (it changes nothing on disk);
``ensure`` is what a command that writes runs first. Each problem is one
line naming the config key, the path and the user, so an admin sees at once
what to change.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from mailticket.errors import CantCreateError
from mailticket.settings import Settings

DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True)
class StatePath:
    key: str  # the config key that decides this path
    path: Path  # a folder mailticket writes into


def state_paths(settings: Settings) -> list[StatePath]:
    paths: list[StatePath] = []
    database = sqlite_file(settings.database_url)
    if database is not None:
        paths.append(StatePath("database.url", database.parent))
    if settings.outbound.maildir is not None:
        paths.append(StatePath("outbound.transport", settings.outbound.maildir))
    if settings.identity.secret is None:
        paths.append(StatePath("identity.secret_file", settings.identity.generated_file.parent))
    return paths


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases and :memory:)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.geteuid()}"


def _problem(item: StatePath, path: Path, why: str) -> str:
    return (f"{item.key}: {why} {path} as user {user()}: give that user write access, or set [paths] state_dir "
            "(or an absolute path) to a folder it owns")


def problems(settings: Settings) -> list[str]:
    """What would stop mailticket from creating or writing its state folders; nothing is created."""
    found: list[str] = []
    for item in state_paths(settings):
        path = item.path
        if path.exists():
            if not path.is_dir():
                found.append(_problem(item, path, "not a folder:"))
            elif not os.access(path, os.W_OK | os.X_OK):
                found.append(_problem(item, path, "cannot write into"))
            continue
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            found.append(_problem(item, path, f"cannot create (no write access to {parent})"))
    return list(dict.fromkeys(found))


def ensure(settings: Settings) -> None:
    """Create the state folders (mode 0700, whatever the umask); CantCreateError names what failed."""
    failed: list[str] = []
    for item in state_paths(settings):
        try:
            make_dir(item.path)
        except OSError as exc:
            failed.append(_problem(item, item.path, f"cannot create ({exc.strerror or exc})"))
    if failed:
        raise CantCreateError(list(dict.fromkeys(failed)))


def make_dir(path: Path) -> None:
    """mkdir -p with mode 0700 for every folder it creates."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)  # the umask may have taken bits away; never more than 0700


def create_private_file(path: Path) -> None:
    """Create an empty file 0600 if it does not exist (SQLite gives its -wal/-shm files the same mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
    os.chmod(path, FILE_MODE)
