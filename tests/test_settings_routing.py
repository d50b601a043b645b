"""[[agents]] aliases and skills, [[queues]], [[routing]] and [mail] priority_from_headers:
parsed into frozen dataclasses, every problem one line naming the rule, queue or agent and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailticket.errors import ConfigError
from mailticket.settings import QueueSettings, RoutingThen, RoutingWhen, Settings, load

BASE = """
[[mailboxes]]
address = "support@example.com"
queue = "support"

[outbound]
transport = "maildir:outbox"

[[agents]]
address = "Alex@Example.com"
name = "Alex"
aliases = ["alex.smith@example.com", "ALEX@other.example"]
skills = ["Billing", " de "]

[[agents]]
address = "bo@example.com"
"""

FULL = BASE + r"""
[mail]
priority_from_headers = true

[[queues]]
name = "billing"
assignment = "round_robin"
agents = ["alex.smith@example.com", "bo@example.com", "alex@example.com"]
language = "de"

[[queues]]
name = "vip"

[[routing]]
name = "billing"
when.subject = "(?i)invoice|rechnung"
when.body = "IBAN"
when.sender = "@customer\\.example$"
when.recipient = "\\+billing@"
when.sender_domain = ["Example.ORG", "example.net"]
when.header.X-Foo = "^yes$"
when.header.List-Id = "news"
when.has_attachment = true
when.verdict = ["human", "bounce"]
when.known_customer = false
then.queue = "billing"
then.priority = "high"
then.tags = [" Billing ", "money", "billing"]
then.assignee = "ALEX@other.example"
then.acknowledge = false
then.hold = true
stop = true

[[routing]]
name = "everything"
then.tags = ["seen"]

[[routing]]
name = "halt"
when.verdict = "spam"
when.sender_domain = "spam.example"
stop = true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def loaded(tmp_path: Path, text: str) -> Settings:
    return load(write(tmp_path, text), env={})


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    prefix = f"{path}: "
    assert all(p.startswith(prefix) for p in info.value.problems), info.value.problems
    return [p[len(prefix):] for p in info.value.problems]


def one_problem(tmp_path: Path, text: str) -> str:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def test_full_config_round_trips(tmp_path: Path) -> None:
    settings = loaded(tmp_path, FULL)
    assert settings.priority_from_headers is True

    alex, bo = settings.agents
    assert (alex.address, alex.name) == ("alex@example.com", "Alex")
    assert alex.aliases == ("alex.smith@example.com", "alex@other.example")
    assert alex.skills == ("billing", "de")
    assert (bo.address, bo.name, bo.aliases, bo.skills) == ("bo@example.com", "bo@example.com", (), ())

    assert settings.queues == (
        QueueSettings("billing", "round_robin", ("alex@example.com", "bo@example.com"), "de"),
        QueueSettings("vip", "none", (), "en"),
    )
    assert settings.queue_names == ("billing", "vip", "support")
    assert settings.queue_for("vip") == QueueSettings("vip")
    assert settings.queue_for("support") is None

    billing, everything, halt = settings.routing
    assert (billing.name, billing.stop) == ("billing", True)
    when = billing.when
    assert isinstance(when.subject, re.Pattern) and when.subject.search("Your RECHNUNG")
    assert when.body is not None and when.body.pattern == "IBAN"
    assert when.sender is not None and when.sender.search("bob@customer.example")
    assert when.recipient is not None and when.recipient.search("support+billing@example.com")
    assert when.sender_domain == ("example.org", "example.net")
    assert [(name, p.pattern) for name, p in when.headers] == [("x-foo", "^yes$"), ("list-id", "news")]
    assert (when.has_attachment, when.verdict, when.known_customer) == (True, ("human", "bounce"), False)
    assert billing.then == RoutingThen(queue="billing", priority="high", tags=("billing", "money"),
                                       assignee="alex@example.com", acknowledge=False, hold=True)

    assert everything.when == RoutingWhen()  # an empty when matches every new ticket
    assert everything.then == RoutingThen(tags=("seen",))
    assert everything.stop is False
    assert (halt.when.verdict, halt.when.sender_domain, halt.then, halt.stop) == (
        ("spam",), ("spam.example",), RoutingThen(), True)


def test_agent_for_finds_by_address_and_alias(tmp_path: Path) -> None:
    settings = loaded(tmp_path, FULL)
    for address in ("alex@example.com", "Alex.Smith@Example.com", "alex@OTHER.example"):
        agent = settings.agent_for(address)
        assert agent is not None and agent.address == "alex@example.com"
        assert settings.is_agent(address)
    assert settings.agent_for("carol@example.com") is None
    assert not settings.is_agent("support@example.com")


def test_configs_without_the_new_sections_still_load(tmp_path: Path) -> None:
    settings = loaded(tmp_path, '[outbound]\ntransport = "maildir:out"\n[[agents]]\naddress = "a@example.com"\n')
    assert (settings.queues, settings.routing, settings.priority_from_headers) == ((), (), False)
    assert settings.agents[0].aliases == () and settings.agents[0].skills == ()
    assert settings.queue_names == ("support",)
    embedded = load(None, env={}, cwd=tmp_path)
    assert (embedded.queues, embedded.routing, embedded.priority_from_headers) == ((), (), False)


