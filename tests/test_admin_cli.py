"""`tickets reply --as AGENT` and `tickets set`: the same effects as by mail, each an event naming who."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from mailticket.app import App
from mailticket.settings import load
from mailticket.store.models import Event, OutboxRow, Ticket
from tests.conftest import as_json, ingest, mail, run_cli

ALEX = "alex@example.com"
AGENTS = (ALEX, "bo@example.com")


def setup(write_config: Callable[..., Path], make_app: Callable[..., App]) -> tuple[Path, App, int]:
    config = write_config(agents=AGENTS)
    app = make_app(settings_override=load(config))
    number, _ = ingest(app, mail(subject="Printer on fire", headers={"Cc": "Bob <bob@customer.example>"}))
    assert number is not None
    return config, app, number


def test_reply_as_an_agent_goes_to_the_customer_like_a_reply_by_mail(
    write_config: Callable[..., Path], make_app: Callable[..., App]
) -> None:
    config, app, number = setup(write_config, make_app)
    result = run_cli(config, "tickets", "reply", str(number), "--as", ALEX, stdin=b"Hello Alice,\n\nfixed.\n\nAlex\n")
    assert result.returncode == 0, result.stderr.decode()
    with app.db.transaction() as s:
        [row] = s.execute(select(OutboxRow).where(OutboxRow.kind == "agent_reply")).scalars().all()
        sent = email.message_from_bytes(row.content, policy=email.policy.default)
        ticket = s.get_one(Ticket, number)
        assert ticket.status == "open" and ticket.first_response_at is not None
        who = s.execute(select(Event.data).where(Event.ticket_number == number, Event.kind == "reply")).scalar_one()
    assert sent["To"].addresses[0].addr_spec == "alice@customer.example"
    assert [a.addr_spec for a in sent["Cc"].addresses] == ["bob@customer.example"]
    assert sent["From"].addresses[0].addr_spec == "support@example.com" and "An Agent" in str(sent["From"])
    assert sent["Auto-Submitted"] is None  # a person wrote it
    assert "fixed." in sent.get_body(("plain",)).get_content()
    assert who is not None and who["agent"] == ALEX and "(CLI)" in who["by"]
    shown = as_json(run_cli(config, "tickets", "show", str(number), "--json"))
    assert isinstance(shown, dict)
    assert shown["first_response_at"] is not None
    assert [m["author_role"] for m in shown["messages"] if m["direction"] == "in"] == ["customer", "agent"]


def test_an_internal_note_sends_nothing(write_config: Callable[..., Path], make_app: Callable[..., App]) -> None:
    config, app, number = setup(write_config, make_app)
    result = run_cli(config, "tickets", "reply", str(number), "--as", ALEX, "--internal", stdin=b"Customer is VIP\n")
    assert result.returncode == 0, result.stderr.decode()
    shown = as_json(run_cli(config, "tickets", "show", str(number), "--json"))
    assert isinstance(shown, dict)
    note = shown["messages"][-1]
    assert note["internal"] is True and note["author_role"] == "agent" and note["visible_text"] == "Customer is VIP"
    assert shown["status"] == "new" and shown["first_response_at"] is None
    with app.db.transaction() as s:
        assert s.execute(select(OutboxRow).where(OutboxRow.kind == "agent_reply")).first() is None


def test_reply_refuses_a_stranger_an_unknown_ticket_and_an_empty_text(
    write_config: Callable[..., Path], make_app: Callable[..., App]
) -> None:
    config, _app, number = setup(write_config, make_app)
    stranger = run_cli(config, "tickets", "reply", str(number), "--as", "mallory@evil.example", stdin=b"hi\n")
    assert stranger.returncode == 64 and b"not an agent" in stranger.stderr
    unknown = run_cli(config, "tickets", "reply", "999", "--as", ALEX, stdin=b"hi\n")
    assert unknown.returncode == 64 and b"no ticket #999" in unknown.stderr
    empty = run_cli(config, "tickets", "reply", str(number), "--as", ALEX, stdin=b"  \n")
    assert empty.returncode == 64 and b"empty" in empty.stderr


def test_set_changes_fields_all_or_nothing_and_names_who(
    write_config: Callable[..., Path], make_app: Callable[..., App]
) -> None:
    config, app, number = setup(write_config, make_app)
    ok = run_cli(config, "tickets", "set", str(number), "--status", "pending", "--priority", "high",
                 "--assignee", ALEX, "--queue", "help")
    assert ok.returncode == 0, ok.stderr.decode()
    shown = as_json(run_cli(config, "tickets", "show", str(number), "--json"))
    assert isinstance(shown, dict)
    assert (shown["status"], shown["priority"], shown["assignee"], shown["queue"]) == ("pending", "high", ALEX, "help")
    bad = run_cli(config, "tickets", "set", str(number), "--status", "solved", "--assignee", "nobody@x.example")
    assert bad.returncode == 64 and b"not an agent" in bad.stderr
    again = as_json(run_cli(config, "tickets", "show", str(number), "--json"))
    assert isinstance(again, dict) and again["status"] == "pending"  # the good half of a bad command is not applied
    solved = run_cli(config, "tickets", "set", str(number), "--status", "solved", "--assignee", "none")
    assert solved.returncode == 0
    with app.db.transaction() as s:
        ticket = s.get_one(Ticket, number)
        assert ticket.status == "solved" and ticket.solved_at is not None and ticket.assignee is None
        events = s.execute(select(Event.kind, Event.data).where(Event.ticket_number == number)
                           .order_by(Event.id)).all()
    changes = [(kind, data["by"]) for kind, data in events if data and "by" in data]
    assert [k for k, _ in changes] == ["status", "priority", "assigned", "routed", "status", "unassigned"]
    assert all(by.endswith("(CLI)") for _, by in changes)
    nothing = run_cli(config, "tickets", "set", str(number))
    assert nothing.returncode == 64
    assert json.loads(run_cli(config, "tickets", "list", "--json").stdout)[0]["status"] == "solved"
