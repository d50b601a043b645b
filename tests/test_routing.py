"""Routing, queues and agents end to end: real config files, the live SMTP listener, the pipe,
the rules engine, the CLI (`rules test`, `agents`, `tickets`, `explain`, `check-config`)."""

from __future__ import annotations

import smtplib
import time
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailticket.app import App
from mailticket.domain import Envelope
from mailticket.settings import load
from mailticket.store.models import Event, Message, OutboxRow, QueueTurn, RawMessage, Ticket
from tests.conftest import as_json, count, ingest, mail, run_cli
from tests.test_machine_mail import dsn
from tests.test_smtp import Running, serve_smtp

__all__ = ["serve_smtp"]  # the live-listener fixture, shared with test_smtp

ANN, BEN, CID = "ann@example.com", "ben@example.com", "cid@example.com"
SUPPORT = "support@example.com"

AGENTS = f"""
[[agents]]
address = "{ANN}"
name = "Ann"
skills = ["billing", "refunds"]

[[agents]]
address = "{BEN}"
name = "Ben"
aliases = ["benjamin@example.com"]

[[agents]]
address = "{CID}"
name = "Cid"
"""

BILLING_ROUTING = AGENTS + f"""
[[queues]]
name = "billing"
assignment = "round_robin"
agents = ["{ANN}", "{BEN}"]

[[queues]]
name = "support"

[[routing]]
name = "billing"
when.subject = "(?i)invoice|rechnung"
then.queue = "billing"
then.tags = ["billing"]
stop = true

[[routing]]
name = "also_invoice"
when.subject = "(?i)invoice"
then.queue = "support"
then.tags = ["stopped"]
then.priority = "low"

[[routing]]
name = "vip"
when.sender_domain = "vip.example"
then.priority = "urgent"
"""

WriteConfig = Callable[..., Path]
MakeApp = Callable[..., App]


# -- helpers -------------------------------------------------------------------------

def configure(write_config: WriteConfig, extra: str, mail_settings: str = "") -> Path:
    """A config with no [[agents]] from conftest (``extra`` brings its own); ``mail_settings`` go in [mail]."""
    path = write_config(extra=extra, agents=())
    if mail_settings:
        text = path.read_text(encoding="utf-8")
        assert text.count("[mail]\n") == 1
        path.write_text(text.replace("[mail]\n", "[mail]\n" + mail_settings.strip() + "\n"), encoding="utf-8")
    return path


def app_for(make_app: MakeApp, path: Path) -> App:
    return make_app(load(path))


def ticket(app: App, number: int) -> Ticket:
    with app.db.transaction() as s:
        row = s.get_one(Ticket, number)
        s.expunge(row)
        return row


def events(app: App, number: int, kind: str | None = None) -> list[Event]:
    with app.db.transaction() as s:
        query = select(Event).where(Event.ticket_number == number).order_by(Event.id)
        if kind is not None:
            query = query.where(Event.kind == kind)
        rows = list(s.execute(query).scalars())
        for row in rows:
            s.expunge(row)
        return rows


def acks(app: App, number: int) -> list[OutboxRow]:
    with app.db.transaction() as s:
        rows = list(s.execute(select(OutboxRow).where(OutboxRow.ticket_number == number,
                                                      OutboxRow.kind == "ack_new")).scalars())
        for row in rows:
            s.expunge(row)
        return rows


def deliver(app: App, raw: bytes, recipients: tuple[str, ...]) -> int:
    """Store and process one message with envelope recipients (as the pipe's --recipient gives them)."""
    accepted = app.inbox.accept(raw, Envelope("pipe", "", recipients))
    [outcome] = app.pipeline.process([accepted.raw_id])
    assert outcome.ticket_number is not None, outcome
    return outcome.ticket_number


def new_ticket(app: App, raw: bytes) -> int:
    number, decision = ingest(app, raw)
    assert number is not None and decision == "new_ticket", decision
    return number


