"""Agents answer tickets from their mail client, end to end: a real config file, the live SMTP
listener (or the pipe), the pipeline and rules, the outbox sent over SMTP to a real sink on
loopback, and `mailticket tickets show --json` for what the ticket holds.

Customer mail -> ack + one notification per agent (Reply-To support+<token>@) -> the agent's reply
from Gmail/Outlook/Thunderbird -> exactly one relayed mail to the customer, the quote cut off.
Forged agent mail (no token, another ticket's, another agent's, DMARC fail, an untrusted
Authentication-Results) is an internal unverified note and the agent is told. Out-of-office,
collisions (held, released, #discard), replays, follow-ups (Cc, solved, closed), a customer's
DMARC fail and the languages of every mail.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any

import pytest

from mailticket.app import App
from mailticket.clock import FrozenClock
from mailticket.domain import Envelope
from mailticket.settings import load
from mailticket.store.models import RawMessage, Ticket
from tests.conftest import as_json, mail, run_cli
from tests.test_outbound import Sink, sink
from tests.test_smtp import Running, serve_smtp

__all__ = ["serve_smtp", "sink"]  # the live listener and the outbound SMTP sink, shared fixtures

SUPPORT = "support@example.com"
ANN, BEN, DORA = "ann@example.com", "ben@example.com", "dora@example.com"
ANN_ALIAS = "ann.agent@example.com"
MARKER = "-- Reply above this line --"
MARKER_DE = "-- Bitte oberhalb dieser Zeile antworten --"
TOKEN_ADDRESS = re.compile(r"^support\+[a-z0-9.]+@example\.com$")
DISPLAY = "{agent} from {mailbox}"

AGENTS = f"""
[[agents]]
address = "{ANN}"
name = "Ann Agent"
aliases = ["{ANN_ALIAS}"]

[[agents]]
address = "{BEN}"
name = "Ben Agent"

[[queues]]
name = "support"
agents = ["{ANN}", "{BEN}"]
"""

DMARC_AGENTS = AGENTS + """
[identity]
agent_checks = ["token", "dmarc"]
trusted_authserv_ids = ["mx.example.com"]
"""

LANGUAGE_AGENTS = f"""
[[agents]]
address = "{ANN}"
name = "Ann Agent"

[[agents]]
address = "{DORA}"
name = "Dora Agentin"
language = "de"

[[queues]]
name = "support"
agents = ["{ANN}", "{DORA}"]

[[queues]]
name = "help"
language = "de"
agents = ["{ANN}"]
"""

WriteConfig = Callable[..., Path]
MakeApp = Callable[..., App]


# -- the world: one install, its outbound SMTP sink, its clock -----------------------------

@dataclass(frozen=True)
class Got:
    """One mail the sink accepted."""

    rcpt: tuple[str, ...]
    msg: EmailMessage

    def __getitem__(self, name: str) -> str:
        value = self.msg.get(name)
        return "" if value is None else str(value)

    @property
    def text(self) -> str:
        part = self.msg.get_body(preferencelist=("plain",))
        assert part is not None, self.msg
        content = part.get_content()
        assert isinstance(content, str)
        return content.replace("\r\n", "\n")

    @property
    def html(self) -> str:
        part = self.msg.get_body(preferencelist=("html",))
        content = part.get_content() if part is not None else ""
        assert isinstance(content, str)
        return content

    @property
    def message_id(self) -> str:
        return self["Message-ID"].strip().strip("<>")

    @property
    def reply_to(self) -> str:
        return parseaddr(self["Reply-To"])[1]

    @property
    def sender(self) -> tuple[str, str]:
        return parseaddr(self["From"])

    def files(self) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for part in self.msg.iter_attachments():
            name = part.get_filename()
            if name:
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                found[name] = payload
        return found


@dataclass
class World:
    app: App
    config: Path
    sink: Sink
    clock: FrozenClock
    seen: int = 0

    def deliver(self, raw: bytes, *recipients: str, mail_from: str = "") -> tuple[int | None, str]:
        """What the MTA's pipe does: store with the envelope recipients, then process."""
        accepted = self.app.inbox.accept(raw, Envelope("pipe", mail_from, tuple(recipients) or (SUPPORT,)))
        if accepted.duplicate:
            return None, "duplicate"
        [outcome] = self.app.pipeline.process([accepted.raw_id])
        assert outcome.decision != "quarantined", outcome.error
        return outcome.ticket_number, outcome.decision

    def sent(self) -> list[Got]:
        """Send every due outbox row to the sink; the mails it took since the last call."""
        self.app.sender.flush(limit=200)
        new = self.sink.deliveries[self.seen:]
        self.seen += len(new)
        assert all(d.reply.startswith("250") for d in new), [d.reply for d in new]
        return [Got(tuple(r.lower() for r in d.rcpt_tos),
                    email.message_from_bytes(d.content, policy=email.policy.default))  # type: ignore[arg-type]
                for d in new]

    def show(self, number: int) -> dict[str, Any]:
        data = as_json(run_cli(self.config, "tickets", "show", str(number), "--json"))
        assert isinstance(data, dict)
        return data

    def ticket(self, number: int) -> Ticket:
        with self.app.db.transaction() as s:
            row = s.get_one(Ticket, number)
            s.expunge(row)
            return row

    def update(self, number: int, **values: Any) -> None:
        """What an admin's tool would do to the ticket (there is no `tickets set` command)."""
        with self.app.db.transaction() as s:
            row = s.get_one(Ticket, number)
            for name, value in values.items():
                setattr(row, name, value)


