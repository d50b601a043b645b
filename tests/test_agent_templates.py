"""The agent-facing mail kinds: every kind, language and suffix renders from the one context shape.

agent_notify and collision start with the reply marker of their language; agent_reply (to the
customer) has none; HTML escapes customer and agent text; German files are German.
"""

from __future__ import annotations

from typing import Any

import pytest

from mailticket.domain import Address
from mailticket.ingest.language import guess_language
from mailticket.outbox.render import (
    REPLY_MARKERS,
    AttachmentLine,
    RatingLink,
    Renderer,
    file_language,
    mail_context,
    reply_marker,
    sample_contexts,
)

KINDS = ["ack_new", "agent_notify", "agent_reply", "identity_refused", "collision"]
AGENT_KINDS = KINDS[1:]
LANGUAGES = ["en", "de"]
GERMAN_WORDS = ("Sie", "Ihre", "Ihr")  # every German file addresses its reader politely


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def shape(value: Any) -> Any:
    """The keys of a context, nested; a list's shape is the shape of its items."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return None


def hostile_context(**extra: Any) -> dict[str, Any]:
    script = "<script>alert(1)</script>"
    return mail_context(
        ticket_number=7, ticket_subject=f"Subject {script}", tag="[#7]", status="open",
        customer=Address(f"Eve {script}", "eve@customer.example"), mailbox=Address("Support", "support@example.com"),
        message_from=Address(f"Eve {script}", "eve@customer.example"), message_text=f"line one\n{script}\nline three",
        note=f"sender not verified {script}", attachments=[AttachmentLine(f"{script}.txt", 10, False)],
        reason=f"because {script}", sent_from_name=f"Mallory {script}", sent_text=f"sent {script}",
        held_text=f"held {script}", **extra,
    )


def test_the_shipped_templates_pass_the_start_up_check(renderer: Renderer) -> None:
    renderer.check(KINDS)


@pytest.mark.parametrize("kind", AGENT_KINDS)
@pytest.mark.parametrize("suffix", ["txt", "html"])
def test_every_kind_has_both_languages(renderer: Renderer, kind: str, suffix: str) -> None:
    files = renderer.files(kind)
    assert f"{kind}.{suffix}.j2" in files and f"{kind}.de.{suffix}.j2" in files


@pytest.mark.parametrize("kind", AGENT_KINDS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_kind_renders_with_both_samples(renderer: Renderer, kind: str, language: str) -> None:
    full, bare = sample_contexts()
    for sample in (full, bare):
        text, html = renderer.render(kind, sample, language)
        assert sample["ticket"]["tag"] in text and sample["ticket"]["tag"] in html
        assert html.lstrip().startswith("<!DOCTYPE html>")
        if language == "de":
            words = set(text.replace(",", " ").replace(".", " ").split())
            assert words & set(GERMAN_WORDS), f"{kind}.de.txt.j2 does not read as German"
            assert set(html.replace(",", " ").replace(".", " ").split()) & set(GERMAN_WORDS)
            assert 'lang="de"' in html


def test_the_samples_fill_everything_and_then_nothing() -> None:
    full, bare = sample_contexts()
    assert shape(full)["attachments"] == [{"filename": None, "size": None, "attached": None}]
    assert bare["attachments"] == [] and bare["ticket"]["linked_to"] is None and bare["message"]["verified"] is None
    assert all(v not in ("", None) for section in ("ticket", "message", "sent", "agent")
               for v in full[section].values())
    assert full["reason"] and full["held_text"] and full["marker"]
    assert bare["reason"] == bare["held_text"] == bare["message"]["text"] == bare["agent"]["email"] == ""


def test_the_rules_context_has_the_sample_shape() -> None:
    """mail_context is the one definition: a context built with only the required arguments has the
    shape of both samples (nested keys, and the keys of an attachment)."""
    context = mail_context(ticket_number=5, ticket_subject="s", tag="[#5]", status="new",
                           customer=Address("A", "a@customer.example"), mailbox=Address("S", "s@example.com"),
                           attachments=[AttachmentLine("a.pdf", 3)],
                           ratings=[RatingLink(1, "s+csat.x.1@example.com", "mailto:s+csat.x.1@example.com")])
    full, bare = sample_contexts()
    assert shape(context) == shape(full)
    lists = ("attachments", "ratings")
    assert {k: shape(v) for k, v in bare.items() if k not in lists} == {
        k: shape(v) for k, v in context.items() if k not in lists}
    assert context["ticket"]["requester"] == "a@customer.example" and context["ticket"]["requester_name"] == "A"


def test_reply_markers() -> None:
    assert REPLY_MARKERS == {"en": "-- Reply above this line --", "de": "-- Bitte oberhalb dieser Zeile antworten --"}
    assert reply_marker("de") == REPLY_MARKERS["de"] and reply_marker("fr") == REPLY_MARKERS["en"]
    assert mail_context(ticket_number=1, ticket_subject="", tag="[#1]", status="new", customer=Address("", "a@b.c"),
                        mailbox=Address("", "s@b.c"), language="de")["marker"] == REPLY_MARKERS["de"]
    assert (file_language("agent_notify.de.txt.j2"), file_language("agent_notify.html.j2")) == ("de", "en")


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", ["agent_notify", "collision"])
def test_mail_to_an_agent_starts_with_the_marker_of_its_language(renderer: Renderer, kind: str,
                                                                 language: str) -> None:
    english_context = sample_contexts()[0]  # marker "en": the file's language wins
    text, html = renderer.render(kind, english_context, language)
    assert text.splitlines()[0] == REPLY_MARKERS[language]
    assert REPLY_MARKERS[language] in html
    other = REPLY_MARKERS["de" if language == "en" else "en"]
    assert other not in text and other not in html


def test_a_language_without_files_falls_back_to_english_with_the_english_marker(renderer: Renderer) -> None:
    text, _html = renderer.render("agent_notify", mail_context(
        ticket_number=1, ticket_subject="", tag="[#1]", status="new", customer=Address("", "a@b.c"),
        mailbox=Address("", "s@b.c"), language="fr"), "fr")
    assert text.splitlines()[0] == REPLY_MARKERS["en"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_agent_reply_is_the_agents_text_and_a_footer_without_a_marker(renderer: Renderer, language: str) -> None:
    context = mail_context(ticket_number=42, ticket_subject="Printer", tag="[#42]", status="open",
                           customer=Address("Alice", "alice@customer.example"),
                           mailbox=Address("Support", "support@example.com"),
                           message_text="Hi Alice,\n\nit is fixed.\n\nBob", language=language)
    text, html = renderer.render("agent_reply", context, language)
    assert text.startswith("Hi Alice,\n\nit is fixed.\n\nBob\n")
    assert "[#42]" in text.splitlines()[-1]
    for marker in REPLY_MARKERS.values():
        assert marker not in text and marker not in html
    assert "Hi Alice,\n\nit is fixed.\n\nBob" in html and "pre-wrap" in html
    if language == "en":
        assert text.splitlines()[-1] == "Ticket [#42] — reply to this mail to add to it."


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", AGENT_KINDS)
def test_html_escapes_customer_and_agent_text(renderer: Renderer, kind: str, language: str) -> None:
    text, html = renderer.render(kind, hostile_context(language=language), language)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<script>" in text  # plain text is as written


@pytest.mark.parametrize("language", LANGUAGES)
def test_agent_notify_shows_the_header_block(renderer: Renderer, language: str) -> None:
    full, bare = sample_contexts()
    text, html = renderer.render("agent_notify", full, language)
    assert "!! sender not verified: dmarc=fail" in text
    assert "Alice Customer <alice@customer.example>" in text and "&lt;alice@customer.example&gt;" in html
    assert "#1200" in text and "#1200" in html
    assert full["message"]["text"] in text
    assert "photo.jpg" in text and "video.mp4" in text
    over = "not attached: over the size limit" if language == "en" else "nicht angehängt"
    [line] = [line for line in text.splitlines() if "video.mp4" in line]
    assert over in line
    [line] = [line for line in text.splitlines() if "photo.jpg" in line]
    assert over not in line
    assert text.rstrip().splitlines()[-1].endswith(("support@example.com.", "support@example.com aus versendet."))
    assert ("New ticket" if language == "en" else "Neues Ticket") in text

    text, _html = renderer.render("agent_notify", bare, language)
    assert "!!" not in text and "#1200" not in text and "Linked" not in text and "Verknüpft" not in text
    assert ("New reply" if language == "en" else "Neue Antwort") in text


@pytest.mark.parametrize("language", LANGUAGES)
def test_identity_refused_and_collision_carry_their_texts(renderer: Renderer, language: str) -> None:
    full = sample_contexts()[0]
    text, _html = renderer.render("identity_refused", full, language)
    assert full["reason"] in text and "Printer on fire" in text
    assert "> the printer on floor 2 is on fire." in text
    text, _html = renderer.render("collision", full, language)
    assert "Carol Agent" in text and full["sent"]["date"] in text
    assert "> the fire brigade is on its way." in text and "> please unplug the printer." in text
    assert "#discard" in text


# -- language guess -----------------------------------------------------------

GERMAN = ("Guten Tag,\n\nich habe leider ein Problem mit meinem Drucker. Er druckt nicht mehr, "
          "und die Anzeige ist dunkel. Können Sie mir bitte helfen? Vielen Dank und viele Grüße")
ENGLISH = ("Hello,\n\nI have a problem with my printer. It does not print any more and the display "
           "is dark. Could you please help me? Thank you and best regards")


@pytest.mark.parametrize(("header", "text", "expected"), [
    ("de-DE", ENGLISH, "de"),  # the header wins
    ("en", GERMAN, "en"),
    ("DE", "", "de"),
    ("de-AT, en;q=0.5", "", "de"),
    ("fr", GERMAN, "de"),  # a language without templates: the text decides
    (None, GERMAN, "de"),
    ("", ENGLISH, "en"),
    (None, "Danke!", None),  # too short
    (None, "Thanks, ok.", None),
    (None, "Hallo, the printer ist kaputt und is broken, bitte help", None),  # mixed: no clear margin
    (None, "", None),
])
def test_guess_language(header: str | None, text: str, expected: str | None) -> None:
    assert guess_language(header, text) == expected


def test_guess_language_reads_only_the_start() -> None:
    assert guess_language(None, "x " * 1000 + GERMAN) is None
    assert guess_language(None, ENGLISH + " " + GERMAN * 20) == "de"
    assert guess_language(None, ENGLISH * 20 + " " + GERMAN * 20) == "en"