def with_attachment(subject: str = "See attached", sender: str = "Alice Customer <alice@customer.example>") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@customer.example>"
    msg.set_content("The screenshot is attached.\n")
    msg.add_attachment(b"%PDF-1.4 not really a pdf\n" * 20, maintype="application", subtype="pdf",
                       filename="screenshot.pdf")
    return msg.as_bytes()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- 1. routing over the live SMTP listener ------------------------------------------

def test_routing_over_the_live_listener(write_config: WriteConfig, make_app: MakeApp,
                                        serve_smtp: Callable[..., Running]) -> None:
    config = configure(write_config, BILLING_ROUTING)
    srv = serve_smtp(app=app_for(make_app, config))
    sent = [  # (sender, subject) -> expected (queue, priority, tags, assignee)
        ("alice@customer.example", "Invoice 2026-001 is wrong", ("billing", "normal", ["billing"], ANN)),
        ("bob@vip.example", "Frage zur Rechnung", ("billing", "normal", ["billing"], BEN)),  # vip is stopped
        ("carol@vip.example", "Printer on fire", ("support", "urgent", [], None)),
        ("dave@customer.example", "INVOICE missing", ("billing", "normal", ["billing"], ANN)),
        ("erin@customer.example", "Where is my parcel?", ("support", "normal", [], None)),
    ]
    ids = []
    with srv.client() as client:
        for sender, subject, _expected in sent:
            mid = f"{uuid.uuid4().hex}@{sender.partition('@')[2]}"
            ids.append(mid)
            raw = mail(subject=subject, sender=f"Someone <{sender}>", message_id=mid)
            assert client.sendmail(sender, [SUPPORT], raw) == {}
    wait_for(lambda: srv.count(RawMessage) == len(sent))
    outcomes = srv.app.pipeline.drain()
    assert [o.decision for o in outcomes] == ["new_ticket"] * len(sent)

    with srv.app.db.transaction() as s:
        by_mid = {m.message_id: m.ticket_number for m in s.execute(select(Message)).scalars()}
    for mid, (sender, subject, (queue, priority, tags, assignee)) in zip(ids, sent, strict=True):
        t = ticket(srv.app, by_mid[mid])
        assert (t.queue, t.priority, t.tags, t.assignee, t.status) == (queue, priority, tags, assignee, "new"), \
            (sender, subject)
        assert len(acks(srv.app, t.number)) == 1
        # explain names every routing rule that applied, and no other routing rule
        report = as_json(run_cli(config, "explain", mid, "--json"))
        assert isinstance(report, dict)
        hit = {r["rule"] for r in report["rules"]}
        applied = {"billing"} if queue == "billing" else ({"vip"} if priority == "urgent" else set())
        assert hit & {"billing", "also_invoice", "vip"} == applied, (subject, hit)
        assert all(r["actions"] for r in report["rules"])
        recorded = {e.rule for e in events(srv.app, t.number, "rule")}
        assert recorded == hit
        if queue == "billing":
            routed = events(srv.app, t.number, "routed")
            assert len(routed) == 1 and routed[0].rule == "billing"
            assigned = events(srv.app, t.number, "assigned")
            assert [e.data["agent"] for e in assigned if e.data] == [assignee]
        # the ack and the agents' notifications are the mails this message caused, named by their rules
        assert [m["kind"] for m in report["mails"] if m["rule"] == "acknowledge_new"] == ["ack_new"]
        notified = sorted(m["to"] for m in report["mails"] if m["rule"] == "notify_agents")
        assert notified == ([assignee] if assignee else sorted(notified)) and notified

    with srv.app.db.transaction() as s:
        stopped = s.execute(select(func.count()).select_from(Event).where(Event.rule == "also_invoice")).scalar_one()
        assert stopped == 0  # the stopped rule never applied
        turn = s.get_one(QueueTurn, "billing")
        assert (turn.last_agent, turn.turns) == (ANN, 3)


# -- 2. each `when` condition once ---------------------------------------------------

