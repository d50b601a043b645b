"""The rules as tables: facts in, exact actions out. No database, no outbox.

Mail is built by parsing crafted RFC 5322 bytes (the rules see what the pipeline sees);
the corpus test runs every built-in rule and a few routing rules over ../shared/corpus.
"""

from __future__ import annotations

import ast
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailticket.domain import Address, Envelope, ParsedMail, TicketStatus, Verdict, VerdictKind
from mailticket.ingest.classify import Identity, classify
from mailticket.ingest.parse import parse
from mailticket.rules import builtin
from mailticket.rules.actions import (
    Action,
    AddTags,
    Assign,
    Hold,
    KeepStatus,
    NoAcknowledgement,
    QueueMail,
    RecordRating,
    SetPriority,
    SetQueue,
    SetStatus,
    Stop,
)
from mailticket.rules.base import Rule
from mailticket.rules.builtin import (
    AcknowledgeNew,
    AgentMail,
    CsatRating,
    ImportedHistory,
    MachineMail,
    NotACustomer,
    PriorityFromHeaders,
    QueueAssignment,
    ReopenOnCustomerReply,
    builtin_rules,
)
from mailticket.rules.facts import REPORT_PARTS, Facts
from mailticket.rules.routing import Condition, RoutingRule
from mailticket.settings import RoutingSettings, RoutingThen, RoutingWhen

CUSTOMER = Address("Carla Customer", "carla@customer.example")
AGENT = Address("Agnes Agent", "agnes@support.example")
HUMAN = Verdict(VerdictKind.HUMAN, "no machine marker")
BOUNCE = Verdict(VerdictKind.BOUNCE, "multipart/report; report-type=delivery-status")
AUTO = Verdict(VerdictKind.AUTO_REPLY, "Auto-Submitted: auto-replied")


def message(subject: str = "Hello", body: str = "Hi there,\nmy printer is on fire.\n",
            headers: tuple[tuple[str, str], ...] = (), sender: str = "Carla Customer <carla@customer.example>",
            to: str = "help@support.example") -> ParsedMail:
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", "Message-ID: <t1@customer.example>",
             "Date: Mon, 01 Jan 2024 10:00:00 +0000", *(f"{name}: {value}" for name, value in headers),
             "Content-Type: text/plain; charset=utf-8", "", body]
    return parse("\r\n".join(lines).encode())


def with_attachment(inline: bool = False) -> ParsedMail:
    disposition = "inline" if inline else "attachment"
    raw = (
        "From: carla@customer.example\r\nTo: help@support.example\r\nSubject: Invoice 42\r\n"
        "Message-ID: <t2@customer.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nSee the file.\r\n"
        f"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: {disposition}; filename=\"invoice.pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
    )
    return parse(raw.encode())


PLAIN = message()


def facts(**changes: Any) -> Facts:
    base = Facts(mail=PLAIN, verdict=HUMAN, sender=CUSTOMER, created=True, status=TicketStatus.NEW,
                 sender_is_agent=False, sender_is_support=False)
    return replace(base, **changes)


# -- the built-in rules ----------------------------------------------------------

