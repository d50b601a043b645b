"""The visible text of a reply (issue 13): the reply corpus, and each client shape crafted in English and German."""

from __future__ import annotations

import pytest

from benchmarks.replies import Case, load_cases, ours, score
from mailticket.ingest.replies import Visible, read_reply, visible_text
from mailticket.marks import REPLY_MARKERS
from tests.conftest import CORPUS

# The one list of known failures: fixture id -> why our reading differs from the upstream expectation.
KNOWN_FAILURES = {
    "crisp/emails/email_2.txt#test_reads_bottom_post":
        "policy: text written below a quote is an interleaved answer and kept (upstream drops it)",
    "crisp/emails/email_with_regards.txt#text_email_regards": "policy: a closing and name stay with the text",
    "mail-parser-reply/emails/email_1_3.txt#test_simple_quoted_body": "policy: a closing like '-Abhishek Kona' stays",
    "mail-parser-reply/emails/email_pl_1_1.txt#test_pl_simple_body": "policy: a closing 'Pozdrawiam, Jan' stays",
    "mail-parser-reply/emails/email_pl_1_3.txt#test_pl_simple_signature": "policy: a closing stays",
    "mail-parser-reply/emails/email_danish_1.txt#test_danish_simple_body": "policy: a closing stays",
    "mail-parser-reply/emails/email_danish_5.txt#test_danish_signatures_short": "policy: a closing stays",
    "mail-parser-reply/emails/email_2_1.txt#test_gmail_header":
        "upstream keeps the '-----' line above an Outlook header block; we drop the divider with the block",
    "mail-parser-reply/emails/email_nl_1_2.txt#test_dutch_gmail_header":
        "as email_2_1: the divider goes with the block",
    "talon/html/reply-separated-by-hr.html": "the sender's name 'Bob' above the <hr> divider is kept",
    "talon/standard_replies/iphone.eml": "policy: device lines ('Sent from my iPhone') are dropped",
    "talon/standard_replies/sparrow.eml": "policy: a '-- ' signature block is dropped",
    "trimmer/delimiters.txt": "a lone 'ᐧ' (Gmail's tracking glyph) line is kept",
    "trimmer/embedded_email_11.txt": "a date-and-name line without a colon, address or quote is not a quote header",
    "trimmer/embedded_email_12.txt": "a header wrapped over five lines with blank lines inside is not recognised",
    "trimmer/embedded_email_16.txt": "policy: '>' lines are quotes, also at the start of a mail",
    "trimmer/embedded_email_17.txt": "policy: '>' lines are quotes (upstream keeps the interleaved quote)",
    "trimmer/embedded_email_4.txt": "a '|'-quoted block under a date-address line without a colon",
    "trimmer/quote_and_text.txt": "policy: '>' lines are quotes, also at the start of a mail",
    "trimmer/quote_only.txt": "policy: a quote-only mail has an empty visible text (flagged), not the quote",
}


def _corpus_cases() -> list[Case]:
    if not (CORPUS / "reply").is_dir():
        return []
    return [c for c in load_cases(CORPUS) if not c.skip]


_CASES = _corpus_cases()


@pytest.mark.corpus
@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[c.id])]
                  if c.id in KNOWN_FAILURES else []) for c in _CASES]
    or [pytest.param(None, id="no-corpus")],
)
def test_reply_corpus(case: Case | None) -> None:
    if case is None:
        pytest.skip(f"reply corpus not found at {CORPUS / 'reply'} "
                    "(set MAILTICKET_CORPUS or put shared/ beside the repo)")
    result = score(case, ours)
    assert not result.lost, f"lost text the author wrote: {result.failures}"
    assert result.passed, result.failures


def test_known_failures_name_real_cases() -> None:
    if not _CASES:
        pytest.skip("reply corpus not found")
    assert set(KNOWN_FAILURES) <= {c.id for c in _CASES}


def test_no_known_failure_loses_text() -> None:
    for case in _CASES:
        if case.id in KNOWN_FAILURES:
            assert not score(case, ours).lost, case.id


# --- Crafted: each client shape in English and German -----------------------------------------------------------

ANSWER = "Thanks, the printer works again.\n\nThanks, Alex"
ANTWORT = "Danke, der Drucker geht wieder.\n\nViele Grüße\nAlex"