def configure(write_config: WriteConfig, sink: Sink, extra: str, mail_settings: str = "") -> Path:
    """A config whose outbound goes to ``sink``; the support mailbox relays as "<agent> from <mailbox>"."""
    path = write_config(extra=extra, agents=(), transport=f"smtp://127.0.0.1:{sink.port}")
    text = path.read_text(encoding="utf-8")
    assert text.count('queue = "support"\n') == 1 and text.count("[mail]\n") == 1
    text = text.replace('queue = "support"\n', f'queue = "support"\nagent_display = "{DISPLAY}"\n')
    if mail_settings:
        text = text.replace("[mail]\n", "[mail]\n" + mail_settings.strip() + "\n")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def world(write_config: WriteConfig, make_app: MakeApp, sink: Sink, clock: FrozenClock) -> Callable[..., World]:
    def build(extra: str = AGENTS, mail_settings: str = "") -> World:
        path = configure(write_config, sink, extra, mail_settings)
        return World(make_app(load(path)), path, sink, clock)

    return build


# -- mail as clients write it ---------------------------------------------------------

def customer_mail(subject: str, body: str, sender: str = "Alice Customer <alice@customer.example>",
                  to: str = SUPPORT, message_id: str | None = None, headers: dict[str, str] | None = None,
                  attachment: tuple[str, bytes] | None = None) -> tuple[bytes, str]:
    """(the raw mail, its Message-ID)."""
    message_id = message_id or f"{uuid.uuid4().hex}@customer.example"
    if attachment is None:
        return mail(subject=subject, body=body, sender=sender, to=to, message_id=message_id, headers=headers), \
            message_id
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<{message_id}>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    msg.add_attachment(attachment[1], maintype="application", subtype="pdf", filename=attachment[0])
    return msg.as_bytes(), message_id


def quoted(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines())


def agent_reply(to_mail: Got, sender: str, text: str, shape: str = "thunderbird", *, to: str | None = None,
                subject: str | None = None, threaded: bool = True, message_id: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[bytes, str]:
    """An agent's reply to one of our mails (a notification, a collision mail), as ``shape`` writes it:
    (the raw mail, the address it goes to: the mail's Reply-To unless ``to`` says otherwise)."""
    recipient = to if to is not None else to_mail.reply_to
    name, address = to_mail.sender
    if shape == "gmail":  # wraps the attribution line, quotes with '>', signature at the bottom
        body = (f"{text}\n\nOn Mon, 2 Nov 2026 at 10:05, {name} <\n{address}> wrote:\n\n{quoted(to_mail.text)}\n"
                "\n-- \nAnn Agent | Example Support\n+49 30 1234567\n")
    elif shape == "outlook":  # a From/Sent/To/Subject block, then the original unquoted
        body = (f"{text}\n\nFrom: {name} <{address}>\nSent: Monday, November 2, 2026 10:05 AM\n"
                f"To: {to_mail['To']}\nSubject: {to_mail['Subject']}\n\n{to_mail.text}\n")
    elif shape == "thunderbird":
        body = f"{text}\n\nOn 02.11.26 10:05, {name} wrote:\n{quoted(to_mail.text)}\n"
    elif shape == "bare":
        body = text + "\n"
    else:
        raise AssertionError(shape)
    message_id = message_id or f"{uuid.uuid4().hex}@{sender.rpartition('@')[2].strip('>')}"
    lines = [f"From: {sender}", f"To: {recipient}", f"Subject: {subject or 'Re: ' + to_mail['Subject']}",
             "Date: Mon, 02 Nov 2026 10:06:00 +0000", f"Message-ID: <{message_id}>"]
    if threaded:
        lines += [f"In-Reply-To: <{to_mail.message_id}>", f"References: <{to_mail.message_id}>"]
    if shape == "outlook":
        lines.append("Thread-Index: AQHZ1234567890abcdef==")
    for header, value in (headers or {}).items():
        lines.append(f"{header}: {value}")
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit",
              "", body.replace("\n", "\r\n")]
    return "\r\n".join(lines).encode("utf-8"), recipient


