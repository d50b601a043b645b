"""The strict address parser (mailticket.ingest.addresses): a table of forms, then the real-mail corpus."""

from __future__ import annotations

import email
import email.utils
import re
from email import policy
from pathlib import Path

import pytest

from mailticket.domain import Address
from mailticket.ingest.addresses import MAX_HEADER_CHARS, AddressField, parse_addresses, parse_mailbox
from mailticket.text import unsurrogate

# -- From / Sender: exactly one mailbox -----------------------------------------------------

ATTACKS = [
    # (header value, a word the problem must contain)
    ("alice@example.org)<bob@example.com>", "stray ')'"),
    ("alice@example.org<bob@example.com>", "without a separator"),
    ("<alice@example.org <mallory@evil.example>>", "'<' inside an angle address"),
    ("=?utf-8?q?alice@example.org?= <mallory@evil.example>", "encoded word"),
]


@pytest.mark.parametrize(("value", "why"), ATTACKS)
def test_cve_2023_27043_forms_give_no_address_and_say_why(value: str, why: str) -> None:
    field = parse_mailbox(value)
    assert field.addresses == ()
    assert field.mailbox is None
    assert why in field.problem
    assert "\n" not in field.problem
    assert field.raw  # the agent still sees what was written
    # the same element in a list header is dropped, never guessed
    listed = parse_addresses(f"carol@example.net, {value}")
    assert [a.email for a in listed.addresses] == ["carol@example.net"]
    assert why in listed.problem


FINE = [
    ('"Doe, John" <J.Doe@Example.ORG>', "Doe, John", "j.doe@example.org"),
    ("John Doe <j@x.example>", "John Doe", "j@x.example"),
    ("j@x.example", "", "j@x.example"),
    ("j@x.example (John Doe)", "John Doe", "j@x.example"),
    ("(John (the) Doe) j@x.example", "John (the) Doe", "j@x.example"),
    ("<j@x.example>", "", "j@x.example"),
    ("  <j@x.example>  ", "", "j@x.example"),
    ("John Q. Public <jqp@x.example>", "John Q. Public", "jqp@x.example"),
    ('John "JD" Doe <j@x.example>', "John JD Doe", "j@x.example"),
    ('"John \\"JD\\" Doe" <j@x.example>', 'John "JD" Doe', "j@x.example"),
    ("O'Brien & Sons <ob@x.example>", "O'Brien & Sons", "ob@x.example"),
    ("John (Sales) Doe <j@x.example>", "John Doe", "j@x.example"),
    ("John Doe\r\n <j@x.example>", "John Doe", "j@x.example"),
    ("Jörg Müller <joerg@x.example>", "Jörg Müller", "joerg@x.example"),
    ("J\udcc3\udcb6rg <joerg@x.example>", "Jörg", "joerg@x.example"),  # raw 8-bit UTF-8 via surrogateescape
    ("=?iso-8859-1?q?J=F6rg_M=FCller?= <joerg@x.example>", "Jörg Müller", "joerg@x.example"),
    ("=?utf-8?b?w4lyaWM=?= =?utf-8?b?IETDqQ==?= <e@x.example>", "Éric Dé", "e@x.example"),
    ('"=?utf-8?b?w4lyaWM=?=" <e@x.example>', "Éric", "e@x.example"),  # encoded word in quotes, as mailers write
    ('"alice@example.org" <mallory@evil.example>', "alice@example.org", "mallory@evil.example"),
    ("=?utf-8?b?YWxpY2VAZXhhbXBsZS5vcmc=?= <mallory@evil.example>", "alice@example.org", "mallory@evil.example"),
    ("jöe@Bücher.Example", "", "jöe@bücher.example"),  # SMTPUTF8 local part, IDN domain
    ('"john doe"@x.example', "", '"john doe"@x.example'),
    ('"john"@x.example', "", "john@x.example"),
    ('"a\\"b"@x.example', "", '"a\\"b"@x.example'),
    ("first.last+tag@sub.x.example", "", "first.last+tag@sub.x.example"),
    ("<@relay.example,@other.example:j@x.example>", "", "j@x.example"),  # obsolete route: checked, dropped
    ("j@[192.0.2.1]", "", "j@[192.0.2.1]"),
    ("MAILER-DAEMON@localhost", "", "mailer-daemon@localhost"),
]


@pytest.mark.parametrize(("value", "name", "addr"), FINE)
def test_real_world_forms_parse_strictly(value: str, name: str, addr: str) -> None:
    field = parse_mailbox(value)
    assert field.problem == ""
    assert field.addresses == (Address(name, addr),)
    assert field.mailbox == Address(name, addr)


