"""The first day of a real install (issue 10): the example config and the shipped unit start as an
unprivileged user, state lives in the state dir, what an admin causes is one line (never a
traceback), and state is private whatever the umask."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailticket.app import App
from tests.conftest import free_port, ingest, mail

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "mailticket.example.toml"
UNIT = ROOT / "systemd" / "mailticket.service"
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cli(*args: str, config: Path | None = None, env: dict[str, str] | None = None, cwd: Path | None = None,
        as_nobody: bool = False, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "mailticket", *(["-c", str(config)] if config else []), *args]
    if as_nobody:
        command = [*NOBODY, *command]
    clean = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "MAILTICKET_CONFIG")}
    return subprocess.run(command, input=stdin, capture_output=True, timeout=120, env={**clean, **(env or {})},
                          cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err, err
    return err


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder user nobody can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="mt-install-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def need_setpriv() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("running the CLI as user nobody needs root and setpriv (util-linux)")
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import mailticket"], capture_output=True, timeout=60,
                           cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run this checkout's Python (a private folder on its path?): "
                    f"{probe.stderr.decode().strip().splitlines()[-1:]}")


def example_config(etc: Path, port: int) -> Path:
    """The example config with only its addresses edited (and a free port for the listener)."""
    text = EXAMPLE.read_text().replace("example.com", "example.org").replace("127.0.0.1:2525", f"127.0.0.1:{port}")
    etc.mkdir(parents=True, exist_ok=True)
    config = etc / "mailticket.toml"
    config.write_text(text)
    return config


# -- 1. a production install that starts -------------------------------------------------------------

def test_example_config_in_a_read_only_etc_starts_as_nobody_with_state_in_the_state_dir(shared_tmp: Path) -> None:
    need_setpriv()
    etc = shared_tmp / "etc" / "mailticket"
    state = shared_tmp / "var" / "lib" / "mailticket"
    port = free_port()
    config = example_config(etc, port)
    text = config.read_text().replace('state_dir = "/var/lib/mailticket"', f'state_dir = "{state}"')
    config.write_text(text)
    # No state folder yet and nowhere to create it: one line naming the key, the path and the user; exit 73.
    (shared_tmp / "var").mkdir()
    result = cli("check-config", config=config, as_nobody=True)
    err = one_line_error(result)
    assert result.returncode == 73, err
    assert "database.url" in err and str(state) in err and "nobody" in err
    assert not state.exists()
    # The unit's StateDirectory= makes /var/lib/mailticket, owned by the service's user.
    state.mkdir(parents=True)
    os.chown(state, *_nobody_ids())
    state.chmod(0o700)
    before = sorted(p.name for p in etc.iterdir())
    result = cli("check-config", config=config, as_nobody=True)
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(p.name for p in etc.iterdir()) == before  # check-config wrote nothing
    assert list(state.iterdir()) == []
    result = cli("db", "upgrade", config=config, as_nobody=True)
    assert result.returncode == 0, result.stderr.decode()
    assert (state / "mailticket.db").is_file() and not (etc / "var").exists()
    serve = subprocess.Popen([*NOBODY, sys.executable, "-m", "mailticket", "-c", str(config), "serve"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port) and serve.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert serve.poll() is None, serve.communicate()[1].decode()
        assert mode(state / "outbox") == 0o700
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err_bytes = serve.communicate(timeout=60)
    assert serve.returncode == 0, err_bytes.decode()
    assert "Traceback" not in err_bytes.decode()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _nobody_ids() -> tuple[int, int]:
    import grp
    import pwd

    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


def test_state_dir_defaults_to_systemd_state_directory(tmp_path: Path) -> None:
    config = example_config(tmp_path / "etc", free_port())
    config.write_text(config.read_text().replace('state_dir = "/var/lib/mailticket"\n', ""))
    state = tmp_path / "state"
    result = cli("db", "upgrade", config=config, env={"STATE_DIRECTORY": str(state)})
    assert result.returncode == 0, result.stderr.decode()
    assert (state / "mailticket.db").is_file()
    assert not (tmp_path / "etc" / "var").exists()


def test_check_config_changes_nothing_on_disk(tmp_path: Path) -> None:
    result = cli("check-config", cwd=tmp_path)  # the embedded default
    assert result.returncode == 0, result.stderr.decode()
    assert list(tmp_path.iterdir()) == []
    assert b"db upgrade" in result.stdout  # it says the database does not exist yet


def test_ingest_for_a_wrong_path_creates_no_database(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/typo/mailticket.db"\n')
    result = cli("ingest", config=config, stdin=mail())
    err = one_line_error(result)
    assert result.returncode in (75, 78), err  # MTAs retry both: nothing bounces
    assert "db upgrade" in err
    assert not (tmp_path / "typo").exists()


def test_unit_stops_restarting_on_admin_errors_and_keeps_state_private() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(UNIT)
    service = unit["Service"]
    assert set(service["RestartPreventExitStatus"].split()) == {"73", "78"}
    assert service["UMask"] == "0077"
    assert service["StateDirectory"] == "mailticket"


# -- 3. one line, never a traceback --------------------------------------------------------------------

def test_postgres_url_without_the_driver_says_what_to_install(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    (shadow / "psycopg").mkdir(parents=True)
    (shadow / "psycopg" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\", "
                                                   "name='psycopg')\n")
    config = tmp_path / "c.toml"
    config.write_text('[database]\nurl = "postgresql+psycopg://mt@127.0.0.1:5432/mt"\n')
    for command in (["check-config"], ["tickets", "list"]):
        result = cli(*command, config=config, env={"PYTHONPATH": str(shadow)})
        err = one_line_error(result)
        assert result.returncode == 78, err
        assert "mailticket[postgres]" in err and err.count("\n") == 1


def test_unreachable_database_is_one_line_with_host_port_and_reason(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "postgresql+psycopg://mt@127.0.0.1:{port}/mt"\n')
    for command in (["check-config"], ["tickets", "list"], ["status"]):
        result = cli(*command, config=config)
        err = one_line_error(result)
        assert result.returncode == 75, err
        assert f"127.0.0.1:{port}" in err and "unreachable" in err, err
    debug = cli("--debug", "tickets", "list", config=config)
    assert b"Traceback" in debug.stderr and debug.returncode == 75


def test_a_closed_pipe_is_not_an_error(app: App) -> None:
    settings_path = Path(app.settings.source)
    for i in range(50):
        assert ingest(app, mail(subject=f"Ticket {i}"))[1] == "new_ticket"
    # The reader is gone before we write: every write fails with EPIPE.
    child = subprocess.Popen([sys.executable, "-m", "mailticket", "-c", str(settings_path), "tickets", "list"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    # And as an admin types it.
    shell = subprocess.run(f"{sys.executable} -m mailticket -c {settings_path} tickets list | head -1", shell=True,
                           capture_output=True, timeout=60)
    assert shell.stdout.count(b"\n") == 1 and b"Traceback" not in shell.stderr


# -- 8. file modes -----------------------------------------------------------------------------------

def test_fresh_install_state_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the child inherits a permissive umask
    try:
        assert cli("ingest", cwd=tmp_path, stdin=mail()).returncode == 0  # the embedded default upgrades itself
    finally:
        os.umask(old)
    var = tmp_path / "var"
    assert mode(var) == 0o700
    assert mode(var / "mailticket.db") == 0o600
    for companion in ("mailticket.db-wal", "mailticket.db-shm"):
        if (var / companion).exists():
            assert mode(var / companion) == 0o600, companion
    assert mode(var / "secret") == 0o600  # the acknowledgement's Message-ID was signed