PLAIN_SHAPES = {
    "gmail-en": "On Tue, Mar 20, 2024 at 8:48 AM Support <support@example.com> wrote:\n\n> Old text\n> more\n",
    "gmail-de": "Am Di., 20. März 2024 um 08:48 Uhr schrieb Support <support@example.com>:\n\n> Alter Text\n",
    "gmail-wrapped-en": "On Tue, Mar 20, 2024 at 8:48 AM The Support Team of Example <\n"
                        "support@example.com> wrote:\n\n> Old\n",
    "gmail-wrapped-3-de": "Am Dienstag, 20. März 2024 um 08:48 Uhr\nschrieb Das Support-Team von Example\n"
                          "<support@example.com>:\n> Alt\n",
    "apple-en": "On 20 Mar 2024, at 08:48, Support <support@example.com> wrote:\n\n> Old text\n",
    "apple-de": "Am 20.03.2024 um 08:48 schrieb Support <support@example.com>:\n\n> Alter Text\n",
    "thunderbird-en": "On 20.03.24 08:48, Support wrote:\n> Old text\n",
    "thunderbird-de": "Am 20.03.24 um 08:48 schrieb Support:\n> Alter Text\n",
    "outlook-en": "________________________________\nFrom: Support <support@example.com>\n"
                  "Sent: Tuesday, March 20, 2024 8:48 AM\nTo: Alex <alex@customer.example>\n"
                  "Subject: Re: printer\n\nOld text\n",
    "outlook-de": "________________________________\nVon: Support <support@example.com>\n"
                  "Gesendet: Dienstag, 20. März 2024 08:48\nAn: Alex <alex@customer.example>\n"
                  "Betreff: AW: Drucker\n\nAlter Text\n",
    "outlook-bold-en": "*From:* Support [mailto:support@example.com]\n*Sent:* Tuesday, March 20, 2024 8:48 AM\n"
                       "*To:* Alex\n*Subject:* Re: printer\n\nOld text\n",
    "outlook-bold-de": "*Von:* Support [mailto:support@example.com]\n*Gesendet:* Dienstag, 20. März 2024 08:48\n"
                       "*An:* Alex\n*Betreff:* AW: Drucker\n\nAlter Text\n",
    "original-message-en": "-----Original Message-----\nFrom: Support\nSent: Tuesday\nSubject: Re: printer\n\n"
                           "Old text\n",
    "original-message-de": "-----Ursprüngliche Nachricht-----\nVon: Support\nGesendet: Dienstag\nBetreff: Drucker\n\n"
                           "Alter Text\n",
    "yahoo-en": "On Tuesday, March 20, 2024, 08:48:12 AM GMT+1, Support <support@example.com> wrote:\n\n\nOld text\n",
    "yahoo-de": "Am Dienstag, 20. März 2024, 08:48:12 MEZ hat Support <support@example.com> Folgendes geschrieben:\n\n"
                "Alter Text\n",
    "yandex-ru": "20.03.2024, 08:48, \"Support\" <support@example.com>:\n> Старый текст\n",
    "date-name-address": "2024-03-20 8:48 GMT+01:00 Support <support@example.com>:\n\n> Old text\n",
    "fr": "Le mar. 20 mars 2024 à 08:48, Support <support@example.com> a écrit :\n\n> Ancien texte\n",
    "pl": "W dniu 20.03.2024 o 08:48, Support pisze:\n> Stary tekst\n",
    "ru": "20 марта 2024 г., в 8:48, Support <support@example.com> пишет:\n> Старый текст\n",
}


@pytest.mark.parametrize("shape", sorted(PLAIN_SHAPES))
def test_plain_quote_headers(shape: str) -> None:
    answer = ANTWORT if shape.endswith("-de") else ANSWER
    visible = read_reply(f"{answer}\n\n{PLAIN_SHAPES[shape]}")
    assert visible == Visible(text=answer, quote_only=False)


HTML_SHAPES = {
    "gmail": '<div dir="ltr">{a}</div><br><div class="gmail_quote"><div class="gmail_attr">On Tue, Mar 20, 2024 '
             'Support &lt;support@example.com&gt; wrote:<br></div>'
             '<blockquote class="gmail_quote">Old</blockquote></div>',
    "thunderbird": '<p>{a}</p><div class="moz-cite-prefix">Am 20.03.24 um 08:48 schrieb Support:<br></div>'
                   '<blockquote type="cite">Alter Text</blockquote>',
    "apple": '<div>{a}</div><div><br><blockquote type="cite"><div>On 20 Mar 2024, Support wrote:</div>'
             'Old</blockquote></div>',
    "yahoo": '<div>{a}</div><div class="yahoo_quoted"><div>On Tuesday, Support wrote:</div><div>Old</div></div>',
    "outlook-web": '<div>{a}</div><hr style="display:inline-block;width:98%"><div id="divRplyFwdMsg"><b>From:</b> '
                   'Support<br><b>Sent:</b> Tuesday</div><div>Old text</div>',
    "outlook-desktop": '<div class="WordSection1"><p>{a}</p><div style="border:none;border-top:solid #E1E1E1 1.0pt;'
                       'padding:3.0pt 0cm 0cm 0cm"><p><b>Von:</b> Support<br><b>Gesendet:</b> Dienstag<br><b>An:</b> '
                       'Alex<br><b>Betreff:</b> Drucker</p></div><p>Alter Text</p></div>',
}


