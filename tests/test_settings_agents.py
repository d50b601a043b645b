"""Agents by mail: [identity] agent_checks / trusted_authserv_ids, [[mailboxes]] agent_display, [[agents]] language,
[mail] cc_participants, [lifecycle] reopen_days and [notify] attach_max_bytes: parsed, defaulted, one line per
problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailticket.errors import ConfigError
from mailticket.settings import Settings, load

BASE = """
[[mailboxes]]
address = "support@example.com"
queue = "support"

[outbound]
transport = "maildir:outbox"

[[agents]]
address = "alex@example.com"
"""

FULL = """
[identity]
agent_checks = ["token", "dmarc", "token"]
trusted_authserv_ids = ["MX.Example.com", "mx2.example.com.", " mx.example.com "]

[[mailboxes]]
address = "support@example.com"
queue = "support"
agent_display = "{agent} from {mailbox} {{team}}"

[[mailboxes]]
address = "billing@example.com"
queue = "billing"

[outbound]
transport = "maildir:outbox"

[[agents]]
address = "alex@example.com"
language = "de"

[[agents]]
address = "bo@example.com"

[mail]
cc_participants = false

[lifecycle]
reopen_days = 30

[notify]
attach_max_bytes = 1048576
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def loaded(tmp_path: Path, text: str) -> Settings:
    return load(write(tmp_path, text), env={})


