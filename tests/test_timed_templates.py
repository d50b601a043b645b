"""The mail kinds sent by the clock: SLA reminders and escalations (internal), and the pending reminder,
the two closing notices and the satisfaction survey (to the customer), in English and German.

The SLA kinds go to agents and start with the reply marker of their language (an agent's reply answers
the customer, and our text below the marker, the customer's quoted one included, is cut off); the
customer kinds carry none, like ack_new. Customer text is data: HTML escapes it.
"""

from __future__ import annotations

from html import escape
from typing import Any

import pytest

from mailticket.domain import Address
from mailticket.marks import REPLY_MARKERS
from mailticket.outbox.render import RatingLink, Renderer, SlaLine, mail_context, sample_contexts

SLA_KINDS = ["sla_reminder", "sla_escalation"]
CUSTOMER_KINDS = ["pending_reminder", "pending_closed", "solved_closed", "csat_survey"]
KINDS = SLA_KINDS + CUSTOMER_KINDS
LANGUAGES = ["en", "de"]
TARGET_WORDS = {
    "en": {"first_response": "first response", "next_response": "next response", "resolution": "resolution"},
    "de": {"first_response": "Erstreaktion", "next_response": "nächste Antwort", "resolution": "Lösung"},
}
# per kind: a word only the English file says, and its German counterpart
WORDS = {
    "sla_reminder": ("due at", "fällig"),
    "sla_escalation": ("overdue", "überfällig"),
    "pending_reminder": ("waiting for your answer", "auf Ihre Antwort"),
    "pending_closed": ("closed", "geschlossen"),
    "solved_closed": ("solved", "gelöst"),
    "csat_survey": ("satisfied", "zufrieden"),
}
SCRIPT = "<script>alert(1)</script>"
LAST_TEXT = "Hello,\n\nthe printer on floor 2 is on fire.\n\nAlice"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def ratings(ticket: int = 1234) -> list[RatingLink]:
    return [RatingLink(n, f"support+csat.9f8e.{n}@example.com",
                       f"mailto:support+csat.9f8e.{n}@example.com?subject=%5B%23{ticket}%5D%20Rating%20{n}")
            for n in range(1, 6)]


def context(language: str = "en", *, name: str = "Alice Customer", subject: str = "Printer on fire",
            text: str = LAST_TEXT, **extra: Any) -> dict[str, Any]:
    """A context as the rules build it for ticket #1234, from mail_context."""
    customer = Address(name, "alice@customer.example")
    values: dict[str, Any] = {
        "priority": "urgent", "queue": "hardware", "agent": Address("Bob Agent", "bob@example.com"),
        "message_from": customer, "message_text": text, "date": "2024-05-01 09:30 +0200",
        "sla": SlaLine("resolution", "gold", "2024-05-02 17:00 UTC", "2024-05-02 19:00 CEST", "", "3h 10m"),
        "ratings": ratings(), "close_at": "2024-05-09", "waited_days": 4,
    }
    values.update(extra)
    return mail_context(ticket_number=1234, ticket_subject=subject, tag="[#1234]", status="open",
                        customer=customer, mailbox=Address("Example Support", "support@example.com"),
                        language=language, **values)


def words(rendered: str) -> str:
    return " ".join(rendered.split())  # line breaks inside a sentence do not matter


# -- every file ---------------------------------------------------------------