@pytest.mark.parametrize(("rule", "expected"), [
    ('name = "billing"\nwhen.subject = "(unclosed"\nthen.tags = ["x"]',
     'routing[0] "billing": when.subject: not a valid regular expression: missing ), unterminated subpattern'),
    ('name = "b"\nwhen.body = "["\nthen.tags = ["x"]', 'routing[0] "b": when.body: not a valid regular expression'),
    ('name = "b"\nwhen.header.X-Foo = "*"\nthen.tags = ["x"]',
     'routing[0] "b": when.header.X-Foo: not a valid regular expression'),
    ('name = "vip"\nthen.queue = "vipp"',
     'routing[0] "vip": then.queue: unknown queue "vipp" (queues: billing, support)'),
    ('name = "p"\nthen.priority = "asap"', 'routing[0] "p": then.priority: unknown priority "asap" '
                                           '(one of low, normal, high, urgent)'),
    ('name = "a"\nthen.assignee = "carol@example.com"', 'routing[0] "a": then.assignee: "carol@example.com" is not '
                                                        'a configured agent'),
    ('name = "v"\nwhen.verdict = ["human", "bounced"]\nstop = true',
     'routing[0] "v": when.verdict: unknown verdict "bounced" (one of human, auto_reply,'),
    ('name = "v"\nwhen.verdict = []\nstop = true',
     'routing[0] "v": when.verdict: must be a string or a non-empty list'),
    ('name = "d"\nwhen.sender_domain = "bad domain"\nstop = true',
     'routing[0] "d": when.sender_domain: "bad domain" is not a domain name'),
    ('name = "d"\nwhen.sender_domain = 5\nstop = true', 'routing[0] "d": when.sender_domain: must be a string or'),
    ('name = "h"\nwhen.header."X Foo" = "x"\nstop = true', 'routing[0] "h": when.header.X Foo: not a header name'),
    ('name = "h"\nwhen.header.X-Foo = "a"\nwhen.header.x-foo = "b"\nstop = true',
     'routing[0] "h": when.header.x-foo: header x-foo appears twice'),
    ('name = "h"\nwhen.header = "X-Foo"\nstop = true', 'routing[0] "h": when.header: must be a table'),
    ('name = "t"\nwhen.has_attachment = "yes"\nstop = true', 'routing[0] "t": when.has_attachment: must be bool'),
    ('name = "t"\nwhen.known_customer = 1\nstop = true', 'routing[0] "t": when.known_customer: must be bool'),
    ('name = "t"\nthen.tags = ["ok", " "]', 'routing[0] "t": then.tags: must be a list of non-empty strings'),
    ('name = "t"\nthen.hold = "no"', 'routing[0] "t": then.hold: must be bool'),
    ('name = "t"\nthen.acknowledge = 0', 'routing[0] "t": then.acknowledge: must be bool'),
    ('name = "t"\nthen.tags = ["x"]\nstop = "yes"', 'routing[0] "t": stop: must be bool'),
    ('name = "idle"\nwhen.subject = "x"', 'routing[0] "idle": does nothing'),
    ('name = "idle"\nthen = {}', 'routing[0] "idle": does nothing'),
    ('when.subject = "x"\nthen.tags = ["x"]', "routing[0]: name: required"),
    ('name = " "\nthen.tags = ["x"]', "routing[0]: name: must not be empty"),
    ('name = "t"\nthen.tags = ["x"]\ncolour = "red"', 'routing[0] "t": colour: unknown key (known: name, stop, then, '
                                                        'when)'),
    ('name = "t"\nthen.tags = ["x"]\nwhen.from = "x"', 'routing[0] "t": when.from: unknown key (known: body,'),
    ('name = "t"\nthen.tags = ["x"]\nthen.close = true',
     'routing[0] "t": then.close: unknown key (known: acknowledge,'),
    ('name = "t"\nwhen = "x"\nthen.tags = ["x"]', 'routing[0] "t": when: must be a table'),
])
def test_routing_problems_name_the_rule_and_key(tmp_path: Path, rule: str, expected: str) -> None:
    text = BASE + '\n[[queues]]\nname = "billing"\n\n[[routing]]\n' + rule + "\n"
    problem = one_problem(tmp_path, text)
    assert problem.startswith(expected), problem


def test_every_routing_problem_at_once(tmp_path: Path) -> None:
    text = BASE + """
[[routing]]
name = "billing"
when.subject = "("
then.queue = "nope"

[[routing]]
name = "billing"
then.priority = "urgent"

[[routing]]
then.tags = ["x"]
"""
    found = problems(tmp_path, text)
    assert len(found) == 4, found
    assert found[0].startswith('routing[0] "billing": when.subject: not a valid regular expression')
    assert found[1] == 'routing[0] "billing": then.queue: unknown queue "nope" (queues: support)'
    assert found[2] == "routing[2]: name: required"
    assert found[3] == 'routing: name "billing" appears twice'