def to(got: list[Got], address: str) -> list[Got]:
    return [g for g in got if address.lower() in g.rcpt]


def one(got: list[Got], address: str) -> Got:
    mine = to(got, address)
    assert len(mine) == 1, [(g.rcpt, g["Subject"]) for g in got]
    return mine[0]


def notifications(got: list[Got]) -> dict[str, Got]:
    """The notifications among ``got``, by agent."""
    found: dict[str, Got] = {}
    for g in got:
        if g["Auto-Submitted"] == "auto-generated" and "via Example Support" in g.sender[0]:
            [rcpt] = g.rcpt
            assert rcpt not in found
            found[rcpt] = g
    return found


def open_ticket(w: World, subject: str, customer: str, **kwargs: Any) -> tuple[int, str, list[Got]]:
    """A customer's new ticket: (its number, the customer's Message-ID, the mail it caused)."""
    raw, mid = customer_mail(subject, kwargs.pop("body", "Hello, my printer is on fire. Please help.\n"),
                             sender=customer, **kwargs)
    number, decision = w.deliver(raw, kwargs.get("to", SUPPORT))
    assert decision == "new_ticket" and number is not None
    return number, mid, w.sent()


def message(data: dict[str, Any], message_id: str) -> dict[str, Any]:
    [found] = [m for m in data["messages"] if m["message_id"] == message_id]
    return found


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def assert_relayed(got: Got, *, customer: str, agent_name: str, number: int, in_reply_to: str, text: str) -> None:
    """The customer's copy of an agent's reply: from the support address, a person's mail."""
    assert got.sender == (DISPLAY.format(agent=agent_name, mailbox="Example Support"), SUPPORT)
    assert parseaddr(got["To"])[1] == customer
    assert got["In-Reply-To"].strip() == f"<{in_reply_to}>"
    assert f"[#{number}]" in got["Subject"]
    assert got["Auto-Submitted"] == ""
    assert text in got.text
    assert text.splitlines()[0] in got.html
    for leftover in ("wrote:", MARKER, "Sent:", "Requester:", "on fire", "> ", "Ann Agent | Example Support"):
        assert leftover not in got.text, (leftover, got.text)
        assert leftover.replace(">", "&gt;") not in got.html, (leftover, got.html)


# -- 1. a customer over the live listener, three mail clients answering over it ------------