def one_problem(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    prefix = f"{path}: "
    found = info.value.problems
    assert len(found) == 1, found
    assert found[0].startswith(prefix)
    return found[0][len(prefix):]


def test_every_key_parsed(tmp_path: Path) -> None:
    settings = loaded(tmp_path, FULL)
    assert settings.identity.agent_checks == ("token", "dmarc")
    assert settings.identity.trusted_authserv_ids == ("mx.example.com", "mx2.example.com")
    support, billing = settings.mailboxes
    assert support.agent_display == "{agent} from {mailbox} {{team}}"
    assert support.agent_display.format(agent="Alex", mailbox="Support") == "Alex from Support {team}"
    assert billing.agent_display == "{agent}"
    alex, bo = settings.agents
    assert (alex.language, bo.language) == ("de", "en")
    assert settings.cc_participants is False
    assert settings.reopen_days == 30
    assert settings.attach_max_bytes == 1048576


def test_defaults(tmp_path: Path) -> None:
    for settings in (loaded(tmp_path, BASE), load(None, env={}, cwd=tmp_path)):
        assert settings.identity.agent_checks == ("token",)
        assert settings.identity.trusted_authserv_ids == ()
        assert all(m.agent_display == "{agent}" for m in settings.mailboxes)
        assert all(a.language == "en" for a in settings.agents)
        assert settings.cc_participants is True
        assert settings.reopen_days == 14
        assert settings.attach_max_bytes == 10 * 1024 * 1024


def test_trusted_ids_without_dmarc_are_fine(tmp_path: Path) -> None:
    settings = loaded(tmp_path, BASE + '[identity]\ntrusted_authserv_ids = ["mx.example.com"]\n')
    assert settings.identity.agent_checks == ("token",)
    assert settings.identity.trusted_authserv_ids == ("mx.example.com",)


@pytest.mark.parametrize(("extra", "problem"), [
    ('[identity]\nagent_checks = ["dmarc"]\ntrusted_authserv_ids = ["mx.example.com"]\n',
     'identity.agent_checks: must contain "token" (the reply token is always checked)'),
    ('[identity]\nagent_checks = []\n',
     'identity.agent_checks: must contain "token" (the reply token is always checked)'),
    ('[identity]\nagent_checks = ["token", "spf"]\n',
     "identity.agent_checks: 'spf' is not a check (one of token, dmarc)"),
    ('[identity]\nagent_checks = "token"\n',
     "identity.agent_checks: must be list, not 'token'"),
    ('[identity]\nagent_checks = ["token", "dmarc"]\n',
     'identity.agent_checks: "dmarc" needs identity.trusted_authserv_ids (the authserv-id your MTA writes in '
     "Authentication-Results; a sender can write that header too)"),
    ('[identity]\nagent_checks = ["token", "dmarc"]\ntrusted_authserv_ids = []\n',
     'identity.agent_checks: "dmarc" needs identity.trusted_authserv_ids (the authserv-id your MTA writes in '
     "Authentication-Results; a sender can write that header too)"),
    ('[identity]\nagent_checks = ["token", "dmarc"]\ntrusted_authserv_ids = ["mx example.com"]\n',
     "identity.trusted_authserv_ids: 'mx example.com' is not a host name (the authserv-id your MTA writes, "
     'e.g. "mx.example.com")'),
    ('[identity]\ntrusted_authserv_ids = [1]\n',
     "identity.trusted_authserv_ids: 1 is not a host name (the authserv-id your MTA writes, "
     'e.g. "mx.example.com")'),
    ('[identity]\ntrusted = ["mx.example.com"]\n',
     "identity.trusted: unknown key (known: agent_checks, secret_credential, secret_env, secret_file, "
     "trusted_authserv_ids)"),
    ('[[agents]]\naddress = "bo@example.com"\nlanguage = "fr"\n',
     "agents[1] \"bo@example.com\": language: 'fr': one of en, de"),
    ('[mail]\ncc_participants = "yes"\n',
     "mail.cc_participants: must be bool, not 'yes'"),
    ('[lifecycle]\nreopen_days = 0\n', "lifecycle.reopen_days: must be greater than 0"),
    ('[lifecycle]\nreopen_days = true\n', "lifecycle.reopen_days: must be an integer, not True"),
    ('[lifecycle]\nreopen_days = 1.5\n', "lifecycle.reopen_days: must be int, not 1.5"),
    ('[lifecycle]\nreopen_after = 3\n', "lifecycle.reopen_after: unknown key (known: pending_close_after, "
     "pending_reminder_after, reopen_days, solved_close_after)"),
    ('lifecycle = 3\n', "lifecycle: must be a table"),
    ('[notify]\nattach_max_bytes = -1\n', "notify.attach_max_bytes: must be greater than 0"),
    ('[notify]\nattach_max_bytes = "10M"\n', "notify.attach_max_bytes: must be int, not '10M'"),
    ('[notify]\nattach_max = 3\n', "notify.attach_max: unknown key (known: attach_max_bytes)"),
])
def test_each_error(tmp_path: Path, extra: str, problem: str) -> None:
    # lifecycle = 3 must precede every table, so the extra goes first when it is a bare key.
    text = extra + BASE if not extra.startswith("[") else BASE + extra
    assert one_problem(tmp_path, text) == problem


@pytest.mark.parametrize(("display", "problem"), [
    ('"{agent} @ {team}"', "{team} is not allowed"),
    ('"{}"', "{} is not allowed"),
    ('"{0}"', "{0} is not allowed"),
    ('"{agent.__class__}"', "{agent.__class__} is not allowed"),
    ('"{agent[0]}"', "{agent[0]} is not allowed"),
    ('"{agent!r}"', "{agent!r} is not allowed"),
    ('"{agent:>40}"', "{agent:>40} is not allowed"),
    ('"{agent"', "is not a format string"),
    ('"agent}"', "is not a format string"),
    ('""', "must not be empty"),
    ('"{agent}\\r\\nBcc: x@evil.example"', "must be one line"),
    ("3", "must be str, not 3"),
])
def test_agent_display_errors(tmp_path: Path, display: str, problem: str) -> None:
    text = BASE.replace('queue = "support"\n', f'queue = "support"\nagent_display = {display}\n')
    found = one_problem(tmp_path, text)
    assert found.startswith("mailboxes[0].agent_display: "), found
    assert problem in found, found


def test_agents_as_a_table_says_where_attach_max_bytes_lives(tmp_path: Path) -> None:
    text = BASE.replace('[[agents]]\naddress = "alex@example.com"\n', "[agents]\nattach_max_bytes = 5\n")
    assert one_problem(tmp_path, text) == "agents: [[agents]] is the list of agents; attach_max_bytes lives in [notify]"