def test_routing_and_queues_must_be_arrays_of_tables(tmp_path: Path) -> None:
    assert one_problem(tmp_path, BASE + '[routing]\nname = "x"\n') == (
        "routing: must be an array of tables ([[routing]])")
    assert one_problem(tmp_path, "queues = 3\n" + BASE) == (
        "queues: must be an array of tables ([[queues]])")
    assert one_problem(tmp_path, "routing = [1]\n" + BASE) == "routing[0]: must be a table"


@pytest.mark.parametrize(("queue", "expected"), [
    ('name = "billing"\nassignment = "random"', 'queues[0] "billing": assignment: \'random\': one of none, '
                                                 'round_robin, least_open, skills'),
    ('name = "billing"\nlanguage = "fr"', 'queues[0] "billing": language: \'fr\': one of en, de'),
    ('name = "billing"\nagents = ["carol@example.com"]', 'queues[0] "billing": agents: "carol@example.com" is not a '
                                                          'configured agent'),
    ('name = "billing"\nagents = "alex@example.com"', 'queues[0] "billing": agents: must be list'),
    ('name = "billing"\nmembers = []', 'queues[0] "billing": members: unknown key (known: agents, assignment, '
                                       'language, name)'),
    ('assignment = "skills"', "queues[0]: name: required"),
])
def test_queue_problems_name_the_queue_and_key(tmp_path: Path, queue: str, expected: str) -> None:
    problem = one_problem(tmp_path, BASE + "\n[[queues]]\n" + queue + "\n")
    assert problem.startswith(expected), problem


def test_queue_names_are_unique_and_skills_without_skilled_agents_is_accepted(tmp_path: Path) -> None:
    text = BASE + '[[queues]]\nname = "a"\n[[queues]]\nname = "a"\n'
    assert one_problem(tmp_path, text) == 'queues: name "a" appears twice'
    settings = loaded(tmp_path, BASE + '[[queues]]\nname = "s"\nassignment = "skills"\nagents = ["bo@example.com"]\n')
    assert settings.queues == (QueueSettings("s", "skills", ("bo@example.com",)),)
    # a [[queues]] table may configure a mailbox's queue; it is listed once
    settings = loaded(tmp_path, BASE + '[[queues]]\nname = "support"\nassignment = "least_open"\n')
    assert settings.queue_names == ("support",)


@pytest.mark.parametrize(("agents", "expected"), [
    ('[[agents]]\naddress = "carol@example.com"\naliases = ["ALEX.smith@example.com"]',
     'agents: address alex.smith@example.com appears twice (agents[0] "Alex@Example.com", '
     'agents[2] "carol@example.com")'),
    ('[[agents]]\naddress = "bo@example.com"',
     'agents: address bo@example.com appears twice (agents[1] "bo@example.com", agents[2] "bo@example.com")'),
    ('[[agents]]\naddress = "carol@example.com"\naliases = ["Support@example.com"]',
     'agents[2] "carol@example.com": aliases: support@example.com is a support mailbox address'),
    ('[[agents]]\naddress = "support@example.com"',
     'agents[2] "support@example.com": address: support@example.com is a support mailbox address'),
    ('[[agents]]\naddress = "carol@example.com"\naliases = ["carol"]',
     'agents[2] "carol@example.com": aliases: "carol" is not an email address'),
    ('[[agents]]\naddress = "carol@example.com"\naliases = "c@example.com"',
     'agents[2] "carol@example.com": aliases: must be list'),
    ('[[agents]]\naddress = "carol@example.com"\nskills = ["ok", 3]',
     'agents[2] "carol@example.com": skills: must be a list of non-empty strings'),
    ('[[agents]]\naddress = "carol@example.com"\nteam = "x"',
     'agents[2] "carol@example.com": team: unknown key (known: address, aliases, language, name, skills)'),
    ('[[agents]]\nname = "Nobody"', "agents[2]: address: required"),
    ('[[agents]]\naddress = "carol@example.com"\naliases = ["Carol@example.com"]',
     'agents[2] "carol@example.com": aliases: carol@example.com is the agent\'s own address'),
])
def test_agent_problems_name_the_agent_and_key(tmp_path: Path, agents: str, expected: str) -> None:
    problem = one_problem(tmp_path, BASE + agents + "\n")
    assert problem.startswith(expected), problem


def test_mail_priority_from_headers_must_be_bool(tmp_path: Path) -> None:
    assert one_problem(tmp_path, BASE + '[mail]\npriority_from_headers = "yes"\n').startswith(
        "mail.priority_from_headers: must be bool")


def test_check_config_exits_78_naming_the_rule(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    path = write(tmp_path, BASE + '[[routing]]\nname = "billing"\nwhen.subject = "(?i)invoice|(rechnung"\n'
                                  'then.tags = ["billing"]\n')
    result = run_cli(path, "check-config")
    assert result.returncode == 78, result.stderr.decode()
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f'{path}: routing[0] "billing": when.subject: not a valid regular expression: ')
