"""Configuration: where it comes from, defaults, and one clear line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailticket.errors import ConfigError
from mailticket.settings import load, locate_config


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path, env=env or {})
    return info.value.problems


def test_embedded_default(tmp_path: Path) -> None:
    settings = load(None, env={}, cwd=tmp_path)
    assert settings.source == "embedded default"
    assert settings.database_url == f"sqlite:///{tmp_path}/var/mailticket.db"
    assert [str(x) for x in settings.smtp.listen] == ["127.0.0.1:2525"]
    assert [m.address for m in settings.mailboxes] == ["support@localhost"]
    assert settings.outbound.maildir == tmp_path / "var" / "outbox"
    assert settings.auto_upgrade is True
    assert settings.subject_tag_prefix == ""


def test_locate_config_precedence(tmp_path: Path) -> None:
    assert locate_config(None, {}, tmp_path) is None
    (tmp_path / "mailticket.toml").write_text("")
    assert locate_config(None, {}, tmp_path) == tmp_path / "mailticket.toml"
    assert locate_config(None, {"MAILTICKET_CONFIG": "/etc/x.toml"}, tmp_path) == Path("/etc/x.toml")
    assert locate_config("/a.toml", {"MAILTICKET_CONFIG": "/etc/x.toml"}, tmp_path) == Path("/a.toml")


def test_relative_state_paths_resolve_against_the_state_dir(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "c.toml"
    path.parent.mkdir()
    path.write_text('[database]\nurl = "sqlite:///data/db.sqlite"\n[outbound]\ntransport = "maildir:out"\n')
    # No [paths] state_dir and no $STATE_DIRECTORY: var/ beside the config file.
    settings = load(path, env={}, cwd=Path("/"))
    assert settings.state_dir == tmp_path / "etc" / "var"
    assert settings.database_url == f"sqlite:///{tmp_path}/etc/var/data/db.sqlite"
    assert settings.outbound.maildir == tmp_path / "etc" / "var" / "out"
    assert settings.identity.generated_file == tmp_path / "etc" / "var" / "secret"
    assert settings.auto_upgrade is False
    # systemd's StateDirectory= sets $STATE_DIRECTORY.
    settings = load(path, env={"STATE_DIRECTORY": "/var/lib/mailticket"}, cwd=Path("/"))
    assert settings.database_url == "sqlite:////var/lib/mailticket/data/db.sqlite"
    # An explicit state_dir wins; relative to the config file.
    path.write_text('[paths]\nstate_dir = "state"\n[outbound]\ntransport = "maildir:out"\n')
    settings = load(path, env={"STATE_DIRECTORY": "/var/lib/mailticket"}, cwd=Path("/"))
    assert settings.database_url == f"sqlite:///{tmp_path}/etc/state/mailticket.db"
    assert settings.outbound.maildir == tmp_path / "etc" / "state" / "out"
    # Absolute paths stay as they are.
    path.write_text('[database]\nurl = "sqlite:////srv/mt.db"\n[outbound]\ntransport = "maildir:/srv/out"\n')
    settings = load(path, env={"STATE_DIRECTORY": "/var/lib/mailticket"}, cwd=Path("/"))
    assert (settings.database_url, settings.outbound.maildir) == ("sqlite:////srv/mt.db", Path("/srv/out"))
    assert problems(tmp_path, '[paths]\nstate_dir = ""\n') == [f"{tmp_path}/c.toml: paths.state_dir: must not be empty"]


def test_smtp_transports_and_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    path = tmp_path / "c.toml"
    path.write_text(f'[outbound]\ntransport = "smtp+starttls://relay.example.com"\nusername = "mt"\n'
                    f'password_file = "{secret}"\n')
    smtp = load(path, env={}).outbound.smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.security, smtp.username, smtp.password) == (
        "relay.example.com", 587, "starttls", "mt", "s3cret")
    path.write_text('[outbound]\ntransport = "smtps://relay:2465"\nusername = "mt"\npassword_env = "PW"\n')
    smtp = load(path, env={"PW": "from-env"}).outbound.smtp
    assert smtp is not None and (smtp.port, smtp.security, smtp.password) == (2465, "implicit", "from-env")


def test_secrets_are_never_inline(tmp_path: Path) -> None:
    found = problems(tmp_path, '[outbound]\ntransport = "smtp://mt:hunter2@relay"\n')
    assert len(found) == 1 and "outbound.transport: inline credentials" in found[0]
    assert "hunter2" not in found[0]
    found = problems(tmp_path, '[outbound]\ntransport = "smtp://relay"\nusername = "u"\npassword_env = "NOPE"\n')
    assert any("outbound.password_env: environment variable NOPE is not set" in p for p in found)


def test_every_problem_named_at_once(tmp_path: Path) -> None:
    found = problems(tmp_path, """
