"""Satisfaction survey replies: a signed ``support+csat.<token>.<rating>@`` address records a rating on a
solved ticket (threaded or as a fresh mailto mail) without reopening it, acknowledging it or notifying
anyone; a forged token, another ticket's token, a stranger, a rating out of 1..5 or a machine's mail is
an ordinary mail, and the ticket's history says why the address was ignored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailticket.app import App
from mailticket.clock import FrozenClock
from mailticket.marks import CsatTokenSigner, CsatVote, ReplyTokenSigner
from mailticket.rules.admin import Changes
from mailticket.settings import load
from mailticket.store import readmodel
from mailticket.store.models import Event, OutboxRow, Ticket
from tests.conftest import ingest, mail

SUPPORT = "support@example.com"
ALICE = "alice@customer.example"
MALLORY = "mallory@elsewhere.example"
ANN = "ann@example.com"
KEY = b"k" * 32

# -- the signer ------------------------------------------------------------------------------------------


def test_token_round_trip_and_shape() -> None:
    signer = CsatTokenSigner(lambda: KEY)
    for number in (1, 35, 36, 1234, 36**6 - 1):
        token = signer.make(number)
        assert token.isalnum() and token == token.lower()
        for rating in range(1, 6):
            address = signer.address(SUPPORT, number, rating)
            assert address == f"support+csat.{token}.{rating}@example.com"
            assert signer.find([SUPPORT], ["other@example.org", address]) == CsatVote(number, rating, True)
    with pytest.raises(ValueError):
        signer.make(36**6)
    with pytest.raises(ValueError):
        signer.address(SUPPORT, 12, 0)
    with pytest.raises(ValueError):
        signer.address(SUPPORT, 12, 6)
    for bad in ("support", "@example.com", "support@", "support+x@example.com"):
        with pytest.raises(ValueError):
            signer.address(bad, 12, 3)


def test_key_is_read_once_and_lazily() -> None:
    calls: list[int] = []

    def key() -> bytes:
        calls.append(1)
        return KEY

    signer = CsatTokenSigner(key)
    assert calls == []
    signer.make(1)
    signer.find([SUPPORT], [signer.address(SUPPORT, 2, 3)])
    assert calls == [1]


def test_find_is_case_insensitive() -> None:
    signer = CsatTokenSigner(lambda: KEY)
    address = signer.address(SUPPORT, 1234, 5)
    assert signer.find(["Support@Example.COM"], [f"<{address.upper()}>"]) == CsatVote(1234, 5, True)


def test_find_only_csat_extensions_of_our_mailboxes() -> None:
    signer = CsatTokenSigner(lambda: KEY)
    token = signer.make(7)
    assert signer.find([SUPPORT], [SUPPORT, "support+billing@example.com"]) is None
    assert signer.find([SUPPORT], [f"support+csat.{token}.5@elsewhere.example"]) is None
    assert signer.find([SUPPORT], []) is None


@pytest.mark.parametrize("extension", ["csat.zz.3", "csat.", "csat.7.3", "csat.{token}", "csat.{token}.",
                                       "csat.{token}.x", "csat.0{token}.3", "csat.{bad}.3"])
def test_garbled_or_forged_is_not_genuine(extension: str) -> None:
    signer = CsatTokenSigner(lambda: KEY)
    token = signer.make(7)
    bad = token[:-1] + ("1" if token[-1] != "1" else "2")
    vote = signer.find([SUPPORT], [f"support+{extension.format(token=token, bad=bad)}@example.com"])
    assert vote is not None and vote.genuine is False


@pytest.mark.parametrize("rating", ["0", "6", "9", "05", "10"])
def test_rating_out_of_range_is_not_genuine(rating: str) -> None:
    signer = CsatTokenSigner(lambda: KEY)
    vote = signer.find([SUPPORT], [f"support+csat.{signer.make(7)}.{rating}@example.com"])
    assert vote is not None and vote.genuine is False and vote.ticket == 7


def test_another_key_does_not_verify() -> None:
    address = CsatTokenSigner(lambda: b"other" * 8).address(SUPPORT, 7, 4)
    assert CsatTokenSigner(lambda: KEY).find([SUPPORT], [address]) == CsatVote(7, 4, False)


def test_reply_tokens_and_csat_tokens_never_pass_for_each_other() -> None:
    import datetime as dt

    csat, replies = CsatTokenSigner(lambda: KEY), ReplyTokenSigner(lambda: KEY)
    rating = csat.address(SUPPORT, 7, 4)
    assert replies.find([SUPPORT], [rating]) is None  # "csat." is not a reply-token extension
    token = replies.make(7, ANN, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    reply = ReplyTokenSigner.address(SUPPORT, token)
    assert csat.find([SUPPORT], [reply]) is None
    # The same MAC over the ticket number under the other prefix does not verify either.
    forged = f"support+csat.{token.split('.')[1]}{token.rsplit('.', 1)[1]}.4@example.com"
    assert csat.find([SUPPORT], [forged]) == CsatVote(7, 4, False)
    assert replies.read(f"r.{csat.make(7)}") is None


# -- the intake, end to end ------------------------------------------------------------------------------


@pytest.fixture
def agents_app(write_config: Callable[..., Path], make_app: Callable[..., App]) -> App:
    """An install with an agent: customer replies notify, so a test sees when a rating does not."""
    return make_app(load(write_config(agents=(ANN,))))


def solved_ticket(app: App, sender: str = f"Alice <{ALICE}>", subject: str = "Printer on fire") -> tuple[int, str]:
    """A customer's ticket, solved: (number, the Message-ID of its acknowledgement)."""
    number, decision = ingest(app, mail(subject=subject, sender=sender))
    assert number is not None and decision == "new_ticket"
    app.set_fields(number, Changes(status="solved"), by="test")
    with app.db.transaction() as s:
        ack = s.execute(select(OutboxRow.message_id).where(OutboxRow.ticket_number == number,
                                                           OutboxRow.kind == "ack_new")).scalar_one()
    return number, ack


