"""A real, private Dovecot IMAP server for tests and benchmarks (no pytest needed).

    with Dovecot(tmp_path) as dv:            # config + log in tmp_path, free loopback port
        dv.append("INBOX", raw)              # through IMAP
        dv.deliver_to_maildir("Support", raw)  # straight into the Maildir++ store, as an LDA would
        dv.restart()                         # same port, same mail store
        assert dv.folder_count("INBOX") == 1

Everything Dovecot reads comes from our own config file (never /etc/dovecot). It listens on 127.0.0.1 only,
serves IMAP only (no TLS), and knows one user (``support`` / ``secret``) whose mail is owned by uid/gid 65534.

Dovecot's unprivileged processes (uid 65534 for mail, the ``dovecot`` and ``dovenull`` users for auth and login)
must be able to reach the mail store, the passwd file and the sockets in base_dir. When the work directory is not
reachable by other users (pytest's tmp_path lives under a 0700 directory) or its path is too long for unix sockets,
those live in a private ``/tmp/dvc-XXXXXXXX`` directory instead, which is removed by :meth:`Dovecot.close`
(called by ``__exit__``, and at interpreter exit). The config, the log and the state directory always stay in
the work directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import imapclient

MAIL_UID = 65534
MAIL_GID = 65534
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
# base_dir + "/" + the longest socket name Dovecot creates there must stay below the ~108 byte sun_path limit.
MAX_BASE_DIR = 64

_deliveries = itertools.count()


class DovecotUnavailable(Exception):
    """Why Dovecot cannot run here (binary missing, not root, ...)."""


class _PortInUse(RuntimeError):
    """Dovecot could not bind its IMAP port."""


def _binary() -> str | None:
    if os.access("/usr/sbin/dovecot", os.X_OK):
        return "/usr/sbin/dovecot"
    return shutil.which("dovecot")


def _reachable_by_others(path: Path) -> bool:
    """True when every directory from / down to ``path`` can be traversed by an unrelated user."""
    for part in [path, *path.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _greets(host: str, port: int) -> bool:
    """True when the port accepts and answers with an IMAP ``* OK`` greeting."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            data = b""
            while b"\n" not in data and len(data) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"* OK")
    except OSError:
        return False


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


@dataclasses.dataclass
class _Resources:
    """What must be cleaned up even when the Dovecot object is forgotten (kept apart so finalize holds no self)."""

    proc: subprocess.Popen[bytes] | None = None
    private: Path | None = None


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # After the ")" that ends the command name: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


def _end_group(pgid: int, grace: float = 3.0) -> None:
    """SIGTERM what is left of Dovecot's process group (it has its own session), SIGKILL after ``grace`` s."""
    sig = signal.SIGTERM
    deadline = time.monotonic() + grace
    while _group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        if time.monotonic() > deadline:
            if sig == signal.SIGKILL:
                raise RuntimeError(f"Dovecot processes {_group_members(pgid)} survive SIGKILL")
            sig = signal.SIGKILL
            deadline = time.monotonic() + grace
        time.sleep(0.02)


def _release(res: _Resources) -> None:
    if res.proc is not None:
        if res.proc.poll() is None:
            res.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                res.proc.wait(timeout=STOP_TIMEOUT)
        with contextlib.suppress(RuntimeError):
            _end_group(res.proc.pid, grace=1.0)
    res.proc = None
    if res.private is not None:
        shutil.rmtree(res.private, ignore_errors=True)
        res.private = None