def test_customer_to_agents_and_back_over_the_live_listener(
        world: Callable[..., World], serve_smtp: Callable[..., Running]) -> None:
    w = world()
    srv = serve_smtp(app=w.app)
    pdf = b"%PDF-1.4 screenshot\n" * 50
    customers = {"gmail": "alice@customer.example", "outlook": "bob@customer.example",
                 "thunderbird": "carl@customer.example"}
    opened: dict[str, tuple[str, str]] = {}  # shape -> (customer's Message-ID, subject)
    with srv.client() as client:
        for shape, address in customers.items():
            subject = f"Printer on fire ({shape})"
            raw, mid = customer_mail(subject, "Hello, my printer is on fire.\nIt smells of toast.\n",
                                     sender=f"{address.split('@')[0].title()} Customer <{address}>",
                                     attachment=("screenshot.pdf", pdf))
            assert client.sendmail(address, [SUPPORT], raw) == {}
            opened[shape] = (mid, subject)
    wait_for(lambda: srv.count(RawMessage) == 3)
    assert [o.decision for o in srv.app.pipeline.drain()] == ["new_ticket"] * 3
    got = w.sent()
    assert len(got) == 3 * 3, [(g.rcpt, g["Subject"]) for g in got]  # per ticket: an ack and two notifications

    numbers: dict[str, int] = {}
    notes: dict[str, Got] = {}
    for shape, address in customers.items():
        mid, subject = opened[shape]
        ack = one(got, address)
        number = int(re.search(r"\[#(\d+)\]", ack["Subject"]).group(1))  # type: ignore[union-attr]
        numbers[shape] = number
        assert ack["Auto-Submitted"] == "auto-replied" and "thank you for writing" in ack.text
        assert ack["In-Reply-To"].strip() == f"<{mid}>"
        mine = notifications([g for g in got if f"[#{number}]" in g["Subject"]])
        assert set(mine) == {ANN, BEN}
        tokens = set()
        for agent, note in mine.items():
            name = address.split("@")[0].title() + " Customer"
            assert note.sender == (f"{name} via Example Support", SUPPORT)
            assert parseaddr(note["To"])[1] == agent
            assert TOKEN_ADDRESS.match(note.reply_to), note["Reply-To"]
            tokens.add(note.reply_to)
            assert note["Auto-Submitted"] == "auto-generated"
            assert note["X-Mailticket-Loop"] == "tickets.example.com"  # [mail] loop_token: message_id_domain
            text = note.text
            assert text.splitlines()[0] == MARKER
            assert "Hello, my printer is on fire.\nIt smells of toast." in text
            assert f"[#{number}] {subject}" in text
            assert "New ticket" in text
            assert "Status: new | Priority: normal | Queue: support" in text
            assert f"Requester: {name} <{address}>" in text
            assert "screenshot.pdf" in text
            assert note.files() == {"screenshot.pdf": pdf}
        assert len(tokens) == 2  # each agent's own reply address
        notes[shape] = mine[ANN]

    # Ann answers each ticket from a different mail client, over SMTP to the Reply-To address.
    w.clock.advance(minutes=5)
    answers = {"gmail": "Please unplug it now.\nThen open the window.",
               "outlook": "We are sending a technician today.",
               "thunderbird": "Fire brigade first, printer second."}
    with srv.client() as client:
        for shape, answer in answers.items():
            raw, recipient = agent_reply(notes[shape], f"Ann Agent <{ANN}>", answer, shape,
                                         threaded=shape != "outlook")  # Outlook's reply: only the token
            assert client.sendmail(ANN, [recipient], raw) == {}
    wait_for(lambda: srv.count(RawMessage) == 6)
    assert [o.decision for o in srv.app.pipeline.drain()] == ["joined"] * 3
    got = w.sent()
    assert len(got) == 3, [(g.rcpt, g["Subject"]) for g in got]  # one relayed mail per reply, nothing else
    for shape, answer in answers.items():
        number = numbers[shape]
        relayed = one(got, customers[shape])
        assert_relayed(relayed, customer=customers[shape], agent_name="Ann Agent", number=number,
                       in_reply_to=opened[shape][0], text=answer)
        data = w.show(number)
        assert data["status"] == "open"
        assert data["first_response_at"] is not None
        [reply] = [m for m in data["messages"] if m["direction"] == "in" and m["from"] == ANN]
        assert reply["internal"] is False and reply["verified"] is True
        assert reply["visible_text"] == answer


# -- 2. forged agent mail ---------------------------------------------------------------

def assert_refused(w: World, number: int, message_id: str, agent: str, reason: str, customer: str) -> None:
    got = w.sent()
    assert to(got, customer) == [], "nothing may reach the customer"
    refusal = one(got, agent)
    assert got == [refusal], [(g.rcpt, g["Subject"]) for g in got]
    assert parseaddr(refusal["To"])[1] == agent
    assert f"[#{number}]" in refusal["Subject"]
    assert "was refused" in refusal.text and reason in refusal.text, refusal.text
    data = w.show(number)
    stored = message(data, message_id)
    assert stored.get("internal") is True, stored
    assert stored.get("verified") is False, stored
    assert data["status"] == "new" and data["first_response_at"] is None