CONDITIONS = AGENTS + r"""
[[routing]]
name = "body"
when.body = "(?i)refund"
then.tags = ["body"]

[[routing]]
name = "sender"
when.sender = "^ceo@"
then.tags = ["sender"]

[[routing]]
name = "recipient"
when.recipient = "^support\\+billing@"
then.tags = ["recipient"]

[[routing]]
name = "header"
when.header.X-Custom = "^gold$"
then.tags = ["header"]

[[routing]]
name = "attachment"
when.has_attachment = true
then.tags = ["attachment"]

[[routing]]
name = "bounce"
when.verdict = "bounce"
then.tags = ["bounce"]

[[routing]]
name = "known"
when.known_customer = true
then.tags = ["known"]

[[routing]]
name = "first"
when.known_customer = false
then.tags = ["first"]
"""


def test_each_when_condition(write_config: WriteConfig, make_app: MakeApp) -> None:
    config = configure(write_config, CONDITIONS)
    app = app_for(make_app, config)

    def tags(number: int) -> list[str]:
        return ticket(app, number).tags

    assert tags(new_ticket(app, mail(sender="a1@one.example"))) == ["first"]
    assert tags(new_ticket(app, mail(subject="Help", body="I want a REFUND.\n", sender="a2@one.example"))) \
        == ["body", "first"]
    assert tags(new_ticket(app, mail(body="I want a refuse.\n", sender="a3@one.example"))) == ["first"]
    assert tags(new_ticket(app, mail(sender="Boss <ceo@corp.example>"))) == ["sender", "first"]
    assert tags(new_ticket(app, mail(sender="Vice <viceceo@corp.example>"))) == ["first"]
    assert tags(new_ticket(app, mail(sender="a4@one.example", headers={"X-Custom": "gold"}))) == ["header", "first"]
    assert tags(new_ticket(app, mail(sender="a5@one.example", headers={"X-Custom": "golden"}))) == ["first"]
    assert tags(new_ticket(app, with_attachment(sender="a6@one.example"))) == ["attachment", "first"]

    # The envelope recipient with its +extension (the To header says only support@)
    number = deliver(app, mail(sender="a7@one.example"), ("support+billing@example.com",))
    assert tags(number) == ["recipient", "first"]
    assert ticket(app, number).queue == "support"  # the mailbox, without the extension
    assert tags(deliver(app, mail(sender="a8@one.example"), ("support+sales@example.com",))) == ["first"]
    # ... and through the pipe, as an MTA runs it
    mid = f"{uuid.uuid4().hex}@one.example"
    result = run_cli(config, "ingest", "--recipient", "support+billing@example.com", "--sender", "a9@one.example",
                     stdin=mail(sender="a9@one.example", message_id=mid))
    assert result.returncode == 0, result.stderr.decode()
    with app.db.transaction() as s:
        number = s.execute(select(Message.ticket_number).where(Message.message_id == mid)).scalar_one()
    assert tags(number) == ["recipient", "first"]

    # A DSN for a mail we never sent opens a ticket with verdict bounce
    number = new_ticket(app, dsn(f"gone-{uuid.uuid4().hex}@elsewhere.example"))
    with app.db.transaction() as s:
        assert s.execute(select(Message.verdict).where(Message.ticket_number == number)).scalar_one() == "bounce"
    # its report parts are stored as attachments, but a report's machine-readable parts are no attachment
    assert tags(number) == ["bounce", "first"]

    # The same sender again, in a new thread: a known customer now
    assert tags(new_ticket(app, mail(subject="Another thing", sender="Boss <ceo@corp.example>"))) \
        == ["sender", "known"]


# -- 3. hold, acknowledge = false, never answer a machine ------------------------------

REACTIONS = AGENTS + f"""
[[queues]]
name = "support"
assignment = "round_robin"
agents = ["{ANN}", "{BEN}"]

[[routing]]
name = "legal"
when.subject = "(?i)lawyer|legal"
then.hold = true
then.tags = ["legal"]

[[routing]]
name = "quiet"
when.sender_domain = "quiet.example"
then.acknowledge = false

[[routing]]
name = "answer_machines"
when.verdict = ["auto_reply", "out_of_office", "bounce", "bulk", "list"]
then.acknowledge = true
then.tags = ["machine"]
"""