CASES: list[tuple[Rule, str, dict[str, Any], list[Action]]] = [
    # machine_mail
    (MachineMail(), "bounce opens a ticket", {"verdict": BOUNCE},
     [NoAcknowledgement("bounce (multipart/report; report-type=delivery-status): never answer a machine")]),
    (MachineMail(), "auto-reply opens a ticket", {"verdict": AUTO},
     [NoAcknowledgement("auto_reply (Auto-Submitted: auto-replied): never answer a machine")]),
    (MachineMail(), "auto-reply joins a ticket", {"verdict": AUTO, "created": False, "status": TicketStatus.PENDING},
     [KeepStatus("auto_reply mail does not change the ticket's status")]),
    (MachineMail(), "human new", {}, []),
    (MachineMail(), "human reply", {"created": False, "status": TicketStatus.SOLVED}, []),
    # agent_mail
    (AgentMail(), "agent opens a ticket", {"sender": AGENT, "sender_is_agent": True},
     [NoAcknowledgement("agnes@support.example is an agent")]),
    (AgentMail(), "customer", {}, []),
    (AgentMail(), "agent reply", {"sender": AGENT, "sender_is_agent": True, "created": False}, []),
    (AgentMail(), "agent's auto-reply", {"sender": AGENT, "sender_is_agent": True, "verdict": AUTO}, []),
    # not_a_customer
    (NotACustomer(), "our own support address", {"sender": Address("", "help@support.example"),
                                                 "sender_is_support": True},
     [NoAcknowledgement("sender help@support.example is not a customer address")]),
    (NotACustomer(), "no sender address", {"sender": Address("", "")},
     [NoAcknowledgement("sender (none) is not a customer address")]),
    (NotACustomer(), "customer", {}, []),
    (NotACustomer(), "agent (agent_mail says it)", {"sender": Address("", ""), "sender_is_agent": True}, []),
    (NotACustomer(), "machine (machine_mail says it)", {"sender": Address("", ""), "verdict": BOUNCE}, []),
    (NotACustomer(), "reply", {"sender": Address("", ""), "created": False}, []),
    # imported_history
    (ImportedHistory(), "imported new ticket", {"imported": True},
     [NoAcknowledgement("imported by `mailticket import`: old mail is not acknowledged")]),
    (ImportedHistory(), "imported machine mail too", {"imported": True, "verdict": BOUNCE},
     [NoAcknowledgement("imported by `mailticket import`: old mail is not acknowledged")]),
    (ImportedHistory(), "not imported", {}, []),
    (ImportedHistory(), "imported reply", {"imported": True, "created": False}, []),
    # queue_assignment
    (QueueAssignment(), "customer's new ticket", {}, [Assign(None)]),
    (QueueAssignment(), "agent's new ticket", {"sender": AGENT, "sender_is_agent": True}, []),
    (QueueAssignment(), "machine", {"verdict": BOUNCE}, []),
    (QueueAssignment(), "reply", {"created": False}, []),
    # acknowledge_new
    (AcknowledgeNew(), "human new ticket", {}, [QueueMail("ack_new", "requester")]),
    (AcknowledgeNew(), "acknowledgements off", {"acknowledge_new": False}, []),
    (AcknowledgeNew(), "machine", {"verdict": AUTO}, []),
    (AcknowledgeNew(), "reply", {"created": False}, []),
    # reopen_on_reply
    (ReopenOnCustomerReply(), "reply to pending", {"created": False, "status": TicketStatus.PENDING},
     [SetStatus(TicketStatus.OPEN, "customer replied to a pending ticket")]),
    (ReopenOnCustomerReply(), "reply to solved", {"created": False, "status": TicketStatus.SOLVED},
     [SetStatus(TicketStatus.OPEN, "customer replied to a solved ticket")]),
    (ReopenOnCustomerReply(), "reply to open", {"created": False, "status": TicketStatus.OPEN}, []),
    # a reply that joined a closed ticket (closed within [lifecycle] reopen_days; older ones get a new ticket)
    (ReopenOnCustomerReply(), "reply to closed", {"created": False, "status": TicketStatus.CLOSED},
     [SetStatus(TicketStatus.OPEN, "customer replied to a closed ticket")]),
    (ReopenOnCustomerReply(), "agent reply", {"created": False, "status": TicketStatus.PENDING,
                                             "sender": AGENT, "sender_is_agent": True}, []),
    (ReopenOnCustomerReply(), "auto-reply", {"created": False, "status": TicketStatus.PENDING, "verdict": AUTO}, []),
    (ReopenOnCustomerReply(), "new ticket", {"status": TicketStatus.PENDING}, []),
    (ReopenOnCustomerReply(), "satisfaction rating", {"created": False, "status": TicketStatus.SOLVED,
                                                     "csat_rating": 4}, []),
    # csat_rating
    (CsatRating(), "rating with a comment", {"created": False, "status": TicketStatus.SOLVED, "csat_rating": 4,
                                             "csat_comment": "Quick, thanks"},
     [RecordRating(4, "Quick, thanks"), KeepStatus("a satisfaction rating does not reopen the ticket"),
      NoAcknowledgement("a satisfaction rating is not acknowledged")]),
    (CsatRating(), "no rating", {"created": False, "status": TicketStatus.SOLVED}, []),
    (CsatRating(), "machine", {"created": False, "csat_rating": 4, "verdict": AUTO}, []),
    (CsatRating(), "agent", {"created": False, "csat_rating": 4, "sender": AGENT, "sender_is_agent": True}, []),
]