class Dovecot:
    """One private Dovecot instance serving IMAP on a loopback port."""

    user: str = "support"
    password: str = "secret"
    host: str = "127.0.0.1"

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "") -> None:
        self.workdir = Path(workdir).resolve()
        self.extra_config = extra_config  # appended to dovecot.conf, e.g. "imap_capability = IMAP4rev1"
        self.port: int = port if port is not None else _free_port(self.host)
        self.instance_name = f"mailticket-test-{os.getpid()}-{self.port}-{uuid.uuid4().hex[:8]}"
        self.config_path = self.workdir / "dovecot.conf"
        self.log_path = self.workdir / "dovecot.log"
        self.stderr_path = self.workdir / "dovecot.stderr"
        self.state_dir = self.workdir / "state"
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, _release, self._res)
        self._root: Path | None = None
        # A port we picked ourselves may be taken by someone else before Dovecot binds it: then the first start
        # moves to another free port. Once started, the port never changes (restart() keeps it).
        self._port_fixed = port is not None

    # -- layout ---------------------------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """Where base_dir, the passwd file and the mail store live (the workdir, or a private /tmp/dvc-* dir)."""
        if self._root is None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            if _reachable_by_others(self.workdir) and len(str(self.workdir / "run")) <= MAX_BASE_DIR:
                self._root = self.workdir
            else:
                base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
                private = Path(tempfile.mkdtemp(prefix="dvc-", dir=base))
                private.chmod(0o755)
                self._res.private = private
                self._root = private
        return self._root

    @property
    def base_dir(self) -> Path:
        return self.root / "run"

    @property
    def passwd_path(self) -> Path:
        return self.root / "passwd"

    @property
    def mail_root(self) -> Path:
        """The user's Maildir++ root (INBOX); other folders are ``mail_root / ("." + name)``."""
        return self.root / "mail" / self.user

    @property
    def home(self) -> Path:
        return self.root / "home" / self.user

    @property
    def running(self) -> bool:
        return self._res.proc is not None and self._res.proc.poll() is None

    # -- lifecycle --------------------------------------------------------------------------------------------------

    @staticmethod
    def available() -> str | None:
        """None when Dovecot can run here, else the reason why not."""
        if _binary() is None:
            return "dovecot binary not found (neither /usr/sbin/dovecot nor `dovecot` on PATH)"
        if os.geteuid() != 0:
            return "a private Dovecot must be started as root (it drops to uid 65534 for mail access)"
        for name in ("dovecot", "dovenull"):
            try:
                pwd.getpwnam(name)
            except KeyError:
                return f"system user {name!r} missing (install the dovecot-core package)"
        return None

    def _write_config(self) -> None:
        root = self.root
        for path in (self.state_dir, self.base_dir, self.mail_root, self.home):
            path.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        _chown_tree(root / "mail", MAIL_UID, MAIL_GID)
        _chown_tree(root / "home", MAIL_UID, MAIL_GID)
        self.passwd_path.write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        self.passwd_path.chmod(0o644)
        self.config_path.write_text(
            f"""\
# Written by tests/dovecot.py - a private test instance, nothing from /etc/dovecot applies.
instance_name = {self.instance_name}
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log_path}
protocols = imap
listen = {self.host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
mail_uid = {MAIL_UID}
mail_gid = {MAIL_GID}
mail_location = maildir:{root}/mail/%u

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd_path}
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={root}/home/%u
}}

service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
{self.extra_config}
"""
        )

    def start(self) -> None:
        """Write the config, start Dovecot and wait (at most 10 s) until the port answers ``* OK``."""
        reason = self.available()
        if reason is not None:
            raise DovecotUnavailable(reason)
        if self.running:
            raise RuntimeError(f"Dovecot {self.instance_name} is already running on port {self.port}")
        for attempt in range(5):
            try:
                self._start_once()
            except _PortInUse:
                if self._port_fixed or attempt == 4:
                    raise
                self.port = _free_port(self.host)
            else:
                self._port_fixed = True
                return

    def _start_once(self) -> None:
        binary = _binary()
        if binary is None:
            raise DovecotUnavailable("dovecot binary not found")
        self._write_config()
        with self.stderr_path.open("wb") as err:
            # -F: stay in the foreground as our child, so we can reap it and notice an early exit.
            proc = subprocess.Popen(
                [binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                # Own session and process group: every Dovecot process stays in it, so stop() can reach the
                # ones the master leaves behind, and a terminal's Ctrl-C goes to the test runner only.
                start_new_session=True,
            )
        self._res.proc = proc
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                self._res.proc = None
                with contextlib.suppress(RuntimeError):
                    _end_group(proc.pid, grace=1.0)
                message = f"dovecot exited with status {proc.returncode} during startup\n{self._diagnostics()}"
                if "Address already in use" in _tail(self.stderr_path, 40):
                    raise _PortInUse(message)
                raise RuntimeError(message)
            if _greets(self.host, self.port):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"dovecot did not answer '* OK' on {self.host}:{self.port} within {START_TIMEOUT:.0f} s\n"
                    f"{self._diagnostics()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop Dovecot and wait until the port refuses connections; idempotent.

        SIGTERM to the master (pid from base_dir/master.pid) and at the same time to its whole process group, as
        systemd does on ``systemctl stop dovecot``: Dovecot 2.3's master alone exits without ending logged-in IMAP
        sessions (or its log and stats processes), and takes about a second doing so. Whatever is left after
        the master has gone gets SIGKILL after a grace period. After stop() no old connection works any more.
        """
        proc = self._res.proc
        if proc is None:
            return
        pid = proc.pid
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.base_dir / "master.pid").read_text().strip())
        if proc.poll() is None:
            for target in {pid, proc.pid}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGTERM)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        _end_group(proc.pid)
        self._res.proc = None
        deadline = time.monotonic() + STOP_TIMEOUT
        while _accepts(self.host, self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} still accepts after stopping Dovecot\n{self.log_tail()}")
            time.sleep(0.05)

    def restart(self) -> None:
        """Stop and start again on the same port with the same mail store."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop, and remove the private /tmp/dvc-* directory (and the mail store in it) if one was used."""
        self.stop()
        _release(self._res)
        self._root = None

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- IMAP ---------------------------------------------------------------------------------------------------------

    def client(self) -> imapclient.IMAPClient:
        """A logged-in client (plain IMAP, no TLS, 30 s timeout); the caller logs out."""
        client = imapclient.IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        try:
            client.login(self.user, self.password)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client

    def append(self, folder: str, raw: bytes) -> None:
        """APPEND one message through a fresh connection, creating the folder if missing."""
        self.append_many(folder, [raw])

    def append_many(self, folder: str, raws: Iterable[bytes]) -> None:
        """APPEND many messages over one connection, creating the folder if missing."""
        with self.client() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for raw in raws:
                client.append(folder, raw)

    def folder_messages(self, folder: str) -> list[bytes]:
        """Raw bytes of every message in the folder, in UID order (read-only; flags untouched; [] if no folder)."""
        with self.client() as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = sorted(int(uid) for uid in client.search("ALL"))
            if not uids:
                return []
            fetched = client.fetch(uids, ["BODY.PEEK[]"])
            return [bytes(fetched[uid][b"BODY[]"]) for uid in uids]

    def folder_count(self, folder: str) -> int:
        """Number of messages in the folder (IMAP STATUS); 0 if the folder does not exist."""
        with self.client() as client:
            if not client.folder_exists(folder):
                return 0
            return int(client.folder_status(folder, ["MESSAGES"])[b"MESSAGES"])

    # -- the mail store directly ------------------------------------------------------------------------------------

    def maildir(self, folder: str) -> Path:
        """The Maildir of a folder: INBOX is the root, others are "." + name (Maildir++)."""
        if folder.upper() == "INBOX":
            return self.mail_root
        if not folder or folder.startswith(".") or "/" in folder:
            raise ValueError(f"not a Maildir++ folder name: {folder!r}")
        return self.mail_root / f".{folder}"

    def deliver_to_maildir(self, folder: str, raw: bytes) -> None:
        """Write the message straight into the store as an MTA/LDA would: tmp/ then rename into new/.

        Works while Dovecot is stopped; a running Dovecot picks the file up on its next scan. The bytes are
        written as given (no line-ending conversion); the file is owned by 65534:65534 with mode 0600.
        """
        maildir = self.maildir(folder)
        created = not maildir.exists()
        for sub in ("", "cur", "new", "tmp"):
            path = maildir / sub
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, MAIL_UID, MAIL_GID)
        if created and maildir != self.mail_root:
            marker = maildir / "maildirfolder"
            marker.touch()
            os.chown(marker, MAIL_UID, MAIL_GID)
        now = time.time()
        host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        name = f"{int(now)}.M{int(now * 1_000_000) % 1_000_000}P{os.getpid()}Q{next(_deliveries)}.{host}"
        tmp = maildir / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchown(fd, MAIL_UID, MAIL_GID)
            os.fchmod(fd, 0o600)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, maildir / "new" / name)

    # -- diagnostics ------------------------------------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Dovecot's log file."""
        return _tail(self.log_path, lines)

    def _diagnostics(self) -> str:
        parts = []
        stderr = _tail(self.stderr_path, 40)
        if stderr:
            parts.append(f"--- dovecot stderr ---\n{stderr}")
        parts.append(f"--- {self.log_path} ---\n{self.log_tail()}")
        return "\n".join(parts)