@pytest.mark.parametrize("acknowledge_new", [True, False])
def test_hold_no_ack_and_machines(write_config: WriteConfig, make_app: MakeApp, acknowledge_new: bool) -> None:
    setting = "" if acknowledge_new else "acknowledge_new = false"
    app = app_for(make_app, configure(write_config, REACTIONS, setting))

    held = new_ticket(app, mail(subject="Legal notice", sender="x@law.example"))
    t = ticket(app, held)
    assert (t.status, t.assignee, t.tags) == ("new", None, ["legal"])
    [event] = events(app, held, "held")
    assert event.rule == "legal"
    assert acks(app, held) == []
    assert events(app, held, "assigned") == [] and events(app, held, "unassigned") == []
    assert any(e.rule == "legal" and "ack_new" in e.detail for e in events(app, held, "suppressed"))

    quiet = new_ticket(app, mail(sender="y@quiet.example"))
    assert acks(app, quiet) == []
    assert ticket(app, quiet).status == "new"
    assert ticket(app, quiet).assignee in (ANN, BEN)  # not held: assigned as usual
    suppressed = events(app, quiet, "suppressed")
    assert [e.rule for e in suppressed] == ["quiet"]
    assert 'routing rule "quiet"' in suppressed[0].detail and "ack_new" in suppressed[0].detail

    machine = new_ticket(app, mail(subject="Out of office", sender="z@corp.example",
                                   headers={"Auto-Submitted": "auto-replied"}))
    with app.db.transaction() as s:
        verdict = s.execute(select(Message.verdict).where(Message.ticket_number == machine)).scalar_one()
    assert verdict != "human"
    assert "answer_machines" in {e.rule for e in events(app, machine, "rule")}  # the rule did apply ...
    assert ticket(app, machine).tags == ["machine"]
    assert acks(app, machine) == []  # ... and still nobody answers a machine
    assert any(e.rule == "machine_mail" and "ack_new" in e.detail for e in events(app, machine, "suppressed"))
    assert events(app, machine, "queued") == []

    human = new_ticket(app, mail(sender="w@customer.example"))
    assert len(acks(app, human)) == (1 if acknowledge_new else 0)


# -- 4. priority from headers ----------------------------------------------------------

PRIORITY_ROUTING = AGENTS + """
[[routing]]
name = "vip"
when.sender_domain = "vip.example"
then.priority = "urgent"
"""


@pytest.mark.parametrize("from_headers", [True, False])
def test_priority_from_headers(write_config: WriteConfig, make_app: MakeApp, from_headers: bool) -> None:
    setting = "priority_from_headers = true" if from_headers else ""
    app = app_for(make_app, configure(write_config, PRIORITY_ROUTING, setting))

    def priority(**kwargs: Any) -> str:
        return ticket(app, new_ticket(app, mail(**kwargs))).priority

    assert priority(headers={"X-Priority": "1 (Highest)"}) == ("high" if from_headers else "normal")
    assert priority(headers={"Importance": "low"}) == ("low" if from_headers else "normal")
    assert priority(headers={"X-Priority": "3"}) == "normal"
    assert priority() == "normal"
    assert priority(sender="v@vip.example", headers={"X-Priority": "5"}) == "urgent"  # routing wins
    assert priority(sender="v2@vip.example", headers={"Importance": "high"}) == "urgent"


# -- 5. bad config ------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "expected"), [
    ('name = "broken"\nwhen.subject = "(unclosed"\nthen.queue = "support"',
     'routing[0] "broken": when.subject: not a valid regular expression'),
    ('name = "typo"\nwhen.colour = "red"\nthen.queue = "support"',
     'routing[0] "typo": when.colour: unknown key'),
    ('name = "typo2"\nwhen.subject = "x"\nthen.queue = "support"\nstopp = true',
     'routing[0] "typo2": stopp: unknown key'),
    ('name = "lost"\nwhen.subject = "x"\nthen.queue = "nowhere"',
     'routing[0] "lost": then.queue: unknown queue "nowhere"'),
    ('name = "bad_header"\nwhen.header.X-Custom = "[z-a]"\nthen.queue = "support"',
     'routing[0] "bad_header": when.header.X-Custom: not a valid regular expression'),
])
def test_check_config_names_the_rule(write_config: WriteConfig, rule: str, expected: str) -> None:
    config = configure(write_config, AGENTS + "\n[[routing]]\n" + rule + "\n")
    result = run_cli(config, "check-config")
    assert result.returncode == 78, (result.stdout, result.stderr)
    lines = result.stderr.decode().splitlines()
    assert any(expected in line for line in lines), lines