BROKEN = [
    ("", "no address"),
    ("MAILER-DAEMON", "no '@'"),
    ("Mail Delivery Subsystem <MAILER-DAEMON>", "no '@'"),
    ("<>", "empty address"),
    ("@x.example", "empty local part"),
    ("j@", "empty domain"),
    ("<j@>", "empty domain"),
    ("j@x..example", "empty label"),
    ("j@x.example.", "empty label"),
    (".j@x.example", "starts with '.'"),
    ("j.@x.example", "ends with '.'"),
    ("j@@x.example", "more than one '@'"),
    ("j@x.example@y.example", "more than one '@'"),
    ("john doe@x.example", "space in the address"),
    ("purchasing@x.example <noreply@y.example>", "without a separator"),
    ("Bob <b@x.example> Bobby <bb@x.example>", "after '>'"),
    ("<a@x.example><b@y.example>", "two angle addresses"),
    ("<a@x.example", "missing '>'"),
    ("a@x.example>", "stray '>'"),
    ('"unterminated <a@x.example>', "unterminated quoted string"),
    ("(unterminated <a@x.example>", "unterminated comment"),
    ("a@x.example)", "stray ')'"),
    ("a\x00b@x.example", "U+0000"),
    ("a@x.example\nBcc: b@y.example", "U+000A"),
    ("=?utf-8?q?alice?=@x.example", "encoded word"),
    ("alice@=?utf-8?q?x.example?=", "encoded word"),
    ("j@x_y!.example", "not allowed in a domain"),
    ("a\u200b@x.example", "invisible"),
    ("undisclosed-recipients:;", "group syntax"),
    ("Doe, John <j@x.example>", "no '@'"),  # unquoted comma: 'Doe' is an element of its own
    ("<@relay.example j@x.example>", "source route"),
    ("a@x.example;", "after the address"),
]


@pytest.mark.parametrize(("value", "why"), BROKEN)
def test_broken_mailboxes_give_no_address(value: str, why: str) -> None:
    field = parse_mailbox(value)
    assert field.addresses == ()
    assert field.mailbox is None
    assert why in field.problem, field.problem
    assert "\n" not in field.problem and "\x00" not in field.problem
    assert "\n" not in field.raw and "\x00" not in field.raw


def test_none_is_no_address() -> None:
    assert parse_mailbox(None) == AddressField((), "no address in the header", "")
    assert parse_addresses(None) == AddressField((), "", "")
    assert parse_addresses("  ") == AddressField((), "", "")


def test_several_mailboxes_in_from_are_kept_but_nobody_is_answered() -> None:
    field = parse_mailbox("Mikel <m@x.example>, jack@y.example")
    assert [a.email for a in field.addresses] == ["m@x.example", "jack@y.example"]
    assert "2 mailboxes" in field.problem
    assert field.mailbox is None


def test_one_broken_element_in_from_drops_every_address() -> None:
    field = parse_mailbox("ok@x.example, alice@example.org)<bob@example.com>")
    assert field.addresses == ()
    assert "stray ')'" in field.problem


def test_raw_is_one_clean_decoded_bounded_line() -> None:
    field = parse_mailbox("=?utf-8?b?w4lyaWM=?=\r\n <e@x.example>")
    assert field.raw == "Éric <e@x.example>"
    long = parse_mailbox("x" * 5000 + "@x.example")
    assert len(long.raw) <= 998
    assert "longer than" in long.problem


# -- list headers: To, Cc, Reply-To ---------------------------------------------------------


def emails(field: AddressField) -> list[str]:
    return [a.email for a in field.addresses]


LISTS = [
    ("a@x.example, B <b@y.example>,, c@z.example,", ["a@x.example", "b@y.example", "c@z.example"], ""),
    ("undisclosed-recipients:;", [], ""),
    ("undisclosed-recipients:", [], ""),  # missing ';' at the end: tolerated
    ("Team: a@x.example, B <b@y.example>;, c@z.example", ["a@x.example", "b@y.example", "c@z.example"], ""),
    ('"Doe, John" <j@x.example>, (comment, with comma) k@x.example', ["j@x.example", "k@x.example"], ""),
    ("a@x.example, alice@example.org)<bob@example.com>, c@z.example", ["a@x.example", "c@z.example"], "stray ')'"),
    ("a@x.example, <b@y.example <m@evil.example>>, c@z.example", ["a@x.example", "c@z.example"], "'<' inside"),
    ("a@x.example, Mikel@Lindsaar <r@y.example>, c@z.example", ["a@x.example", "c@z.example"], "separator"),
    ("Doe, John <j@x.example>", ["j@x.example"], "no '@'"),
    ("<garbage, bob@x.example>, c@z.example", ["c@z.example"], "no '@'"),  # nothing guessed inside a broken <...>
    ("Team: a@x.example, <b@y.example; c@z.example", ["a@x.example"], "inside <...>"),
    ("Team: a@x.example, Inner: b@y.example;;", [], "group inside a group"),  # the whole group is broken
    ("Team: a@x.example, b@y.example; junk, c@z.example", ["c@z.example"], "after the group"),
]