def test_forged_agent_mail_is_an_internal_note_and_the_agent_is_told(world: Callable[..., World]) -> None:
    w = world()
    number, _mid, got = open_ticket(w, "Router blinks", "Alice Customer <alice@customer.example>")
    other, _other_mid, other_got = open_ticket(w, "Modem hums", "Bob Customer <bob@customer.example>")
    notes, other_notes = notifications(got), notifications(other_got)
    customer = "alice@customer.example"

    # From an agent (here: Ann's alias), no token, no reference: only the subject tag.
    mid = f"{uuid.uuid4().hex}@example.com"
    raw, _ = agent_reply(notes[ANN], f"Ann <{ANN_ALIAS}>", "Refund granted, 500 EUR.", "bare", to=SUPPORT,
                         threaded=False, message_id=mid)
    assert w.deliver(raw, SUPPORT) == (number, "joined")
    assert_refused(w, number, mid, ANN, "carries no reply token", customer)  # to the configured address

    # Ann's genuine token, but for the other ticket, with this ticket's tag.
    mid = f"{uuid.uuid4().hex}@example.com"
    raw, recipient = agent_reply(notes[ANN], f"Ann Agent <{ANN}>", "Refund granted, 600 EUR.", "gmail",
                                 to=other_notes[ANN].reply_to, threaded=False, message_id=mid)
    assert w.deliver(raw, recipient) == (number, "joined")
    assert_refused(w, number, mid, ANN, f"for ticket #{other}", customer)

    # Ben's token on this ticket, From Ann.
    mid = f"{uuid.uuid4().hex}@example.com"
    raw, recipient = agent_reply(notes[BEN], f"Ann Agent <{ANN}>", "Refund granted, 700 EUR.", "outlook",
                                 threaded=False, message_id=mid)
    assert recipient == notes[BEN].reply_to
    assert w.deliver(raw, recipient) == (number, "joined")
    assert_refused(w, number, mid, ANN, "made for another agent", customer)

    # No token, but In-Reply-To names the notification sent to Ben, From Ann.
    mid = f"{uuid.uuid4().hex}@example.com"
    raw, recipient = agent_reply(notes[BEN], f"Ann Agent <{ANN}>", "Refund granted, 800 EUR.", "thunderbird",
                                 to=SUPPORT, message_id=mid)
    assert w.deliver(raw, recipient) == (number, "joined")
    assert_refused(w, number, mid, ANN, f"sent to {BEN}", customer)
    assert w.ticket(other).status == "new"


def test_the_notification_in_in_reply_to_is_proof_enough(world: Callable[..., World]) -> None:
    """A client that replies to From (support@) instead of Reply-To: In-Reply-To names Ann's notification."""
    w = world()
    customer = "alice@customer.example"
    number, customer_mid, got = open_ticket(w, "Router blinks", f"Alice <{customer}>")
    raw, recipient = agent_reply(notifications(got)[ANN], f"Ann Agent <{ANN}>", "Restart it, please.", "gmail",
                                 to=SUPPORT, subject="Re: no tag here")
    assert w.deliver(raw, recipient) == (number, "joined")
    got = w.sent()
    assert_relayed(one(got, customer), customer=customer, agent_name="Ann Agent", number=number,
                   in_reply_to=customer_mid, text="Restart it, please.")
    assert len(got) == 1


def test_agent_mail_without_dmarc_pass_is_refused(world: Callable[..., World]) -> None:
    w = world(DMARC_AGENTS)
    number, customer_mid, got = open_ticket(w, "Router blinks", "Alice Customer <alice@customer.example>")
    assert len(got) == 3  # the customer's mail has no Authentication-Results: acknowledged as ever
    note = notifications(got)[ANN]
    customer = "alice@customer.example"
    for header, why in (("mx.example.com; dmarc=fail header.from=example.com", "DMARC/DKIM fail"),
                        ("evil.example; dmarc=pass header.from=example.com", "did not vouch")):
        mid = f"{uuid.uuid4().hex}@example.com"
        raw, recipient = agent_reply(note, f"Ann Agent <{ANN}>", "Refund granted.", "thunderbird",
                                     message_id=mid, headers={"Authentication-Results": header})
        assert w.deliver(raw, recipient) == (number, "joined")
        assert_refused(w, number, mid, ANN, why, customer)

    # The same reply with our MTA's dmarc=pass goes out.
    raw, recipient = agent_reply(note, f"Ann Agent <{ANN}>", "Refund granted.", "thunderbird", headers={
        "Authentication-Results": "mx.example.com; dkim=pass header.d=example.com; dmarc=pass header.from=example.com"})
    assert w.deliver(raw, recipient) == (number, "joined")
    relayed = one(w.sent(), customer)
    assert_relayed(relayed, customer=customer, agent_name="Ann Agent", number=number, in_reply_to=customer_mid,
                   text="Refund granted.")


# -- 3. an agent's out-of-office ----------------------------------------------------------

def test_agent_out_of_office_is_recorded_not_relayed(world: Callable[..., World]) -> None:
    w = world()
    number, _mid, got = open_ticket(w, "Router blinks", "Alice Customer <alice@customer.example>")
    note = notifications(got)[ANN]
    mid = f"{uuid.uuid4().hex}@example.com"
    raw, recipient = agent_reply(note, f"Ann Agent <{ANN}>", "I am out of the office until Monday.", "bare",
                                 subject=f"Automatic reply: {note['Subject']}", message_id=mid,
                                 headers={"Auto-Submitted": "auto-replied", "X-Autoreply": "yes"})
    assert w.deliver(raw, recipient) == (number, "joined")
    assert w.sent() == []  # nothing to the customer, no refusal, no notification
    data = w.show(number)
    assert data["status"] == "new" and data["first_response_at"] is None
    stored = message(data, mid)
    assert stored["from"] == ANN and stored["verdict"] != "human"