def test_check_config_lists_routing(write_config: WriteConfig) -> None:
    result = run_cli(configure(write_config, BILLING_ROUTING), "check-config")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "routing: 3 rules: billing, also_invoice, vip" in out
    assert "billing (round_robin, 2 agents)" in out


# -- 6. rules test ---------------------------------------------------------------

def test_rules_test_predicts_and_stores_nothing(write_config: WriteConfig, make_app: MakeApp,
                                                tmp_path: Path) -> None:
    config = configure(write_config, BILLING_ROUTING)
    app = app_for(make_app, config)
    invoice = tmp_path / "invoice.eml"
    invoice.write_bytes(mail(subject="Invoice 17", sender="Alice <alice@customer.example>",
                             message_id="invoice-17@customer.example"))
    other = tmp_path / "other.eml"
    other.write_bytes(mail(subject="Printer on fire", sender="Alice <alice@customer.example>"))
    before_events = count(app, Event)

    table = run_cli(config, "rules", "test", str(invoice))
    assert table.returncode == 0, table.stderr.decode()
    text = table.stdout.decode()
    lines = text.splitlines()
    assert any(line.split()[:2] == ["billing", "yes"] for line in lines), text
    assert any(line.split()[:3] == ["also_invoice", "skipped", "(stop)"] for line in lines), text
    assert any(line.split()[:3] == ["vip", "skipped", "(stop)"] for line in lines), text
    assert "queue:          billing" in text and f"assignee:       {ANN}" in text
    assert "tags:           billing" in text and "acknowledgement: yes" in text

    report = as_json(run_cli(config, "rules", "test", str(invoice), "--json"))
    assert isinstance(report, dict)
    assert report["message_id"] == "invoice-17@customer.example" and report["from"] == "alice@customer.example"
    assert report["verdict"]["kind"] == "human" and report["thread"]["ticket"] is None
    rules = {r["name"]: r for r in report["routing"]}
    assert list(rules) == ["billing", "also_invoice", "vip"]
    assert (rules["billing"]["matched"], rules["billing"]["skipped"]) == (True, False)
    assert rules["billing"]["actions"]
    assert rules["also_invoice"]["skipped"] is True and rules["also_invoice"]["actions"] == []
    assert rules["vip"]["skipped"] is True and rules["vip"]["matched"] is False
    [cond] = rules["vip"]["conditions"]
    assert cond["name"] == "sender_domain" and cond["held"] is False
    assert "customer.example" in cond["detail"]
    result = report["result"]
    assert (result["queue"], result["priority"], result["tags"], result["assignee"], result["hold"],
            result["acknowledge"], result["status"]) == ("billing", "normal", ["billing"], ANN, False, True, "new")
    assert "round_robin" in result["assignment"]

    other_report = as_json(run_cli(config, "rules", "test", str(other), "--json"))
    assert isinstance(other_report, dict)
    billing = other_report["routing"][0]
    assert billing["matched"] is False
    assert billing["conditions"] == [{"name": "subject", "held": False,
                                      "detail": 'subject "Printer on fire" does not match /(?i)invoice|rechnung/'}]
    assert other_report["result"]["queue"] == "support" and other_report["result"]["assignee"] is None
    vip = other_report["routing"][2]
    assert (vip["name"], vip["skipped"], vip["matched"]) == ("vip", False, False)
    assert vip["conditions"][0]["detail"] == "sender domain customer.example is not under any of (vip.example)"
    other_lines = run_cli(config, "rules", "test", str(other)).stdout.decode().splitlines()
    # (the table cuts a cell at 60 characters; --json has the whole detail)
    row = next(line for line in other_lines if line.startswith("billing "))
    assert row.split()[1] == "no" and 'subject "Printer on fire" does not match /(?i)invoice' in row
    row = next(line for line in other_lines if line.startswith("vip "))
    assert row.split()[1] == "no" and "sender domain customer.example is not under any of" in row

    # Nothing was stored, and the queue's turn did not move: twice the same prediction
    again = as_json(run_cli(config, "rules", "test", str(invoice), "--json"))
    assert isinstance(again, dict) and again["result"]["assignee"] == ANN
    assert (count(app, Ticket), count(app, RawMessage), count(app, Message), count(app, OutboxRow),
            count(app, QueueTurn), count(app, Event)) == (0, 0, 0, 0, 0, before_events)

    number = new_ticket(app, invoice.read_bytes())
    assert ticket(app, number).assignee == ANN  # the agent `rules test` predicted
    # A reply threads: rules test says it would join, and routing does not run for it
    reply = tmp_path / "reply.eml"
    reply.write_bytes(mail(subject="Re: Invoice 17", sender="Alice <alice@customer.example>",
                           headers={"In-Reply-To": "<invoice-17@customer.example>",
                                    "References": "<invoice-17@customer.example>"}))
    joined = as_json(run_cli(config, "rules", "test", str(reply), "--json"))
    assert isinstance(joined, dict) and joined["thread"]["ticket"] == number
    assert not any(r["matched"] or r["actions"] for r in joined["routing"])
    assert joined["result"]["assignee"] is None and joined["result"]["acknowledge"] is False
    joined_table = run_cli(config, "rules", "test", str(reply)).stdout.decode()
    assert f"would join ticket #{number}" in joined_table
    # A new invoice is predicted for the next agent in turn
    fresh = tmp_path / "fresh.eml"
    fresh.write_bytes(mail(subject="Invoice 18", sender="Bob <bob@customer.example>"))
    predicted = as_json(run_cli(config, "rules", "test", str(fresh), "--json"))
    assert isinstance(predicted, dict) and predicted["result"]["assignee"] == BEN
    assert ticket(app, new_ticket(app, fresh.read_bytes())).assignee == BEN