def test_the_new_templates_pass_the_start_up_check(renderer: Renderer) -> None:
    renderer.check(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_text_and_html_in_english_and_german(renderer: Renderer, kind: str) -> None:
    assert renderer.files(kind) == [f"{kind}.txt.j2", f"{kind}.html.j2", f"{kind}.de.html.j2", f"{kind}.de.txt.j2"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_both_samples_render_cleanly(renderer: Renderer, kind: str, language: str) -> None:
    for sample in sample_contexts():
        text, html = renderer.render(kind, sample, language)
        tag = sample["ticket"]["tag"]
        assert tag in text and tag in html
        assert html.startswith("<!DOCTYPE html>")
        assert ('<html lang="de">' in html) == (language == "de")
        for rendered in (text, html):  # an empty optional value leaves no trace
            assert "None" not in rendered and "()" not in rendered
            assert " ." not in rendered and " ," not in rendered and " :" not in rendered


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_each_file_is_in_its_own_language(renderer: Renderer, kind: str, language: str) -> None:
    english, german = WORDS[kind]
    text, html = renderer.render(kind, context(language), language)
    for rendered in (words(text), words(html)):
        if language == "de":
            assert german in rendered and english not in rendered
            assert any(c in rendered for c in "äöüß")  # real umlauts, not "ae"
            assert " Sie " in rendered or " Ihr" in rendered  # formal address
        else:
            assert english in rendered and german not in rendered


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_html_escapes_customer_text(renderer: Renderer, kind: str, language: str) -> None:
    hostile = context(language, name=f"Eve {SCRIPT}", subject=f"Subject {SCRIPT}", text=f"line one\n{SCRIPT}\n")
    text, html = renderer.render(kind, hostile, language)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<script>" in text  # plain text is as written


# -- SLA reminder and escalation (internal) ------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_only_the_internal_kinds_carry_the_reply_marker(renderer: Renderer, kind: str, language: str) -> None:
    text, html = renderer.render(kind, sample_contexts()[0], language)  # the sample's marker is English
    if kind in SLA_KINDS:
        assert text.splitlines()[0] == REPLY_MARKERS[language]
        assert REPLY_MARKERS[language] in html
    else:
        assert not any(marker in text or marker in html for marker in REPLY_MARKERS.values())


@pytest.mark.parametrize("kind", SLA_KINDS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("target", ["first_response", "next_response", "resolution"])
def test_the_target_is_written_in_words(renderer: Renderer, kind: str, language: str, target: str) -> None:
    sla = SlaLine(target, "gold", "2024-05-02 17:00 UTC", "", "45m", "", 1)
    text, html = renderer.render(kind, context(language, sla=sla), language)
    assert TARGET_WORDS[language][target] in text and TARGET_WORDS[language][target] in html
    assert not any(key in text or key in html for key in TARGET_WORDS["en"] if "_" in key)  # never the key
    if language == "de":
        assert TARGET_WORDS["en"][target] not in text and TARGET_WORDS["en"][target] not in html


@pytest.mark.parametrize("language", LANGUAGES)
def test_sla_reminder_says_what_is_due_when_and_how_long_is_left(renderer: Renderer, language: str) -> None:
    text, html = renderer.render("sla_reminder", context(language), language)
    for rendered in (words(text), words(html)):
        assert "[#1234]" in rendered and TARGET_WORDS[language]["resolution"] in rendered
        assert "gold" in rendered and "2024-05-02 17:00 UTC" in rendered and "2024-05-02 19:00 CEST" in rendered
        assert "3h 10m" in rendered
        assert "Bob Agent" in rendered and "urgent" in rendered and "hardware" in rendered
    late = "went out late" if language == "en" else "verspätet"
    assert late not in words(text)
    assert "> the printer on floor 2 is on fire." in text.splitlines()
    assert ">" in text.splitlines() and "> Alice" in text.splitlines()  # empty lines quoted without a space
    assert "Alice Customer <alice@customer.example>, 2024-05-01 09:30 +0200:" in text
    assert "the printer on floor 2 is on fire." in html and "&lt;alice@customer.example&gt;" in html


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_late_sla_reminder_says_it_is_already_over(renderer: Renderer, language: str) -> None:
    full = sample_contexts()[0]  # left "", over "2h 15m": the sweep ran late
    text, html = renderer.render("sla_reminder", full, language)
    late = "went out late" if language == "en" else "verspätet"
    for rendered in (words(text), words(html)):
        assert TARGET_WORDS[language]["first_response"] in rendered
        assert "2h 15m" in rendered and late in rendered
        assert "2024-05-01 13:00 UTC" in rendered and "2024-05-01 15:00 CEST" in rendered
    assert "> the printer on floor 2 is on fire." in text


@pytest.mark.parametrize("language", LANGUAGES)
def test_sla_escalation_names_the_level_the_overrun_and_the_ticket(renderer: Renderer, language: str) -> None:
    sla = SlaLine("next_response", "gold", "2024-05-02 17:00 UTC", "2024-05-02 19:00 CEST", "1h 05m", "", 3)
    lead = Address("", "lead@example.com")  # the lead's address, no name
    text, html = renderer.render("sla_escalation", context(language, sla=sla, agent=lead), language)
    level = "level 3" if language == "en" else "Stufe 3"
    for rendered in (words(text), words(html)):
        assert "[#1234]" in rendered and "Printer on fire" in rendered and level in rendered
        assert TARGET_WORDS[language]["next_response"] in rendered
        assert "1h 05m" in rendered and "2024-05-02 17:00 UTC" in rendered and "2024-05-02 19:00 CEST" in rendered
        assert "urgent" in rendered and "hardware" in rendered and "gold" in rendered
        assert "Bob Agent" not in rendered
    assert "> the printer on floor 2 is on fire." in text
    assert ("Hello," if language == "en" else "Guten Tag,") in text.splitlines()


@pytest.mark.parametrize("kind", SLA_KINDS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_sla_mail_without_a_customer_text_has_no_quote(renderer: Renderer, kind: str, language: str) -> None:
    text, html = renderer.render(kind, context(language, text="", message_from=None, date=""), language)
    assert not any(line.startswith(">") for line in text.splitlines())
    assert "<blockquote" not in html
    assert ("Last customer message" if language == "en" else "Letzte Kundennachricht") not in text


# -- to the customer ------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_pending_reminder_says_how_long_we_waited_and_when_it_closes(renderer: Renderer, language: str) -> None:
    text, html = renderer.render("pending_reminder", context(language), language)
    days = "for 4 days" if language == "en" else "seit 4 Tagen"
    for rendered in (words(text), words(html)):
        assert "[#1234]" in rendered and "Printer on fire" in rendered
        assert days in rendered and "2024-05-09" in rendered
        assert ("simply reply" if language == "en" else "antworten Sie einfach") in rendered
    text, _html = renderer.render("pending_reminder", context(language, waited_days=1), language)
    assert ("for 1 day now" if language == "en" else "seit einem Tag") in words(text)


@pytest.mark.parametrize("kind", ["pending_closed", "solved_closed"])
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_closing_notices_say_a_reply_is_still_read(renderer: Renderer, kind: str, language: str) -> None:
    text, html = renderer.render(kind, context(language), language)
    for rendered in (words(text), words(html)):
        assert "[#1234]" in rendered and "Printer on fire" in rendered
        assert ("reply to this email" if language == "en" else "antworten Sie einfach auf diese E-Mail") in rendered
    if kind == "pending_closed":
        assert ("for 4 days" if language == "en" else "seit 4 Tagen") in words(text)


@pytest.mark.parametrize("language", LANGUAGES)
def test_csat_survey_lists_every_rating(renderer: Renderer, language: str) -> None:
    links = ratings()
    text, html = renderer.render("csat_survey", context(language, ratings=links), language)
    labels = {"en": ("very dissatisfied", "very satisfied"), "de": ("sehr unzufrieden", "sehr zufrieden")}[language]
    for link in links:
        [line] = [line for line in text.splitlines() if link.address in line]
        assert line.strip().startswith(f"{link.rating} ")
        assert "mailto:" not in line
        assert html.count(f'href="{escape(link.href)}"') == 1
    assert html.count('href="mailto:') == 5
    [worst] = [line for line in text.splitlines() if links[0].address in line]
    [best] = [line for line in text.splitlines() if links[4].address in line]
    assert labels[0] in worst and labels[1] in best
    comment = "add a comment" if language == "en" else "einen Kommentar"
    assert comment in words(text) and comment in words(html)
    team = "reaches our team" if language == "en" else "erreicht unser Team"
    assert team in words(text) and team in words(html)


@pytest.mark.parametrize("language", LANGUAGES)
def test_csat_survey_without_ratings_renders_without_a_list(renderer: Renderer, language: str) -> None:
    text, html = renderer.render("csat_survey", context(language, ratings=[]), language)
    assert "csat" not in text and "<li>" not in html and "mailto:" not in html
    assert "[#1234]" in text


def test_csat_links_are_escaped_as_attributes(renderer: Renderer) -> None:
    odd = [RatingLink(5, "support+csat.5@example.com", 'mailto:support+csat.5@example.com?subject=a&body="b"')]
    _text, html = renderer.render("csat_survey", context(ratings=odd))
    assert 'href="mailto:support+csat.5@example.com?subject=a&amp;body=&#34;b&#34;"' in html