# -- 4. collisions ------------------------------------------------------------------------

def collide(w: World, subject: str, customer: str) -> tuple[int, str, Got, str]:
    """Ann and Ben both answer their notification; Ann's goes out first.
    (ticket, customer's Message-ID, Ben's collision mail, Ben's held Message-ID)."""
    number, customer_mid, got = open_ticket(w, subject, f"A Customer <{customer}>")
    notes = notifications(got)
    w.clock.advance(minutes=3)
    raw, recipient = agent_reply(notes[ANN], f"Ann Agent <{ANN}>", "Ann: restart the router.", "gmail")
    assert w.deliver(raw, recipient) == (number, "joined")
    relayed = one(w.sent(), customer)
    assert "Ann: restart the router." in relayed.text
    w.clock.advance(minutes=3)
    held_mid = f"{uuid.uuid4().hex}@example.com"
    raw, recipient = agent_reply(notes[BEN], f"Ben Agent <{BEN}>", "Ben: replace the router.", "thunderbird",
                                 message_id=held_mid)
    assert w.deliver(raw, recipient) == (number, "joined")
    got = w.sent()
    assert to(got, customer) == []
    collision = one(got, BEN)
    assert got == [collision]
    assert TOKEN_ADDRESS.match(collision.reply_to) and collision.reply_to != notes[BEN].reply_to
    assert "Ann: restart the router." in collision.text and "Ben: replace the router." in collision.text
    assert collision["Auto-Submitted"] == "auto-generated"
    data = w.show(number)
    assert message(data, held_mid)["internal"] is True
    return number, customer_mid, collision, held_mid


def test_collision_holds_the_second_reply_until_its_agent_answers(world: Callable[..., World]) -> None:
    w = world()
    customer = "alice@customer.example"
    number, customer_mid, collision, _held = collide(w, "Router blinks", customer)
    w.clock.advance(minutes=3)
    raw, recipient = agent_reply(collision, f"Ben Agent <{BEN}>", "ok, send mine too", "outlook")
    assert w.deliver(raw, recipient) == (number, "joined")
    got = w.sent()
    relayed = one(got, customer)
    assert got == [relayed]
    assert_relayed(relayed, customer=customer, agent_name="Ben Agent", number=number, in_reply_to=customer_mid,
                   text="Ben: replace the router.")
    assert "ok, send mine too" not in relayed.text

    # In another ticket the held reply is dropped.
    other_customer = "bob@customer.example"
    other, _mid, collision, held_mid = collide(w, "Modem hums", other_customer)
    w.clock.advance(minutes=3)
    raw, recipient = agent_reply(collision, f"Ben Agent <{BEN}>", "#discard", "thunderbird")
    assert w.deliver(raw, recipient) == (other, "joined")
    assert w.sent() == []
    data = w.show(other)
    assert message(data, held_mid)["internal"] is True
    assert sum(1 for m in data["messages"] if m["direction"] == "out" and m["author_role"] == "agent") == 1


# -- 5. replays -----------------------------------------------------------------------------

def test_the_same_agent_mail_twice_is_relayed_once(world: Callable[..., World]) -> None:
    w = world()
    customer = "alice@customer.example"
    number, _mid, got = open_ticket(w, "Router blinks", f"Alice <{customer}>")
    mid = f"{uuid.uuid4().hex}@example.com"
    raw, recipient = agent_reply(notifications(got)[ANN], f"Ann Agent <{ANN}>", "Restart it.", "gmail",
                                 message_id=mid)
    assert w.deliver(raw, recipient) == (number, "joined")
    # The MTA delivers it again (another Received line): the intake knows it.
    trace = b"Received: from mx2.example.com by mx.example.com; Mon, 02 Nov 2026 10:07:00 +0000\r\n"
    assert w.deliver(trace + raw, recipient) == (None, "duplicate")
    # A copy that differs beyond its trace (a forwarder added a header): stored, but nothing done again.
    assert w.deliver(trace + b"X-Forwarded-For: ann@example.com support@example.com\r\n" + raw,
                     recipient) == (number, "replayed")
    got = w.sent()
    assert len(got) == 1 and to(got, customer) == got
    assert sum(1 for m in w.show(number)["messages"] if m["message_id"] == mid) == 1