@pytest.mark.parametrize(("rule", "changes", "expected"), [(r, c, e) for r, _, c, e in CASES],
                         ids=[f"{r.name}: {label}" for r, label, _, _ in CASES])
def test_builtin_rule(rule: Rule, changes: dict[str, Any], expected: list[Action]) -> None:
    assert rule.check(facts(**changes)) == expected
    assert rule.group == "reaction"


PRIORITY_CASES: list[tuple[str, tuple[tuple[str, str], ...], list[Action]]] = [
    ("X-Priority 1", (("X-Priority", "1"),), [SetPriority("high")]),
    ("X-Priority 2 (High)", (("X-Priority", "2 (High)"),), [SetPriority("high")]),
    ("X-Priority 1 (Highest), spaces", (("X-Priority", "   1 (Highest)  "),), [SetPriority("high")]),
    ("X-Priority 3", (("X-Priority", "3"),), []),
    ("X-Priority 3 (Normal)", (("X-Priority", "3 (Normal)"),), []),
    ("X-Priority 4", (("X-Priority", "4"),), [SetPriority("low")]),
    ("X-Priority 5", (("X-Priority", "5 (Lowest)"),), [SetPriority("low")]),
    ("X-Priority garbage", (("X-Priority", "urgent!!"),), []),
    ("Importance: High", (("Importance", "High"),), [SetPriority("high")]),
    ("Importance: low", (("Importance", " low "),), [SetPriority("low")]),
    ("Importance: normal", (("Importance", "normal"),), []),
    ("Priority: urgent", (("Priority", "urgent"),), [SetPriority("high")]),
    ("Priority: Non-Urgent", (("Priority", "Non-Urgent"),), [SetPriority("low")]),
    ("Priority: normal", (("Priority", "normal"),), []),
    ("X-MSMail-Priority: Low", (("X-MSMail-Priority", "Low"),), [SetPriority("low")]),
    ("X-MSMail-Priority: HIGH", (("X-MSMail-Priority", "HIGH"),), [SetPriority("high")]),
    ("X-MSMail-Priority: Normal", (("X-MSMail-Priority", "Normal"),), []),
    ("none", (), []),
    ("X-Priority wins over Importance", (("Importance", "low"), ("X-Priority", "1")), [SetPriority("high")]),
    ("X-Priority 3 says nothing: Importance decides", (("X-Priority", "3"), ("Importance", "low")),
     [SetPriority("low")]),
    ("Importance wins over Priority", (("Priority", "non-urgent"), ("Importance", "high")), [SetPriority("high")]),
    ("Priority wins over X-MSMail-Priority", (("X-MSMail-Priority", "High"), ("Priority", "non-urgent")),
     [SetPriority("low")]),
    ("lower-case header name", (("x-priority", "1"),), [SetPriority("high")]),
]


@pytest.mark.parametrize(("headers", "expected"), [(h, e) for _, h, e in PRIORITY_CASES],
                         ids=[label for label, _, _ in PRIORITY_CASES])
def test_priority_from_headers(headers: tuple[tuple[str, str], ...], expected: list[Action]) -> None:
    assert PriorityFromHeaders().check(facts(mail=message(headers=headers))) == expected


@pytest.mark.parametrize("changes", [{"verdict": AUTO}, {"verdict": BOUNCE}, {"created": False}],
                         ids=["auto-reply", "bounce", "reply"])
def test_priority_from_headers_only_for_new_human_mail(changes: dict[str, Any]) -> None:
    mail = message(headers=(("X-Priority", "1"), ("Importance", "high")))
    assert PriorityFromHeaders().check(facts(mail=mail, **changes)) == []


def names(rules: list[Rule]) -> list[str]:
    return [rule.name for rule in rules]