def rating_mail(to: str, sender: str = f"Alice <{ALICE}>", body: str = "", subject: str = "Rating",
                in_reply_to: str | None = None, headers: dict[str, str] | None = None) -> bytes:
    more = dict(headers or {})
    if in_reply_to:
        more |= {"In-Reply-To": f"<{in_reply_to}>", "References": f"<{in_reply_to}>"}
    return mail(subject=subject, body=body, sender=sender, to=to, headers=more)


def ticket(app: App, number: int) -> Ticket:
    with app.db.transaction() as s:
        row = s.get_one(Ticket, number)
        s.expunge(row)
        return row


def show(app: App, number: int) -> dict[str, Any]:
    with app.db.transaction() as s:
        data = readmodel.ticket(s, number)
    assert data is not None
    return data


def events(app: App, number: int, kind: str) -> list[Event]:
    with app.db.transaction() as s:
        rows = list(s.execute(select(Event).where(Event.ticket_number == number, Event.kind == kind)
                              .order_by(Event.id)).scalars())
        s.expunge_all()
        return rows


def outbox_kinds(app: App) -> list[str]:
    with app.db.transaction() as s:
        return list(s.execute(select(OutboxRow.kind).order_by(OutboxRow.id)).scalars())


@pytest.mark.parametrize("threaded", [True, False], ids=["in-reply-to", "fresh mailto mail"])
def test_a_genuine_rating_is_recorded_and_changes_nothing_else(agents_app: App, clock: FrozenClock,
                                                               threaded: bool) -> None:
    app = agents_app
    number, ack = solved_ticket(app)
    before = outbox_kinds(app)
    assert "agent_notify" in before
    with app.db.transaction() as s:
        s.get_one(Ticket, number).first_response_at = clock.now()  # answered: a customer's mail would start
    clock.advance(hours=2)  # the next_response clock
    address = app.csat_tokens.address(SUPPORT, number, 4)
    raw = rating_mail(address, body="Quick and friendly, thanks!\n", in_reply_to=ack if threaded else None,
                      subject=f"Re: [#{number}] solved" if threaded else "anything at all")
    assert ingest(app, raw) == (number, "joined")
    row = ticket(app, number)
    assert (row.status, row.csat_rating, row.csat_comment) == ("solved", 4, "Quick and friendly, thanks!")
    assert row.csat_at == clock.now()
    assert row.next_response_since is None and row.next_response_due is None  # no clock started
    assert outbox_kinds(app) == before  # no acknowledgement, no notification
    [event] = events(app, number, "csat")
    assert event.rule == "csat_rating"
    assert event.data == {"rating": 4, "comment": "Quick and friendly, thanks!", "previous": None}
    assert events(app, number, "csat_ignored") == []
    data = show(app, number)
    assert data["csat"] == {"rating": 4, "comment": "Quick and friendly, thanks!", "at": clock.now().isoformat()}
    last = data["messages"][-1]
    assert last["author_role"] == "customer" and last["internal"] is False  # kept as the customer's message


def test_a_second_rating_replaces_the_first(agents_app: App, clock: FrozenClock) -> None:
    app = agents_app
    number, _ack = solved_ticket(app)
    assert ingest(app, rating_mail(app.csat_tokens.address(SUPPORT, number, 2), body="Meh.")) == (number, "joined")
    clock.advance(minutes=5)
    address = app.csat_tokens.address(SUPPORT, number, 5).upper()  # an MTA may change the letter case
    assert ingest(app, rating_mail(address)) == (number, "joined")
    row = ticket(app, number)
    assert (row.status, row.csat_rating, row.csat_comment, row.csat_at) == ("solved", 5, None, clock.now())
    assert [e.data["previous"] for e in events(app, number, "csat") if e.data] == [None, 2]
    assert show(app, number)["csat"]["comment"] is None


def test_no_rating_shows_nulls(app: App) -> None:
    number, _decision = ingest(app, mail())
    assert number is not None
    assert show(app, number)["csat"] == {"rating": None, "comment": None, "at": None}


