"""Never answer a machine: bounces, suppression after hard bounces, rate limits, ping-pong, explain."""

from __future__ import annotations

import dataclasses
import functools
import json
import mailbox
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from mailticket.app import App
from mailticket.clock import FrozenClock
from mailticket.domain import Envelope, TicketStatus
from mailticket.ingest.bounces import parse_bounce
from mailticket.ingest.classify import Identity, classify
from mailticket.ingest.parse import parse
from mailticket.settings import load
from mailticket.store.models import AddressSuppression, Event, Message, OutboxRow, Ticket
from tests.conftest import free_port, ingest, mail, run_cli

ALICE = "alice@customer.example"


def events(app: App, kind: str, ticket: int | None = None) -> list[str]:
    with app.db.transaction() as s:
        query = select(Event.detail).where(Event.kind == kind).order_by(Event.id)
        if ticket is not None:
            query = query.where(Event.ticket_number == ticket)
        return list(s.execute(query).scalars())


def acks(app: App) -> list[OutboxRow]:
    with app.db.transaction() as s:
        return list(s.execute(select(OutboxRow).where(OutboxRow.kind == "ack_new").order_by(OutboxRow.id)).scalars())


def dsn(original_message_id: str, recipient: str = ALICE, status: str = "5.1.1", action: str = "failed") -> bytes:
    """An RFC 3464 delivery status notification from the customer's MX for one of our mails."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>\r\n"
        "To: support@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn-" + original_message_id + ">\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected: User unknown\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: Example Support <support@example.com>\r\nTo: {recipient}\r\n"
        f"Message-ID: <{original_message_id}>\r\nSubject: [#1] Printer on fire\r\n"
        "\r\n--B--\r\n"
    ).encode()


# -- bounces -----------------------------------------------------------------------


def test_hard_bounce_joins_the_ticket_and_suppresses_auto_mail(app: App, clock: FrozenClock) -> None:
    number, _ = ingest(app, mail(message_id="first@customer.example"))
    [ack] = acks(app)
    assert ingest(app, dsn(ack.message_id)) == (number, "joined")
    with app.db.transaction() as s:
        verdict = s.execute(select(Message.verdict).where(Message.message_id == f"dsn-{ack.message_id}")).scalar()
        suppression = s.get(AddressSuppression, ALICE)
        assert s.get_one(Ticket, number).status == TicketStatus.NEW  # a machine does not change the status
    assert verdict == "bounce"
    assert suppression is not None and suppression.status == "5.1.1" and "User unknown" in suppression.reason
    [bounce] = events(app, "bounce", number)
    assert bounce.startswith(f"{ALICE}: permanent (5.1.1) for <{ack.message_id}>")

    later, decision = ingest(app, mail(message_id="second@customer.example", subject="Another problem"))
    assert decision == "new_ticket" and later != number
    assert len(acks(app)) == 1  # nothing queued for the suppressed address ...
    assert any("suppressed until" in e for e in events(app, "suppressed", later))  # ... and the reason recorded

    clock.advance(days=31)  # bounce_suppress_days = 30 by default
    ingest(app, mail(message_id="third@customer.example", subject="A month later"))
    assert len(acks(app)) == 2


def test_temporary_failure_is_only_recorded(app: App) -> None:
    number, _ = ingest(app, mail())
    [ack] = acks(app)
    assert ingest(app, dsn(ack.message_id, status="4.4.1", action="delayed")) == (number, "joined")
    with app.db.transaction() as s:
        assert s.get(AddressSuppression, ALICE) is None
    assert [e.split(" for ")[0] for e in events(app, "bounce", number)] == [f"{ALICE}: temporary (4.4.1)"]
    ingest(app, mail(subject="still reachable"))
    assert len(acks(app)) == 2


def test_plain_text_bounce_with_quoted_headers(app: App) -> None:
    number, _ = ingest(app, mail())
    [ack] = acks(app)
    qmail = (
        "From: MAILER-DAEMON@mx.customer.example\r\nTo: support@example.com\r\nSubject: failure notice\r\n"
        "Message-ID: <qmail-1@mx.customer.example>\r\n\r\n"
        "Hi. This is the qmail-send program at mx.customer.example.\r\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
        f"<{ALICE}>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
        "--- Below this line is a copy of the message.\r\n\r\n"
        f"Message-ID: <{ack.message_id}>\r\nSubject: [#1] Printer on fire\r\n"
    ).encode()
    assert ingest(app, qmail) == (number, "joined")
    with app.db.transaction() as s:
        assert s.get(AddressSuppression, ALICE) is not None


def test_review_ticket_option_keeps_machine_replies_off_the_customers_ticket(
    make_app: Callable[..., App], write_config: Callable[..., Path]
) -> None:
    settings = dataclasses.replace(load(write_config()), machine_replies="review_ticket")
    app = make_app(settings_override=settings)
    number, _ = ingest(app, mail(message_id="orig@customer.example"))
    ooo = mail(subject="Automatic reply: Printer on fire", headers={
        "In-Reply-To": "<orig@customer.example>", "Auto-Submitted": "auto-replied"})
    other, decision = ingest(app, ooo)
    assert decision == "new_ticket" and other != number
    with app.db.transaction() as s:
        assert s.get_one(Ticket, other).needs_review
    assert len(acks(app)) == 1
    [why] = events(app, "new_ticket", other)
    assert "review_ticket" in why and f"#{number}" in why


# -- rate limits and no-auto-reply addresses --------------------------------------------------


def test_rate_ladder_per_recipient(
    make_app: Callable[..., App], write_config: Callable[..., Path], clock: FrozenClock
) -> None:
    ladder = '[limits]\nauto_mail_per_recipient = ["2/10m", "3/1d"]\n'
    app = make_app(settings_override=load(write_config(extra=ladder)))
    for i in range(3):
        ingest(app, mail(subject=f"problem {i}"))
        clock.advance(minutes=1)
    assert len(acks(app)) == 2
    assert any("rate limit" in e and "2/10m" in e for e in events(app, "suppressed"))
    clock.advance(minutes=10)
    ingest(app, mail(subject="problem 3"))
    assert len(acks(app)) == 3
    ingest(app, mail(subject="problem 4"))
    assert len(acks(app)) == 3
    assert any("3/1d" in e for e in events(app, "suppressed"))
    ingest(app, mail(subject="someone else", sender="Bob <bob@customer.example>"))
    assert len(acks(app)) == 4  # per recipient: Bob is not limited by Alice's mail


@pytest.mark.parametrize("address", ["abuse@customer.example", "bounces+123@lists.example.com",
                                      "helpdesk-request@customer.example", "root@customer.example"])
def test_no_auto_reply_addresses_never_get_auto_mail(app: App, address: str) -> None:
    number, _ = ingest(app, mail(sender=f"Someone <{address}>"))
    assert acks(app) == []
    assert any("no-auto-reply address" in e for e in events(app, "suppressed", number))


# -- ping-pong ------------------------------------------------------------------------------


@dataclass
class NaiveAutoresponder:
    """Answers every mail it receives with a brand-new mail to the support address: no Auto-Submitted,
    no In-Reply-To, a new subject each time. The worst kind of robot."""

    received: list[bytes] = field(default_factory=list)
    outbox: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if ALICE not in [r.lower() for r in envelope.rcpt_tos]:
            return "250 OK"  # the agents' notifications: their mailboxes are not the robot's
        self.received.append(bytes(envelope.content))
        n = len(self.received)
        self.outbox.append(mail(subject=f"We got your message ({n})", message_id=f"robot-{n}@customer.example",
                                body="Thank you for your email. We will get back to you.\n"))
        return "250 OK"


@pytest.fixture
def robot() -> Iterator[tuple[NaiveAutoresponder, int]]:
    handler = NaiveAutoresponder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def test_ping_pong_with_a_naive_autoresponder_ends(
    robot: tuple[NaiveAutoresponder, int], make_app: Callable[..., App], write_config: Callable[..., Path],
    clock: FrozenClock,
) -> None:
    handler, port = robot
    app = make_app(settings_override=load(write_config(transport=f"smtp://127.0.0.1:{port}")))
    ingest(app, mail(subject="Printer on fire"))  # the first, human, message from the robot's address
    rounds = 0
    for _minute in range(24 * 60):  # one simulated day, a minute per round
        app.sender.flush()
        while handler.outbox:
            ingest(app, handler.outbox.pop(0))
        clock.advance(minutes=1)
        rounds += 1
        if not handler.outbox and rounds > 30 and app.sender.flush().sent == 0:
            break
    sent = len(handler.received)
    assert sent == 10, sent  # the first rung of the ladder: 10 per 10 minutes (then 25/hour, 100/day)
    assert rounds < 24 * 60, "the loop did not end"
    with app.db.transaction() as s:
        tickets = s.execute(select(func.count()).select_from(Ticket)).scalar_one()
    assert tickets == sent + 1  # every robot mail is stored (nothing is lost) ...
    assert any("rate limit" in e for e in events(app, "suppressed"))  # ... and the stop is recorded


# -- explain -----------------------------------------------------------------------------------


def test_explain_shows_the_decision_path(write_config: Callable[..., Path]) -> None:
    config = write_config()

    run = functools.partial(run_cli, config)

    assert run("db", "upgrade").returncode == 0
    assert run("ingest", stdin=mail(message_id="why@customer.example")).returncode == 0
    assert run("ingest", stdin=mail(message_id="ooo@customer.example", subject="Re: your mail",
                                    headers={"Auto-Submitted": "auto-replied"})).returncode == 0
    human = json.loads(run("explain", "<why@customer.example>", "--json").stdout)
    assert (human["verdict"], human["ticket"], human["received"]["source"]) == ("human", 1, "pipe")
    assert [s["kind"] for s in human["steps"] if s["kind"] != "rule"] == ["classified", "new_ticket", "queued"]
    assert [r["rule"] for r in human["rules"]] == ["queue_assignment", "acknowledge_new"]
    assert human["mails"][0]["kind"] == "ack_new" and human["mails"][0]["to"] == ALICE
    assert human["mails"][0]["rule"] == "acknowledge_new"  # the mail names the rule that caused it
    machine = json.loads(run("explain", "ooo@customer.example", "--json").stdout)
    assert machine["verdict"] == "auto_reply" and "Auto-Submitted: auto-replied" in machine["verdict_reason"]
    assert any(s["kind"] == "suppressed" and "never answer a machine" in s["detail"] and s["rule"] == "machine_mail"
               for s in machine["steps"])
    assert [r["rule"] for r in machine["rules"]] == ["machine_mail"]
    assert machine["mails"] == []
    table = run("explain", "ooo@customer.example")
    assert table.returncode == 0 and b"verdict: auto_reply" in table.stdout
    missing = run("explain", "nobody@nowhere.example")
    assert missing.returncode == 1 and b"no message with Message-ID" in missing.stderr


# -- the real-mail corpus ---------------------------------------------------------------------------

ME = Identity("tickets.example.com", "tickets.example.com")


def _messages(path: Path) -> Iterator[bytes]:
    if "mbox" in path.parts:
        for message in mailbox.mbox(str(path)):
            yield message.as_bytes()
    else:
        yield path.read_bytes()


def test_every_bounce_in_the_corpus_is_machine_mail(corpus: Path) -> None:
    root = corpus / "bounces"
    human: list[str] = []
    total = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix not in {".md", ".txt"}):
        if "not" in path.relative_to(root).parts:
            continue
        for raw in _messages(path):
            total += 1
            verdict = classify(parse(raw), Envelope("pipe"), ME)
            if verdict.is_human:
                human.append(str(path.relative_to(root)))
    expectations = json.loads((corpus / "bounceparser" / "expectations.json").read_text())
    for case in expectations["cases"]:
        expect = [e["expect"] for e in case["expectations"]]
        # Upstream also counts three plain spam mails as "bounces" with no report ("reports": 0): they are
        # not delivery reports, so they are not asserted here (the agreement test below counts them).
        if not any(e.get("is_bounce") == 1 and e.get("reports") != 0 for e in expect):
            continue
        total += 1
        if classify(parse((corpus / "bounceparser" / case["fixture"]).read_bytes()), Envelope("pipe"), ME).is_human:
            human.append(case["fixture"])
    assert total > 600
    assert human == []


def test_bounceparser_is_bounce_agreement(corpus: Path) -> None:
    expectations = json.loads((corpus / "bounceparser" / "expectations.json").read_text())
    agree, disagreements = 0, []
    cases = [c for c in expectations["cases"] if any("is_bounce" in e["expect"] for e in c["expectations"])]
    for case in cases:
        want = next(e["expect"]["is_bounce"] for e in case["expectations"] if "is_bounce" in e["expect"])
        parsed = parse((corpus / "bounceparser" / case["fixture"]).read_bytes())
        verdict = classify(parsed, Envelope("pipe"), ME)
        # A bounce is a failure report; a delay warning is machine mail, not a bounce.
        got = int(verdict.kind == "bounce" and not parse_bounce(parsed).transient)
        if got == want:
            agree += 1
        else:
            disagreements.append((case["fixture"], want, str(verdict.kind)))
    rate = agree / len(cases)
    print(f"bounceparser is_bounce agreement: {agree}/{len(cases)} = {rate:.1%}; {disagreements}")
    assert len(cases) >= 90
    assert rate >= 0.95, disagreements


def test_bounceparser_addresses_and_original_message_ids(corpus: Path) -> None:
    """Where upstream names the bounced addresses or the original Message-ID, we find them too (most)."""
    expectations = json.loads((corpus / "bounceparser" / "expectations.json").read_text())
    checked = found = 0
    misses = []
    for case in expectations["cases"]:
        for expect in (e["expect"] for e in case["expectations"]):
            if expect.get("is_bounce") != 1 or not expect.get("addresses"):
                continue
            report = parse_bounce(parse((corpus / "bounceparser" / case["fixture"]).read_bytes()))
            ours = {r.address for r in report.recipients}
            checked += 1
            if set(expect["addresses"]) <= ours:
                found += 1
            else:
                misses.append((case["fixture"], expect["addresses"], sorted(ours)[:3]))
            if expect.get("orig_message_id"):
                assert report.original_message_id == expect["orig_message_id"].strip("<>"), case["fixture"]
    print(f"bounced addresses found: {found}/{checked}; misses: {misses}")
    assert checked >= 30
    assert found / checked >= 0.8, misses


def test_human_corpus_messages_are_human(corpus: Path) -> None:
    rows = [line.split("\t") for line in (corpus / "MANIFEST.tsv").read_text().splitlines()[1:]]
    picked = [rel for rel, _source, kind, _size in rows
              if rel.split("/")[0] in {"zammad", "discourse", "helpdesk"} and kind not in {"bounce", "autoreply"}]
    assert len(picked) >= 8
    machine = {rel: classify(parse((corpus / rel).read_bytes()), Envelope("pipe"), ME) for rel in picked}
    assert {rel: v for rel, v in machine.items() if not v.is_human} == {}


@pytest.mark.parametrize("raw", [
    mail(subject="Delivery failure of my order", body="The courier says the address does not exist.\n"),
    mail(subject="Question", body="The portal says my account does not exist.\n", headers={"Auto-Submitted": "No"}),
], ids=["bounce-like-subject", "auto-submitted-No"])
def test_customers_writing_about_delivery_problems_are_human(app: App, raw: bytes) -> None:
    number, decision = ingest(app, raw)
    assert decision == "new_ticket"
    with app.db.transaction() as s:
        assert s.execute(select(Message.verdict).where(Message.ticket_number == number)).scalar() == "human"
    assert len(acks(app)) == 1


def test_admin_lists_and_removes_suppressions(write_config: Callable[..., Path]) -> None:
    config = write_config()

    run = functools.partial(run_cli, config)

    assert run("db", "upgrade").returncode == 0
    assert run("ingest", stdin=mail(message_id="s1@customer.example")).returncode == 0
    [ack] = json.loads(run("outbox", "list", "--json").stdout)
    assert run("ingest", stdin=dsn(ack["message_id"])).returncode == 0
    [row] = json.loads(run("suppressions", "list", "--json").stdout)
    assert (row["address"], row["status"], row["active"]) == (ALICE, "5.1.1", True)
    assert run("suppressions", "remove", ALICE.upper()).returncode == 0
    assert json.loads(run("suppressions", "list", "--json").stdout) == []
    assert run("suppressions", "remove", ALICE).returncode == 1
    assert run("ingest", stdin=mail(message_id="s2@customer.example", subject="mailbox fixed")).returncode == 0
    assert len(json.loads(run("outbox", "list", "--json").stdout)) == 2  # acknowledged again