@pytest.mark.parametrize(("value", "expected", "why"), LISTS)
def test_list_headers_keep_what_parses_and_name_what_does_not(value: str, expected: list[str], why: str) -> None:
    field = parse_addresses(value)
    assert emails(field) == expected
    if why:
        assert why in field.problem, field.problem
        assert "did not parse" in field.problem
    else:
        assert field.problem == ""


def test_list_limit() -> None:
    field = parse_addresses(", ".join(f"u{i}@x.example" for i in range(300)), limit=200)
    assert len(field.addresses) == 200
    assert "more than 200" in field.problem


def test_problem_lists_a_few_and_counts_the_rest() -> None:
    field = parse_addresses(", ".join(["bad"] * 10 + ["ok@x.example"]))
    assert emails(field) == ["ok@x.example"]
    assert field.problem.startswith("10 of 11 addresses did not parse")
    assert "and 7 more" in field.problem


@pytest.mark.parametrize(
    "value",
    [
        "(" * 16_000,
        "<" * 16_000,
        '"' * 16_001,
        "a@" * 8_000,
        "\\" * 16_000,
        "<@a," * 4_000,
        "g:" * 8_000,
        "=?" * 8_000,
        "a." * 8_000 + "@b",
        "(" * 8_000 + ")" * 8_000 + "a@b.example",
        "a@b.example, " * 1_300,
    ],
)
def test_pathological_input_is_linear_and_bounded(value: str) -> None:
    for field in (parse_addresses(value), parse_mailbox(value)):
        assert len(field.problem) <= 400
        assert len(field.raw) <= 998
        assert len(field.addresses) <= 200


def test_over_long_header_is_not_parsed() -> None:
    value = "a@x.example, " * (MAX_HEADER_CHARS // 13 + 1)
    field = parse_addresses(value)
    assert field.addresses == ()
    assert "limit" in field.problem


# -- the real-mail corpus -------------------------------------------------------------------

PLAUSIBLE = re.compile(r"[^@\s]+@[^@\s]+")


def corpus_messages(corpus: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """(path, raw header items) of every full message in the corpus (reply/* bodies skipped)."""
    rows = (corpus / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    out = []
    for row in rows:
        if not row.strip():
            continue
        path = row.split("\t")[0]
        if path.startswith("reply/") and not (path.startswith("reply/talon/") and path.endswith(".eml")):
            continue
        message = email.message_from_bytes((corpus / path).read_bytes(), policy=policy.compat32)
        out.append((path, [(name.lower(), str(value)) for name, value in message.raw_items()]))
    return out


def plausible(addr: str) -> str:
    addr = unsurrogate(addr).lower()
    return addr if PLAUSIBLE.fullmatch(addr) else ""


@pytest.mark.corpus
def test_corpus_from_headers_agree_with_the_stdlib(corpus: Path) -> None:
    strict = problems = compared = agreed = 0
    disagreements: list[str] = []
    for path, headers in corpus_messages(corpus):
        for value in (v for k, v in headers if k in ("from", "sender")):
            field = parse_mailbox(value)  # never raises
            if field.problem:
                problems += 1
            else:
                strict += 1
            want = plausible(email.utils.parseaddr(value)[1])
            if not want:
                continue
            compared += 1
            if field.mailbox is not None and field.mailbox.email == want:
                agreed += 1
            else:
                disagreements.append(f"  {path}: {value[:100]!r} stdlib={want} -> {field.problem}")
    print(f"\nFrom/Sender: {strict} strict, {problems} with a problem; stdlib-plausible {compared}, agree {agreed}")
    print("\n".join(disagreements))
    assert strict > 500, "the corpus is suspiciously small"
    assert agreed >= 0.98 * compared


@pytest.mark.corpus
def test_corpus_list_headers_agree_with_the_stdlib(corpus: Path) -> None:
    compared = agreed = 0
    disagreements: list[str] = []
    for path, headers in corpus_messages(corpus):
        for name, value in headers:
            if name not in ("to", "cc", "reply-to"):
                continue
            field = parse_addresses(value)
            want = [a for a in (plausible(addr) for _, addr in email.utils.getaddresses([value])) if a]
            if not want:
                continue
            compared += 1
            if emails(field) == want:
                agreed += 1
            else:
                disagreements.append(f"  {path} {name}: {value[:100]!r} stdlib={want[:4]} ours={emails(field)[:4]}")
    print(f"\nTo/Cc/Reply-To: stdlib-plausible {compared} headers, same addresses {agreed}")
    print("\n".join(disagreements))
    assert compared > 500
    assert agreed >= 0.98 * compared