def test_builtin_rules_order() -> None:
    agent_rules = ["unverified_agent_mail", "collision", "held_reply", "relay_agent_reply", "agent_commands"]
    assert names(builtin_rules(False)) == ["machine_mail", "agent_mail", "not_a_customer", "imported_history",
                                           "queue_assignment", "sender_not_verified", "csat_rating",
                                           "acknowledge_new", "reopen_on_reply", *agent_rules, "notify_agents"]
    assert names(builtin_rules(False, receipts=True))[-2:] == ["command_receipt", "notify_agents"]
    assert names(builtin_rules(True, agents=False)) == [
        "machine_mail", "agent_mail", "not_a_customer", "imported_history", "priority_from_headers",
        "queue_assignment", "sender_not_verified", "csat_rating", "acknowledge_new", "reopen_on_reply",
        *agent_rules]
    billing = RoutingRule(RoutingSettings("billing", RoutingWhen(), RoutingThen(queue="billing")))
    vip = RoutingRule(RoutingSettings("vip", RoutingWhen(), RoutingThen(priority="high")))
    rules = builtin_rules(True, routing=[billing, vip])
    assert names(rules)[4:7] == ["priority_from_headers", "billing", "vip"]
    assert names(builtin_rules(False, routing=[billing]))[4:6] == ["billing", "queue_assignment"]
    assert all(rule.group == "reaction" for rule in rules if rule not in (billing, vip))
    assert all(rule.description for rule in rules)
    assert len(set(names(rules))) == len(rules)


def test_all_builtin_rules_over_one_human_new_ticket() -> None:
    mail = message(headers=(("X-Priority", "2 (High)"),))
    actions = [a for rule in builtin_rules(True) for a in rule.check(facts(mail=mail))]
    assert actions == [SetPriority("high"), Assign(None), QueueMail("ack_new", "requester"),
                       QueueMail("agent_notify", "agents")]