[database]
url = "mysql://x"
[[mailboxes]]
address = "a@example.com"
[[mailboxes]]
address = "A@example.com"
[smtp]
max_message_size = -1
[mail]
subject_tag_prefix = "<script>"
[log]
level = "loud"
""")
    joined = "\n".join(found)
    for key in ("database.url", "mailboxes: address a@example.com appears twice", "smtp.max_message_size",
                "mail.subject_tag_prefix", "log.level"):
        assert key in joined
    assert len(found) == 5
    assert all(p.startswith(str(tmp_path / "c.toml")) for p in found)


def test_not_toml_is_one_clear_line(tmp_path: Path) -> None:
    found = problems(tmp_path, "[database\nurl=")
    assert len(found) == 1 and "not valid TOML" in found[0]


def test_postgres_url_gets_driver_and_password(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[database]\nurl = "postgresql://mt@db.example.com:5433/mt"\npassword_env = "DBPW"\n')
    settings = load(path, env={"DBPW": "p@ss/word"})
    assert settings.database_url == "postgresql+psycopg://mt:p%40ss%2Fword@db.example.com:5433/mt"
    assert not settings.is_sqlite


def test_plus_addressing_maps_to_mailbox(tmp_path: Path) -> None:
    settings = load(None, env={}, cwd=tmp_path)
    assert settings.mailbox_for("Support+billing@LOCALHOST") is not None
    assert settings.mailbox_for("other@localhost") is None


def test_listeners_ipv6_and_lmtp(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[smtp]\nlisten = ["127.0.0.1:2525", "[::1]:2525", "lmtp:127.0.0.1:24"]\n')
    listeners = load(path, env={}).smtp.listen
    assert [(x.host, x.port, x.lmtp) for x in listeners] == [
        ("127.0.0.1", 2525, False), ("::1", 2525, False), ("127.0.0.1", 24, True)]
    found = problems(tmp_path, '[smtp]\nlisten = ["::1:25"]\ntls_cert = "/nonexistent.pem"\n')
    assert any("smtp.listen" in p for p in found)
    assert any("smtp.tls_cert: STARTTLS needs both" in p for p in found)


IMAP_MAILBOX = '[[mailboxes]]\naddress = "support@example.com"\n[mailboxes.imap]\n'


def test_imap_table_defaults_and_values(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(IMAP_MAILBOX + 'host = "imap.example.com"\nusername = "support"\npassword_env = "PW"\n')
    imap = load(path, env={"PW": "pw"}).mailboxes[0].imap
    assert imap is not None
    assert (imap.port, imap.tls, imap.folder, imap.after, imap.idle, imap.quarantine_folder) == (
        993, "implicit", "INBOX", "seen", True, None)
    assert (imap.password, imap.account) == ("pw", "support@imap.example.com:993")
    path.write_text(IMAP_MAILBOX + 'host = "h"\ntls = "starttls"\nusername = "u"\n'
                    'oauth2_token_command = "get-token --user u"\nafter = "move:Done"\n'
                    'quarantine_folder = "Bad"\nidle = false\npoll_interval = 30\n')
    imap = load(path, env={}).mailboxes[0].imap
    assert imap is not None
    assert (imap.port, imap.oauth2_token_command, imap.move_to, imap.after, imap.idle, imap.poll_interval) == (
        143, ("get-token", "--user", "u"), "Done", "move:Done", False, 30.0)


def test_imap_problems_are_named(tmp_path: Path) -> None:
    found = "\n".join(problems(tmp_path, IMAP_MAILBOX + 'tls = "none"\nafter = "delete"\nport = 0\nfolder = "INBOX"\n'
                               'quarantine_folder = "INBOX"\npassword = "inline"\nfolders = ["x"]\n'))
    for expected in (
        "mailboxes[0].imap.host: required",
        "mailboxes[0].imap.username: required",
        'mailboxes[0].imap.tls: "none" sends the password in clear text; set insecure = true',
        "mailboxes[0].imap.after: 'delete'",
        "mailboxes[0].imap.port: must be 1-65535",
        "mailboxes[0].imap.quarantine_folder: must differ from folder",
        "mailboxes[0].imap.password: inline passwords are not accepted",
        "mailboxes[0].imap.folders: unknown key",
    ):
        assert expected in found, found
    both = problems(tmp_path, IMAP_MAILBOX + 'host = "h"\nusername = "u"\npassword_env = "PW"\n'
                    'oauth2_token_command = ["t"]\n', env={"PW": "x"})
    assert any("not both" in p for p in both), both
    loop = problems(tmp_path, IMAP_MAILBOX + 'host = "h"\nusername = "u"\npassword_env = "PW"\nafter = "move:INBOX"\n',
                    env={"PW": "x"})
    assert any("fetch each message forever" in p for p in loop), loop


def test_limits_table(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[limits]\nauto_mail_per_recipient = ["100/1d", "5/30s", "20/2h"]\nbounce_suppress_days = 7\n'
                    '[mail]\nmachine_replies = "review_ticket"\n')
    settings = load(path, env={})
    assert settings.limits.ladder == ((5, 30), (20, 7200), (100, 86400))
    assert settings.limits.bounce_suppress_days == 7.0 and settings.machine_replies == "review_ticket"
    assert "abuse" in settings.limits.no_auto_reply  # the defaults
    found = "\n".join(problems(tmp_path, '[limits]\nauto_mail_per_recipient = ["ten/1m"]\nno_auto_reply = ["(x"]\n'
                                         'bounce_suppress_days = -1\n[mail]\nmachine_replies = "drop"\n'))
    for expected in ("limits.auto_mail_per_recipient: 'ten/1m' is not N/PERIOD", "limits.no_auto_reply: '(x'",
                     "limits.bounce_suppress_days: must be 0 or more", "mail.machine_replies"):
        assert expected in found, found


def test_identity_secret_sources_and_problems(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[identity]\nsecret_env = "MT_SECRET"\n')
    assert load(path, env={"MT_SECRET": "s" * 32}).identity.secret == "s" * 32
    assert load(None, env={}, cwd=tmp_path).identity == load(None, env={}, cwd=tmp_path).identity
    assert load(None, env={}, cwd=tmp_path).identity.generated_file == tmp_path / "var" / "secret"
    assert problems(tmp_path, '[identity]\nsecret_env = "NOPE"\n') == [
        f"{path}: identity.secret_env: environment variable NOPE is not set"]
    assert any("identity.secret: at least 16 characters" in p
               for p in problems(tmp_path, '[identity]\nsecret_env = "S"\n', env={"S": "short"}))
    assert any("identity.secret: inline secrets are not accepted" in p
               for p in problems(tmp_path, '[identity]\nsecret = "x"\n'))
    assert any("identity.secret_file: cannot read" in p
               for p in problems(tmp_path, f'[identity]\nsecret_file = "{tmp_path}/missing"\n'))