# -- 7. agents list / away ------------------------------------------------------------

def test_agents_list_and_away(write_config: WriteConfig, make_app: MakeApp) -> None:
    config = configure(write_config, BILLING_ROUTING)
    app = app_for(make_app, config)

    def invoice() -> str | None:
        return ticket(app, new_ticket(app, mail(subject="Invoice", sender=f"{uuid.uuid4().hex[:8]}@c.example"))) \
            .assignee

    assert invoice() == ANN
    listed = as_json(run_cli(config, "agents", "list", "--json"))
    assert isinstance(listed, list)
    by_address = {a["address"]: a for a in listed}
    assert list(by_address) == [ANN, BEN, CID]
    assert by_address[ANN]["queues"] == ["billing"] and by_address[ANN]["skills"] == ["billing", "refunds"]
    assert by_address[BEN]["aliases"] == ["benjamin@example.com"] and by_address[BEN]["skills"] == []
    assert by_address[CID]["queues"] == []
    assert [(a["away"], a["open_tickets"]) for a in listed] == [(False, 1), (False, 0), (False, 0)]

    result = run_cli(config, "agents", "away", BEN, "on")
    assert result.returncode == 0, result.stderr.decode()
    assert [invoice() for _ in range(3)] == [ANN, ANN, ANN]  # round robin skips the away agent
    listed = as_json(run_cli(config, "agents", "list", "--json"))
    assert isinstance(listed, list)
    assert [(a["away"], a["open_tickets"]) for a in listed] == [(False, 4), (True, 0), (False, 0)]

    # An alias names the agent too
    result = run_cli(config, "agents", "away", "benjamin@example.com", "off")
    assert result.returncode == 0, result.stderr.decode()
    assert [invoice() for _ in range(3)] == [BEN, ANN, BEN]
    listed = as_json(run_cli(config, "agents", "list", "--json"))
    assert isinstance(listed, list) and not any(a["away"] for a in listed)

    result = run_cli(config, "agents", "away", "nobody@x", "on")
    assert result.returncode == 64
    assert "nobody@x is not an agent" in result.stderr.decode()
    assert result.stdout == b""