def test_rules_modules_stay_pure() -> None:
    """Rules decide; they never reach the database, the outbox or the intake."""
    forbidden = ("mailticket.store", "mailticket.outbox", "mailticket.ingest", "sqlalchemy")
    folder = Path(builtin.__file__).parent
    for name in ("builtin.py", "routing.py", "facts.py", "base.py", "actions.py"):
        tree = ast.parse((folder / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for module in modules:
                assert not module.startswith(forbidden), f"{name} imports {module}"


# -- routing rules -----------------------------------------------------------------


EVERY = RoutingWhen()
NOTHING = RoutingThen()


def rule(when: RoutingWhen = EVERY, then: RoutingThen = NOTHING, stop: bool = False, name: str = "r") -> RoutingRule:
    return RoutingRule(RoutingSettings(name, when, then, stop))


TAGGED = RoutingThen(tags=("matched",))
HIT = [AddTags(("matched",))]

INVOICE_MAIL = message(subject="Invoice 42 overdue", body="Please find the invoice attached.\n",
                       headers=(("List-Id", "Billing <billing.lists.example>"), ("X-Spam-Score", "1.0"),
                                ("X-Spam-Score", "9.5")),
                       sender="Bob <bob@mail.acme.example>", to="Billing <Billing+EU@support.example>")

CONDITION_CASES: list[tuple[str, RoutingWhen, dict[str, Any], bool]] = [
    ("subject matches", RoutingWhen(subject=re.compile(r"(?i)invoice")), {"mail": INVOICE_MAIL}, True),
    ("subject fails", RoutingWhen(subject=re.compile(r"(?i)invoice")), {}, False),
    ("body matches", RoutingWhen(body=re.compile(r"(?i)\binvoice\b")), {"mail": INVOICE_MAIL}, True),
    ("body fails", RoutingWhen(body=re.compile(r"refund")), {"mail": INVOICE_MAIL}, False),
    ("sender matches", RoutingWhen(sender=re.compile(r"^bob@")), {"sender": Address("Bob", "bob@acme.example")},
     True),
    ("sender fails", RoutingWhen(sender=re.compile(r"^bob@")), {}, False),
    ("no sender fails", RoutingWhen(sender=re.compile(r".*")), {"sender": Address("", "")}, False),
    ("sender_domain equal", RoutingWhen(sender_domain=("other.example", "acme.example")),
     {"sender": Address("", "bob@acme.example")}, True),
    ("sender_domain subdomain", RoutingWhen(sender_domain=("acme.example",)),
     {"sender": Address("", "bob@mail.acme.example")}, True),
    ("sender_domain look-alike fails", RoutingWhen(sender_domain=("acme.example",)),
     {"sender": Address("", "bob@notacme.example")}, False),
    ("sender_domain no sender fails", RoutingWhen(sender_domain=("acme.example",)),
     {"sender": Address("", "")}, False),
    ("recipient matches any", RoutingWhen(recipient=re.compile(r"^billing\+")),
     {"recipients": ("help@support.example", "billing+eu@support.example")}, True),
    ("recipient fails", RoutingWhen(recipient=re.compile(r"^billing\+")),
     {"recipients": ("help@support.example",)}, False),
    ("no recipients fails", RoutingWhen(recipient=re.compile(r".*")), {}, False),
    ("header matches", RoutingWhen(headers=(("list-id", re.compile(r"billing\.lists")),)), {"mail": INVOICE_MAIL},
     True),
    ("header matches a later value", RoutingWhen(headers=(("x-spam-score", re.compile(r"^9")),)),
     {"mail": INVOICE_MAIL}, True),
    ("header value fails", RoutingWhen(headers=(("list-id", re.compile(r"sales")),)), {"mail": INVOICE_MAIL},
     False),
    ("header absent fails", RoutingWhen(headers=(("list-id", re.compile(r".*")),)), {}, False),
    ("has_attachment true holds", RoutingWhen(has_attachment=True), {"mail": with_attachment()}, True),
    ("has_attachment true fails on inline", RoutingWhen(has_attachment=True), {"mail": with_attachment(True)},
     False),
    ("has_attachment true fails", RoutingWhen(has_attachment=True), {}, False),
    ("has_attachment false holds", RoutingWhen(has_attachment=False), {}, True),
    ("has_attachment false fails", RoutingWhen(has_attachment=False), {"mail": with_attachment()}, False),
    ("verdict holds", RoutingWhen(verdict=("bounce", "auto_reply")), {"verdict": BOUNCE}, True),
    ("verdict fails", RoutingWhen(verdict=("bounce",)), {}, False),
    ("known_customer true holds", RoutingWhen(known_customer=True), {"known_customer": True}, True),
    ("known_customer true fails", RoutingWhen(known_customer=True), {}, False),
    ("known_customer false holds", RoutingWhen(known_customer=False), {}, True),
    ("known_customer false fails", RoutingWhen(known_customer=False), {"known_customer": True}, False),
]


@pytest.mark.parametrize(("when", "changes", "held"), [(w, c, h) for _, w, c, h in CONDITION_CASES],
                         ids=[label for label, _, _, _ in CONDITION_CASES])
def test_routing_condition(when: RoutingWhen, changes: dict[str, Any], held: bool) -> None:
    r = rule(when, TAGGED)
    conditions = r.evaluate(facts(**changes))
    assert len(conditions) == 1
    assert conditions[0].held is held, conditions[0].detail
    assert conditions[0].detail
    assert r.check(facts(**changes)) == (HIT if held else [])


def test_body_is_searched_in_text_made_from_html() -> None:
    raw = (b"From: carla@customer.example\r\nTo: help@support.example\r\nSubject: x\r\n"
           b"Content-Type: text/html\r\n\r\n<html><body><p>Our <b>invoice</b> is wrong</p></body></html>\r\n")
    mail = parse(raw)
    assert mail.text_from_html
    assert rule(RoutingWhen(body=re.compile(r"invoice is wrong")), TAGGED).check(facts(mail=mail)) == HIT


def test_body_search_is_bounded() -> None:
    huge = message(body="a" * 150_000 + " needle\n")
    r = rule(RoutingWhen(body=re.compile(r"needle")), TAGGED)
    [condition] = r.evaluate(facts(mail=huge))
    assert not condition.held
    assert "100000" in condition.detail
    assert rule(RoutingWhen(body=re.compile(r"^a+")), TAGGED).check(facts(mail=huge)) == HIT


def test_condition_details() -> None:
    [subject] = rule(RoutingWhen(subject=re.compile(r"(?i)invoice"))).evaluate(facts())
    assert subject == Condition("subject", False, 'subject "Hello" does not match /(?i)invoice/')
    [header] = rule(RoutingWhen(headers=(("list-id", re.compile(r"x")),))).evaluate(facts())
    assert header == Condition("header.list-id", False, "no list-id header to match /x/")
    conditions = rule(RoutingWhen(subject=re.compile("Invoice"), verdict=("bounce",))).evaluate(
        facts(mail=INVOICE_MAIL))
    assert [(c.name, c.held) for c in conditions] == [("subject", True), ("verdict", False)]
    assert "human" in conditions[1].detail


def test_description() -> None:
    assert rule().description == "every new ticket"
    when = RoutingWhen(subject=re.compile(r"(?i)invoice"), has_attachment=True)
    assert rule(when, name="billing").description == "subject ~ /(?i)invoice/, has_attachment"
    assert rule(when, name="billing").name == "billing"
    assert rule(when).group == "routing"
    every = RoutingWhen(subject=re.compile("s"), body=re.compile("b"), sender=re.compile("f"),
                        sender_domain=("acme.example",), recipient=re.compile("t"),
                        headers=(("list-id", re.compile("l")),), has_attachment=False, verdict=("bounce", "list"),
                        known_customer=False)
    assert rule(every).description == (
        "subject ~ /s/, body ~ /b/, sender ~ /f/, sender_domain in (acme.example), recipient ~ /t/, "
        "header.list-id ~ /l/, not has_attachment, verdict in (bounce, list), not known_customer")


ALL_OF = RoutingWhen(subject=re.compile(r"(?i)invoice"), has_attachment=True, sender_domain=("customer.example",))


@pytest.mark.parametrize(("mail", "changes", "hit"), [
    (with_attachment(), {}, True),
    (with_attachment(), {"sender": Address("", "carla@elsewhere.example")}, False),
    (with_attachment(True), {}, False),
    (message(subject="Invoice"), {}, False),
], ids=["all hold", "sender_domain fails", "attachment fails", "only subject"])
def test_every_condition_must_hold(mail: ParsedMail, changes: dict[str, Any], hit: bool) -> None:
    assert rule(ALL_OF, TAGGED).check(facts(mail=mail, **changes)) == (HIT if hit else [])


def test_routing_only_for_new_tickets() -> None:
    r = rule(RoutingWhen(), RoutingThen(queue="billing"), stop=True)
    assert r.check(facts()) == [SetQueue("billing"), Stop()]
    assert r.check(facts(created=False)) == []


def test_routing_action_order() -> None:
    then = RoutingThen(queue="billing", priority="urgent", tags=("invoice", "eu"), assignee="agnes@support.example",
                       acknowledge=False, hold=True)
    assert rule(RoutingWhen(), then, stop=True, name="billing").check(facts()) == [
        SetQueue("billing"), SetPriority("urgent"), AddTags(("invoice", "eu")), Assign("agnes@support.example"),
        NoAcknowledgement('routing rule "billing": then.acknowledge = false'), Hold('routing rule "billing"'), Stop(),
    ]


@pytest.mark.parametrize(("then", "stop", "expected"), [
    (RoutingThen(), False, []),
    (RoutingThen(), True, [Stop()]),
    (RoutingThen(acknowledge=True), False, [QueueMail("ack_new", "requester")]),
    (RoutingThen(acknowledge=False), False, [NoAcknowledgement('routing rule "r": then.acknowledge = false')]),
    (RoutingThen(acknowledge=None), False, []),
    (RoutingThen(hold=True), False, [Hold('routing rule "r"')]),
    (RoutingThen(acknowledge=True, hold=True), True, [QueueMail("ack_new", "requester"), Hold('routing rule "r"'),
                                                      Stop()]),
    (RoutingThen(priority="low"), False, [SetPriority("low")]),
], ids=["nothing", "stop", "acknowledge true", "acknowledge false", "acknowledge unset", "hold",
        "ack hold stop", "priority"])
def test_routing_then(then: RoutingThen, stop: bool, expected: list[Action]) -> None:
    assert rule(RoutingWhen(), then, stop).check(facts()) == expected


def test_routing_stop_only_when_it_hits() -> None:
    assert rule(RoutingWhen(verdict=("bounce",)), stop=True).check(facts()) == []


# -- the real-mail corpus ----------------------------------------------------------

ME = Identity("mailticket.test", "mt-loop-token")
SUBJECT = re.compile(r"(?i)\b(invoice|delivery|undeliver\w*|failure)\b")


def corpus_paths(corpus: Path) -> list[str]:
    lines = (corpus / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    paths = [line.split("\t")[0] for line in lines if line.strip()]
    # reply/* inputs are bodies, not messages, except talon's .eml files
    return [p for p in paths if not p.startswith("reply/") or (p.startswith("reply/talon/") and p.endswith(".eml"))]


def sender_of(mail: ParsedMail) -> Address:
    if mail.from_ is not None:
        return mail.from_
    return Address("", "")


@pytest.mark.corpus
def test_corpus_through_every_rule(corpus: Path) -> None:
    started = time.monotonic()
    by_subject = rule(RoutingWhen(subject=SUBJECT), TAGGED, name="by_subject")
    by_list = rule(RoutingWhen(headers=(("list-id", re.compile(r"\S")),)), TAGGED, name="by_list")
    by_attachment = rule(RoutingWhen(has_attachment=True), TAGGED, name="by_attachment")
    by_bounce = rule(RoutingWhen(verdict=("bounce",)), RoutingThen(queue="bounces", acknowledge=False), stop=True,
                     name="by_bounce")
    by_domain = rule(RoutingWhen(sender_domain=("example.com",)), TAGGED, name="by_domain")
    routes = [by_subject, by_list, by_attachment, by_bounce, by_domain]
    rules = builtin_rules(True, routing=routes)
    seen = {"bounce": 0, "attachment": 0, "list": 0, "human": 0, "machine": 0}
    paths = corpus_paths(corpus)
    assert len(paths) > 500
    for path in paths:
        mail = parse((corpus / path).read_bytes())
        verdict = classify(mail, Envelope("pipe"), ME)
        sender = sender_of(mail)
        recipients = tuple(dict.fromkeys(a.email for a in (*mail.to, *mail.cc) if a.email))
        fact = Facts(mail=mail, verdict=verdict, sender=sender, created=True, status=TicketStatus.NEW,
                     sender_is_agent=False, sender_is_support=False, recipients=recipients)
        results = {r.name: r.check(fact) for r in rules}
        for r in routes:
            assert all(isinstance(c, Condition) and c.detail for c in r.evaluate(fact)), path

        machine = not verdict.is_human
        seen["machine" if machine else "human"] += 1
        if machine:
            assert results["machine_mail"] == [
                NoAcknowledgement(f"{verdict.kind} ({verdict.reason}): never answer a machine")], path
            assert results["acknowledge_new"] == [], path
            assert results["queue_assignment"] == [], path
            assert results["priority_from_headers"] == [], path
            assert results["not_a_customer"] == [], path
        else:
            assert results["machine_mail"] == [], path
            assert results["acknowledge_new"] == [QueueMail("ack_new", "requester")], path
            assert results["queue_assignment"] == [Assign(None)], path
            assert results["not_a_customer"] == ([] if sender.email else [
                NoAcknowledgement("sender (none) is not a customer address")]), path
        assert results["agent_mail"] == [] and results["imported_history"] == [], path
        assert results["reopen_on_reply"] == [], path  # a new ticket is never reopened

        is_bounce = verdict.kind == VerdictKind.BOUNCE
        seen["bounce"] += is_bounce
        assert results["by_bounce"] == ([SetQueue("bounces"), NoAcknowledgement(
            'routing rule "by_bounce": then.acknowledge = false'), Stop()] if is_bounce else []), path

        attached = any(not a.inline and a.content_type.lower() not in REPORT_PARTS for a in mail.attachments)
        seen["attachment"] += attached
        assert results["by_attachment"] == (HIT if attached else []), path

        listed = any(v.strip() for v in mail.header_all("List-Id"))
        seen["list"] += listed
        assert results["by_list"] == (HIT if listed else []), path

        assert results["by_subject"] == (HIT if SUBJECT.search(mail.subject) else []), path
        domain = sender.email.rpartition("@")[2] if "@" in sender.email else None
        in_domain = domain is not None and (domain == "example.com" or domain.endswith(".example.com"))
        assert results["by_domain"] == (HIT if in_domain else []), path

    # the corpus has plenty of each, so every invariant above was really exercised
    assert seen["bounce"] > 100 and seen["attachment"] > 20 and seen["list"] > 0, seen
    assert seen["human"] > 50 and seen["machine"] > 100, seen
    assert time.monotonic() - started < 60


def test_a_delivery_reports_machine_readable_parts_are_no_attachment() -> None:
    raw = (b"From: MAILER-DAEMON@mx.example\r\nTo: support@example.com\r\nSubject: Undelivered\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n"
           b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
           b"Final-Recipient: rfc822; x@y.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
           b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <a@b>\r\n--B--\r\n")
    parsed = parse(raw)
    assert parsed.attachments  # stored with the ticket ...
    facts = Facts(mail=parsed, verdict=Verdict(VerdictKind.BOUNCE, "test"),
                  sender=Address("", "mailer-daemon@mx.example"), created=True, status=TicketStatus.NEW,
                  sender_is_agent=False, sender_is_support=False)
    assert not facts.has_attachment  # ... but not what `when.has_attachment` means