# -- 6. follow-ups ---------------------------------------------------------------------------

def test_a_cc_participant_joins_and_gets_the_agents_answer(world: Callable[..., World]) -> None:
    w = world()
    alice, carol = "alice@customer.example", "carol@customer.example"
    number, alice_mid, _got = open_ticket(w, "Router blinks", f"Alice <{alice}>",
                                          headers={"Cc": f"Carol <{carol}>, Ann Agent <{ANN}>"})
    participants = {p["email"] for p in w.show(number)["participants"]}
    assert participants == {alice, carol}  # the agent in Cc is no participant

    # Carol, in Cc, answers: she joins and the agents hear of it.
    w.clock.advance(minutes=1)
    raw, carol_mid = customer_mail(f"Re: [#{number}] Router blinks", "Mine blinks too, since Tuesday.\n",
                                   sender=f"Carol <{carol}>", headers={
                                       "Cc": f"Alice <{alice}>, Ben Agent <{BEN}>",
                                       "In-Reply-To": f"<{alice_mid}>", "References": f"<{alice_mid}>"})
    assert w.deliver(raw) == (number, "joined")
    got = w.sent()
    notes = notifications(got)
    assert set(notes) == {ANN, BEN} and got == list(notes.values())
    assert "Mine blinks too" in notes[ANN].text and "New reply" in notes[ANN].text
    assert f"From: Carol <{carol}>" in notes[ANN].text
    assert notes[ANN].sender == ("Carol via Example Support", SUPPORT)
    participants = {p["email"] for p in w.show(number)["participants"]}
    assert participants == {alice, carol}  # Ben, in Carol's Cc, is still no participant

    # Ann answers Carol's mail: it goes to the requester, Cc Carol, never to an agent.
    raw, recipient = agent_reply(notes[ANN], f"Ann Agent <{ANN}>", "Both of you: restart it.", "thunderbird")
    assert w.deliver(raw, recipient) == (number, "joined")
    got = w.sent()
    relayed = one(got, alice)
    assert parseaddr(relayed["To"])[1] == alice
    assert [a for _n, a in getaddresses([relayed["Cc"]])] == [carol]
    assert relayed["In-Reply-To"].strip() == f"<{carol_mid}>"  # the customer side's latest message
    assert to(got, ANN) == [] and to(got, BEN) == []
    # A Cc header is a promise: Carol must get the mail too (one delivery to both, or one each).
    assert {r for g in got for r in g.rcpt} == {alice, carol}, [g.rcpt for g in got]


def test_replies_to_solved_and_closed_tickets(world: Callable[..., World]) -> None:
    w = world()
    alice = "alice@customer.example"
    number, _mid, got = open_ticket(w, "Router blinks", f"Alice <{alice}>")
    ack = one(got, alice)

    # Solved, assigned to Ann: the requester's reply reopens it and notifies Ann only.
    w.update(number, status="solved", assignee=ANN, solved_at=w.clock.now())
    w.clock.advance(hours=1)
    raw, _ = customer_mail(f"Re: [#{number}] Router blinks", "It blinks again.\n", sender=f"Alice <{alice}>",
                           headers={"In-Reply-To": f"<{ack.message_id}>"})
    assert w.deliver(raw) == (number, "joined")
    got = w.sent()
    assert list(notifications(got)) == [ANN] and len(got) == 1, [g.rcpt for g in got]
    assert "It blinks again." in got[0].text and "New reply" in got[0].text
    assert w.show(number)["status"] == "open"

    # Closed 5 days ago: reopened.
    w.update(number, status="closed", closed_at=w.clock.now())
    w.clock.advance(days=5)
    raw, _ = customer_mail(f"Re: [#{number}] Router blinks", "Still blinking.\n", sender=f"Alice <{alice}>")
    assert w.deliver(raw) == (number, "joined")
    assert w.show(number)["status"] == "open"
    assert list(notifications(w.sent())) == [ANN]

    # Closed 20 days ago: a new ticket, linked to the old one, which stays closed.
    w.update(number, status="closed", closed_at=w.clock.now())
    w.clock.advance(days=20)
    raw, _ = customer_mail(f"Re: [#{number}] Router blinks", "Blinking once more, weeks later.\n",
                           sender=f"Alice <{alice}>", headers={"In-Reply-To": f"<{ack.message_id}>"})
    new, decision = w.deliver(raw)
    assert decision == "new_ticket" and new is not None and new != number
    assert w.show(new)["linked_to"] == number
    assert w.show(number)["status"] == "closed"
    got = w.sent()
    assert f"[#{new}]" in one(got, alice)["Subject"]  # the new ticket's ack
    notes = notifications(got)
    assert set(notes) == {ANN, BEN}  # the new ticket is unassigned: its queue's agents
    assert f"Linked to #{number}" in notes[ANN].text and "Blinking once more" in notes[ANN].text