# -- 8. tickets list filters / show --------------------------------------------------

def test_tickets_list_filters_and_show(write_config: WriteConfig, make_app: MakeApp) -> None:
    config = configure(write_config, BILLING_ROUTING)
    app = app_for(make_app, config)
    first = new_ticket(app, mail(subject="Invoice 1", sender="a@c.example"))  # billing, ann
    second = new_ticket(app, mail(subject="Invoice 2", sender="b@c.example"))  # billing, ben
    plain = new_ticket(app, mail(subject="Hello", sender="c@c.example"))  # support, nobody
    urgent = new_ticket(app, mail(subject="Hello", sender="d@vip.example"))  # support, urgent, nobody

    def numbers(*args: str) -> list[int]:
        rows = as_json(run_cli(config, "tickets", "list", *args, "--json"))
        assert isinstance(rows, list)
        return [r["number"] for r in rows]

    assert numbers() == [first, second, plain, urgent]
    assert numbers("--queue", "billing") == [first, second]
    assert numbers("--queue", "support") == [plain, urgent]
    assert numbers("--queue", "nowhere") == []
    assert numbers("--assignee", ANN) == [first]
    assert numbers("--assignee", BEN.upper()) == [second]
    assert numbers("--assignee", "none") == [plain, urgent]
    assert numbers("--assignee", CID) == []
    assert numbers("--queue", "billing", "--assignee", "none") == []
    assert numbers("--status", "new", "--queue", "billing") == [first, second]

    shown = as_json(run_cli(config, "tickets", "show", str(first), "--json"))
    assert isinstance(shown, dict)
    assert (shown["queue"], shown["assignee"], shown["tags"], shown["status"], shown["priority"]) \
        == ("billing", ANN, ["billing"], "new", "normal")
    shown = as_json(run_cli(config, "tickets", "show", str(urgent), "--json"))
    assert isinstance(shown, dict)
    assert (shown["queue"], shown["assignee"], shown["tags"], shown["priority"]) == ("support", None, [], "urgent")
    table = run_cli(config, "tickets", "list", "--queue", "billing").stdout.decode()
    assert ANN in table and BEN in table and "Hello" not in table


# -- 9. no routing config: today's reactions ------------------------------------------

def test_no_routing_config_keeps_todays_reactions(app: App) -> None:
    number = new_ticket(app, mail())
    t = ticket(app, number)
    assert (t.status, t.queue, t.assignee, t.priority, t.tags) == ("new", "support", None, "normal", [])
    assert len(acks(app, number)) == 1
    assert count(app, OutboxRow) == 1
    assert events(app, number, "routed") == [] and events(app, number, "assigned") == []
    assert events(app, number, "held") == [] and events(app, number, "suppressed") == []

    help_ticket = new_ticket(app, mail(to="help@example.com", sender="bob@customer.example",
                                       headers={"X-Priority": "1"}))
    t = ticket(app, help_ticket)
    assert (t.status, t.queue, t.assignee, t.priority) == ("new", "help", None, "normal")
    assert len(acks(app, help_ticket)) == 1


def test_plus_extension_over_smtp_routes_by_envelope(write_config: WriteConfig, make_app: MakeApp,
                                                 serve_smtp: Callable[..., Running]) -> None:
    """A +extension recipient is accepted over SMTP and routed by its envelope address."""
    config = configure(write_config, CONDITIONS)
    srv = serve_smtp(app=app_for(make_app, config))
    with srv.client() as client:
        assert client.sendmail("q@one.example", ["support+billing@example.com"], mail(sender="q@one.example")) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("q@one.example", ["someone@elsewhere.example"], mail(sender="q@one.example"))
    wait_for(lambda: srv.count(RawMessage) == 1)
    [outcome] = srv.app.pipeline.drain()
    assert outcome.ticket_number is not None
    assert ticket(srv.app, outcome.ticket_number).tags == ["recipient", "first"]