def test_a_forged_token_is_an_ordinary_follow_up(agents_app: App) -> None:
    app = agents_app
    number, ack = solved_ticket(app)
    with app.db.transaction() as s:
        s.get_one(Ticket, number).first_response_at = s.get_one(Ticket, number).created_at
    before = outbox_kinds(app)
    forged = CsatTokenSigner(lambda: b"not our secret" * 3).address(SUPPORT, number, 5)
    assert ingest(app, rating_mail(forged, body="Still on fire!", in_reply_to=ack)) == (number, "joined")
    row = ticket(app, number)
    assert (row.status, row.csat_rating) == ("open", None)  # a customer's reply reopens a solved ticket
    assert row.next_response_since is not None  # and waits for an answer
    assert outbox_kinds(app) == [*before, "agent_notify"]
    [ignored] = events(app, number, "csat_ignored")
    assert "forged" in ignored.detail
    assert events(app, number, "csat") == []


def test_a_forged_token_on_a_fresh_mail_opens_a_new_ticket(app: App) -> None:
    number, _ack = solved_ticket(app)
    forged = CsatTokenSigner(lambda: b"not our secret" * 3).address(SUPPORT, number, 5)
    other, decision = ingest(app, rating_mail(forged))
    assert decision == "new_ticket" and other != number and other is not None
    assert ticket(app, number).csat_rating is None
    assert ticket(app, other).csat_rating is None
    assert len(events(app, other, "csat_ignored")) == 1


def test_a_strangers_genuine_token_is_ignored(app: App) -> None:
    number, _ack = solved_ticket(app)
    address = app.csat_tokens.address(SUPPORT, number, 1)
    other, decision = ingest(app, rating_mail(address, sender=f"Mallory <{MALLORY}>"))
    assert decision == "new_ticket" and other is not None and other != number
    assert ticket(app, number).csat_rating is None and ticket(app, number).status == "solved"
    [ignored] = events(app, other, "csat_ignored")
    assert MALLORY in ignored.detail and "participant" in ignored.detail


def test_a_cc_participant_may_rate(app: App) -> None:
    number, decision = ingest(app, mail(sender=f"Alice <{ALICE}>", headers={"Cc": "Carol <carol@customer.example>"}))
    assert number is not None and decision == "new_ticket"
    app.set_fields(number, Changes(status="solved"), by="test")
    address = app.csat_tokens.address(SUPPORT, number, 3)
    assert ingest(app, rating_mail(address, sender="Carol <carol@customer.example>")) == (number, "joined")
    assert ticket(app, number).csat_rating == 3


def test_another_tickets_token_on_this_thread_is_ignored(app: App) -> None:
    first, _ack1 = solved_ticket(app, subject="Printer on fire")
    second, ack2 = solved_ticket(app, subject="Scanner on fire")
    address = app.csat_tokens.address(SUPPORT, first, 5)  # Alice's own, genuine, but for the other ticket
    assert ingest(app, rating_mail(address, body="The scanner still smokes.", in_reply_to=ack2)) == (second,
                                                                                                      "joined")
    assert ticket(app, first).csat_rating is None and ticket(app, first).status == "solved"
    row = ticket(app, second)
    assert (row.csat_rating, row.status) == (None, "open")
    [ignored] = events(app, second, "csat_ignored")
    assert f"#{second}" in ignored.detail and f"#{first}" in ignored.detail


def test_a_rating_of_nine_is_ignored(app: App) -> None:
    number, ack = solved_ticket(app)
    token = app.csat_tokens.make(number)
    raw = rating_mail(f"support+csat.{token}.9@example.com", body="9/10", in_reply_to=ack)
    assert ingest(app, raw) == (number, "joined")
    row = ticket(app, number)
    assert (row.csat_rating, row.status) == (None, "open")
    [ignored] = events(app, number, "csat_ignored")
    assert "not 1 to 5" in ignored.detail


def test_an_auto_reply_to_the_survey_is_not_a_rating(agents_app: App) -> None:
    app = agents_app
    number, ack = solved_ticket(app)
    before = outbox_kinds(app)
    raw = rating_mail(app.csat_tokens.address(SUPPORT, number, 5), body="I am out of the office.",
                      subject="Automatic reply: Rating", in_reply_to=ack,
                      headers={"Auto-Submitted": "auto-replied"})
    assert ingest(app, raw) == (number, "joined")
    row = ticket(app, number)
    assert (row.csat_rating, row.status) == (None, "solved")  # machine mail changes nothing
    assert outbox_kinds(app) == before
    [ignored] = events(app, number, "csat_ignored")
    assert "never a rating" in ignored.detail


def test_a_merged_tickets_token_is_ignored(app: App) -> None:
    number, _ack = solved_ticket(app)
    target, _ack2 = solved_ticket(app, subject="Printer on fire, again")
    with app.db.transaction() as s:
        s.get_one(Ticket, number).merged_into = target
    other, decision = ingest(app, rating_mail(app.csat_tokens.address(SUPPORT, number, 5)))
    assert decision == "new_ticket" and other not in (number, target)
    assert ticket(app, number).csat_rating is None and ticket(app, target).csat_rating is None
    [ignored] = events(app, other or 0, "csat_ignored")
    assert "merged" in ignored.detail