@pytest.mark.parametrize("shape", sorted(HTML_SHAPES))
def test_html_quotes_where_the_client_marked_them(shape: str) -> None:
    html = HTML_SHAPES[shape].format(a="Works again, thanks!")
    assert visible_text("", html, from_html=True) == "Works again, thanks!"


def test_a_customers_own_blockquote_stays() -> None:
    html = "<p>The manual says:</p><blockquote>Press the red button twice.</blockquote><p>It does nothing.</p>"
    text = visible_text("", html, from_html=True)
    assert "Press the red button twice." in text and "It does nothing." in text


def test_interleaved_answers_are_kept() -> None:
    mail = ("On Tue, Mar 20, 2024 at 8:48 AM Support <support@example.com> wrote:\n> Which model?\n\n"
            "The X200.\n\n> Since when?\n\nSince Monday.\n\nThanks, Alex\n")
    assert visible_text(mail) == "The X200.\n\nSince Monday.\n\nThanks, Alex"


@pytest.mark.parametrize("line", [
    "Sent from my iPhone", "Von meinem iPhone gesendet", "Envoyé de mon iPhone", "Enviado desde mi iPhone",
    "Inviato da iPhone", "Verzonden vanaf mijn iPhone", "Wysłano z mojego iPhone'a", "Отправлено с iPhone",
    "Get Outlook for Android", "Skickat från min iPhone", "iPhoneから送信", "发自我的iPhone",
])
def test_device_lines_are_dropped(line: str) -> None:
    assert read_reply(f"Works again.\n\n{line}\n") == Visible(text="Works again.", quote_only=False)


def test_sent_from_in_prose_is_text() -> None:
    text = "Here it is.\n\nSent from my desk, which is much easier than my phone."
    assert visible_text(text) == text


def test_quote_only_mail_is_empty_with_a_flag() -> None:
    mail = "On Tue, Mar 20, 2024 at 8:48 AM Support <support@example.com> wrote:\n> Old text\n> more\n"
    assert read_reply(mail) == Visible(text="", quote_only=True)
    assert visible_text(mail) == ""


def test_never_empty_for_text_of_its_own() -> None:
    assert visible_text("-- \nAlex Example\nACME Ltd") == "--\nAlex Example\nACME Ltd"
    assert visible_text("Sent from my iPhone") == "Sent from my iPhone"


@pytest.mark.parametrize("language", sorted(REPLY_MARKERS))
@pytest.mark.parametrize("quoted", [False, True])
def test_our_marker_and_the_header_above_it(language: str, quoted: bool) -> None:
    prefix = "> " if quoted else ""
    header = ("Am 20.03.2024 um 08:48 schrieb Support <support@example.com>:" if language == "de"
              else "On Tue, Mar 20, 2024 at 8:48 AM Support <support@example.com> wrote:")
    mail = f"Done, thanks.\n\n{header}\n\n{prefix}{REPLY_MARKERS[language]}\n{prefix}Ticket #12 was updated\n"
    assert read_reply(mail) == Visible(text="Done, thanks.", quote_only=False)
    only_marker = f"{header}\n{prefix}{REPLY_MARKERS[language]}\n{prefix}Ticket #12\n"
    assert read_reply(only_marker) == Visible(text="", quote_only=True)


def test_signature_block_dropped_closing_kept() -> None:
    mail = "The invoice is wrong.\n\nThanks, Alex\n\n-- \nAlex Example\nACME Ltd | +49 30 1234567\n"
    assert visible_text(mail) == "The invoice is wrong.\n\nThanks, Alex"
    assert visible_text("Fixed it myself.\n\n/John\n") == "Fixed it myself.\n\n/John"


def test_a_forward_without_comment_shows_the_forwarded_text() -> None:
    mail = ("---------- Forwarded message ---------\nFrom: Bob <bob@example.com>\nDate: Tue, Mar 20, 2024\n"
            "Subject: printer\nTo: support@example.com\n\nThe printer is on fire.\n")
    assert visible_text(mail) == "The printer is on fire."


def test_prose_that_looks_like_a_header_is_text() -> None:
    for text in ("On Monday we talked about it:\n- more paper\n- less toner",
                 "I wrote 3 items below:\n1. a\n2. b",
                 "From: Berlin\nTo: Munich\nPlease book the train."):
        assert visible_text(text) == text