def test_cc_does_not_make_participants_when_switched_off(world: Callable[..., World]) -> None:
    w = world(mail_settings="cc_participants = false")
    alice = "alice@customer.example"
    number, _mid, got = open_ticket(w, "Router blinks", f"Alice <{alice}>",
                                    headers={"Cc": "Carol <carol@customer.example>"})
    assert [p["email"] for p in w.show(number)["participants"]] == [alice]
    raw, recipient = agent_reply(notifications(got)[ANN], f"Ann Agent <{ANN}>", "Restart it.", "gmail")
    assert w.deliver(raw, recipient) == (number, "joined")
    relayed = one(w.sent(), alice)
    assert relayed["Cc"] == "" and relayed.rcpt == (alice,)


# -- 7. a customer whose domain says the mail is forged ----------------------------------------

def test_customer_dmarc_fail_makes_a_ticket_without_an_ack(world: Callable[..., World]) -> None:
    w = world(AGENTS + '\n[identity]\ntrusted_authserv_ids = ["mx.example.com"]\n')
    alice = "alice@customer.example"
    number, _mid, got = open_ticket(w, "Pay this invoice", f"Alice <{alice}>", headers={
        "Authentication-Results": "mx.example.com; spf=fail smtp.mailfrom=customer.example; "
                                  "dmarc=fail header.from=customer.example"})
    assert to(got, alice) == []
    notes = notifications(got)
    assert set(notes) == {ANN, BEN} and len(got) == 2
    assert "sender not verified" in notes[ANN].text
    assert w.show(number)["status"] == "new"

    # A passing customer is acknowledged as ever.
    _n, _m, got = open_ticket(w, "Printer", "Bob <bob@customer.example>", headers={
        "Authentication-Results": "mx.example.com; dmarc=pass header.from=customer.example"})
    assert len(to(got, "bob@customer.example")) == 1
    assert "not verified" not in notifications(got)[ANN].text


# -- 8. languages -----------------------------------------------------------------------------

def test_languages_of_the_queue_the_agent_and_the_customer(world: Callable[..., World]) -> None:
    w = world(LANGUAGE_AGENTS)
    # A German queue: the ack and the relayed reply's frame are German; Ann still reads English.
    cleo = "cleo@customer.example"
    number, cleo_mid, got = open_ticket(w, "Drucker", f"Cleo <{cleo}>", to="help@example.com",
                                        body="Drucker: Fehler E42.\n")
    ack = one(got, cleo)
    assert "vielen Dank" in ack.text and "Guten Tag" in ack.text
    note = one(got, ANN)
    assert note.text.splitlines()[0] == MARKER and "Requester:" in note.text
    raw, recipient = agent_reply(note, f"Ann Agent <{ANN}>", "Bitte neu starten.", "thunderbird")
    assert recipient.startswith("help+")
    assert w.deliver(raw, recipient) == (number, "joined")
    relayed = one(w.sent(), cleo)
    assert relayed.sender == ("Ann Agent", "help@example.com")  # the help mailbox keeps the default display
    assert "Bitte neu starten." in relayed.text
    assert "wenn Sie etwas ergänzen möchten" in relayed.text and "reply to this mail" not in relayed.text
    assert relayed["In-Reply-To"].strip() == f"<{cleo_mid}>"

    # An English queue: Dora's notification is German, Ann's English, the ack English.
    alice = "alice@customer.example"
    _n, _m, got = open_ticket(w, "Printer on fire", f"Alice <{alice}>")
    assert "thank you for writing" in one(got, alice).text
    dora, ann = one(got, DORA).text, one(got, ANN).text
    assert dora.splitlines()[0] == MARKER_DE and "Anfrage von:" in dora and "Neues Ticket" in dora
    assert ann.splitlines()[0] == MARKER and "Requester:" in ann and MARKER_DE not in ann

    # A customer who writes Content-Language: de to the English queue is answered in German.
    bob = "bob@customer.example"
    _n, _m, got = open_ticket(w, "Printer smokes", f"Bob <{bob}>", headers={"Content-Language": "de"},
                              body="Hello, my printer is smoking.\n")
    ack = one(got, bob)
    assert "vielen Dank" in ack.text and "thank you" not in ack.text

