"""The command lines at the top of an agent's reply, as a table: text in, commands/errors/text out."""

from __future__ import annotations

import time

import pytest

from mailticket.rules.commands import Command, CommandError, Parsed, parse_commands

C = tuple[str, tuple[str, ...]]  # (verb, args)


def cmds(parsed: Parsed) -> list[C]:
    return [(c.verb, c.args) for c in parsed.commands]


def errs(parsed: Parsed) -> list[tuple[int, str]]:
    return [(e.number, e.reason) for e in parsed.errors]


Row = tuple[str, str, list[C], str, bool]  # (id, text, commands, text left, only_commands)


def every_value(verb: str, values: tuple[str, ...]) -> list[Row]:
    return [(f"{verb} {v}", f"#{verb} {v}\n", [(verb, (v,))], "", True) for v in values]


VALID: list[Row] = [
    *every_value("status", ("open", "pending", "solved", "closed")),
    *every_value("priority", ("low", "normal", "high", "urgent")),
    ("away on", "#away on", [("away", ("on",))], "", True),
    ("away off", "#away off", [("away", ("off",))], "", True),
    ("assign address", "#assign Anna@Example.COM\n", [("assign", ("anna@example.com",))], "", True),
    ("assign <address>", "#assign <anna@example.com>\n", [("assign", ("anna@example.com",))], "", True),
    ("assign name", "#assign Anna Berg\n", [("assign", ("Anna Berg",))], "", True),
    ("assign me", "#assign ME\n", [("assign", ("me",))], "", True),
    ("assign none", "#assign None\n", [("assign", ("none",))], "", True),
    ("queue", "#queue billing\n", [("queue", ("billing",))], "", True),
    ("queue keeps its case", "#queue Billing\n", [("queue", ("Billing",))], "", True),
    ("tag", "#tag +VIP -spam bare\n", [("tag", ("+vip", "-spam", "+bare"))], "", True),
    ("tag commas", "#tag +a,-b, c\n", [("tag", ("+a", "-b", "+c"))], "", True),
    ("tag once each", "#tag x +x\n", [("tag", ("+x",))], "", True),
    ("cc", "#cc +Bob@Example.com -carol@example.org dave@example.net\n",
     [("cc", ("+bob@example.com", "-carol@example.org", "+dave@example.net"))], "", True),
    ("cc mailto and brackets", "#cc +<bob@example.com> mailto:eve@example.com\n",
     [("cc", ("+bob@example.com", "+eve@example.com"))], "", True),
    ("internal", "#internal\nNote for the team.\n", [("internal", ())], "Note for the team.\n", False),
    ("merge", "#merge 42\n", [("merge", ("42",))], "", True),
    ("merge #N", "#merge #42\n", [("merge", ("42",))], "", True),
    ("merge leading zeros", "#merge 007\n", [("merge", ("7",))], "", True),
    ("verbs any case", "#STATUS Solved\n#Priority HIGH\n#TaG +X\n#InTeRnAl\n",
     [("status", ("solved",)), ("priority", ("high",)), ("tag", ("+x",)), ("internal", ())], "", True),
    ("colon after the verb", "#status: solved\n#queue:billing\n",
     [("status", ("solved",)), ("queue", ("billing",))], "", True),
    ("several then text", "#status pending\n#priority urgent\n\nHello Jane,\nthanks.\n",
     [("status", ("pending",)), ("priority", ("urgent",))], "Hello Jane,\nthanks.\n", False),
    ("blank lines between and before", "\n\n#status open\n\n\n#tag +x\n\n\nHi\n",
     [("status", ("open",)), ("tag", ("+x",))], "Hi\n", False),
    ("trailing spaces and tabs", "#status solved   \t\n#merge 3 \nText\n",
     [("status", ("solved",)), ("merge", ("3",))], "Text\n", False),
    ("leading spaces", "   #status solved\nText", [("status", ("solved",))], "Text", False),
    ("non-breaking space", "#status\u00a0solved\n", [("status", ("solved",))], "", True),
    ("crlf", "#status solved\r\n#tag +a\r\n\r\nHello\r\nBye\r\n",
     [("status", ("solved",)), ("tag", ("+a",))], "Hello\r\nBye\r\n", False),
    ("bare cr", "#status solved\r#tag +a\rHello", [("status", ("solved",)), ("tag", ("+a",))], "Hello", False),
    ("bom", "\ufeff#status solved\nHello\n", [("status", ("solved",))], "Hello\n", False),
    ("only commands and blanks", "\n#status solved\n\n  \n", [("status", ("solved",))], "", True),
    ("a signature is nothing to relay", "#status solved\n\n-- \nAnna\nSupport\n",
     [("status", ("solved",))], "-- \nAnna\nSupport\n", True),
    ("a dash line of text is something", "#status solved\n--- call me\n",
     [("status", ("solved",))], "--- call me\n", False),
    ("same command twice is once", "#status solved\n#status SOLVED\n", [("status", ("solved",))], "", True),
    ("tag and cc may repeat", "#tag +a\n#tag -b\n", [("tag", ("+a",)), ("tag", ("-b",))], "", True),
    ("a command below text is text", "Hello\n#status solved\n", [], "Hello\n#status solved\n", False),
    ("a command after text and a blank line is text", "#tag +a\nHi\n\n#status solved\n",
     [("tag", ("+a",))], "Hi\n\n#status solved\n", False),
    ("quoted command is text", "> #status solved\n#status open\n", [], "> #status solved\n#status open\n", False),
    ("quoted line ends the block", "#status open\n> #status solved\n",
     [("status", ("open",))], "> #status solved\n", False),
    ("indented quote", "  > #status solved\n", [], "  > #status solved\n", False),
    # look-alikes: text, and they end the block
    ("#1 reason", "#1 reason is the invoice\n#status solved\n", [], "#1 reason is the invoice\n#status solved\n",
     False),
    ("#2fa", "#2fa broke again\n", [], "#2fa broke again\n", False),
    ("# heading", "# Heading\n#status solved\n", [], "# Heading\n#status solved\n", False),
    ("## heading", "## Heading\n", [], "## Heading\n", False),
    ("hashtag far from any verb", "#hashtag season is here\n", [], "#hashtag season is here\n", False),
    ("hashtag alone", "#thanks\n", [], "#thanks\n", False),
    ("short word near a short verb is text", "#the end\n#ok\n", [], "#the end\n#ok\n", False),
    ("hashtag mid-line", "We fixed it #status solved\n", [], "We fixed it #status solved\n", False),
    ("known verb glued to more", "#status-quo is fine\n#statusopen\n", [], "#status-quo is fine\n#statusopen\n",
     False),
    ("hashtag after commands ends the block", "#status solved\n#hashtag fun\n#priority low\n",
     [("status", ("solved",))], "#hashtag fun\n#priority low\n", False),
    ("no commands: unchanged", "\ufeff\r\nHello\r\n", [], "\ufeff\r\nHello\r\n", False),
    ("empty", "", [], "", False),
    ("blank only", "\n \n", [], "\n \n", False),
]


@pytest.mark.parametrize(("text", "commands", "left", "only"), [row[1:] for row in VALID],
                         ids=[row[0] for row in VALID])
def test_valid(text: str, commands: list[C], left: str, only: bool) -> None:
    parsed = parse_commands(text)
    assert errs(parsed) == []
    assert cmds(parsed) == commands
    assert parsed.text == left
    assert parsed.only_commands is only


# (id, text, errors (line number, reason), commands still read, text left)
BAD: list[tuple[str, str, list[tuple[int, str]], list[C], str]] = [
    ("typo stauts", "#stauts pending\n", [(1, 'unknown command "#stauts" (did you mean #status?)')], [], ""),
    ("typo asign", "#asign me\n", [(1, 'unknown command "#asign" (did you mean #assign?)')], [], ""),
    ("typo priorty", "#Priorty high\n", [(1, 'unknown command "#Priorty" (did you mean #priority?)')], [], ""),
    ("typo tga", "#tga +x\n", [(1, 'unknown command "#tga" (did you mean #tag?)')], [], ""),
    ("typo tags", "#tags +x\n", [(1, 'unknown command "#tags" (did you mean #tag?)')], [], ""),
    ("typo state", "#state solved\n", [(1, 'unknown command "#state" (did you mean #status?)')], [], ""),
    ("typo mrege", "#mrege 4\n", [(1, 'unknown command "#mrege" (did you mean #merge?)')], [], ""),
    ("typo qeue", "#qeue billing\n", [(1, 'unknown command "#qeue" (did you mean #queue?)')], [], ""),
    ("typo internl", "#internl\n", [(1, 'unknown command "#internl" (did you mean #internal?)')], [], ""),
    ("bare status value", "#solved\n", [(1, 'unknown command "#solved" (did you mean #status solved?)')], [], ""),
    ("bare priority value", "#urgent\n",
     [(1, 'unknown command "#urgent" (did you mean #priority urgent?)')], [], ""),
    ("bad status", "#status maybe\n", [(1, '"#status maybe": one of open, pending, solved, closed')], [], ""),
    ("status new is not allowed", "#status new\n", [(1, '"#status new": one of open, pending, solved, closed')],
     [], ""),
    ("status missing", "#status\n", [(1, '"#status": one of open, pending, solved, closed')], [], ""),
    ("status two values", "#status open solved\n", [(1, '"#status open solved": one of open, pending, solved, closed')],
     [], ""),
    ("bad priority", "#priority asap\n", [(1, '"#priority asap": one of low, normal, high, urgent')], [], ""),
    ("bad away", "#away yes\n", [(1, '"#away yes": one of on, off')], [], ""),
    ("merge missing", "#merge\n", [(1, '"#merge": needs a ticket number')], [], ""),
    ("merge not a number", "#merge abc\n", [(1, '"#merge abc": needs one ticket number, e.g. #merge 123')], [], ""),
    ("merge zero", "#merge 0\n", [(1, '"#merge 0": needs one ticket number, e.g. #merge 123')], [], ""),
    ("merge two", "#merge 1 2\n", [(1, '"#merge 1 2": needs one ticket number, e.g. #merge 123')], [], ""),
    ("queue missing", "#queue\n", [(1, '"#queue": needs a queue name')], [], ""),
    ("assign missing", "#assign\n", [(1, '"#assign": needs an address, an agent\'s name, me or none')], [], ""),
    ("assign bad address", "#assign anna@\n", [(1, '"#assign anna@": not an address')], [], ""),
    ("tag missing", "#tag\n", [(1, '"#tag": needs something to add (+x) or remove (-x)')], [], ""),
    ("tag sign only", "#tag + x\n", [(1, '"#tag + x": "+" is not a tag')], [], ""),
    ("cc missing", "#cc\n", [(1, '"#cc": needs an address to add (+addr) or remove (-addr)')], [], ""),
    ("cc not an address", "#cc +bob\n", [(1, '"#cc +bob": "+bob" is not an address')], [], ""),
    ("cc no domain dot", "#cc +bob@localhost\n", [(1, '"#cc +bob@localhost": "+bob@localhost" is not an address')],
     [], ""),
    ("internal with args", "#internal please\n", [(1, '"#internal please": takes nothing after it')], [], ""),
    ("conflicting status", "#status open\n#status solved\n",
     [(2, '"#status solved": conflicts with "#status open" on line 1')], [("status", ("open",))], ""),
    ("errors and commands mixed", "\n#status solved\n#stauts x\n\n#priority hgh\n#tag +a\nHi there\n",
     [(3, 'unknown command "#stauts" (did you mean #status?)'),
      (5, '"#priority hgh": one of low, normal, high, urgent')],
     [("status", ("solved",)), ("tag", ("+a",))], "Hi there\n"),
    ("crlf numbers", "\r\n#status x\r\nHi\r\n", [(2, '"#status x": one of open, pending, solved, closed')], [],
     "Hi\r\n"),
    ("bom numbers", "\ufeff#away maybe\n", [(1, '"#away maybe": one of on, off')], [], ""),
]


@pytest.mark.parametrize(("text", "errors", "commands", "left"), [row[1:] for row in BAD],
                         ids=[row[0] for row in BAD])
def test_errors(text: str, errors: list[tuple[int, str]], commands: list[C], left: str) -> None:
    parsed = parse_commands(text)
    assert errs(parsed) == errors
    assert cmds(parsed) == commands
    assert parsed.text == left
    assert parsed.only_commands is (left.strip() == "")


def test_the_line_as_written_and_its_number() -> None:
    parsed = parse_commands("\r\n#STATUS  Solved  \r\n#Stauts open\r\nBody")
    assert parsed.commands == (Command("status", ("solved",), "#STATUS  Solved  ", 2),)
    assert parsed.errors == (CommandError("#Stauts open", 3, 'unknown command "#Stauts" (did you mean #status?)'),)
    assert parsed.text == "Body"
    assert parsed.only_commands is False


def test_values_are_frozen() -> None:
    parsed = parse_commands("#status open")
    with pytest.raises(AttributeError):
        parsed.text = "x"  # type: ignore[misc]


def test_only_the_top_of_a_big_text_is_read() -> None:
    body = "#status solved\n#tag +big\n\n" + ("a line of prose #status closed\n" * 40_000)
    one_line = "#merge 5\n" + "x" * 1_000_000
    many_blank = "\n" * 200_000 + "#status open\n" + "y" * 1_000_000
    start = time.perf_counter()
    for _ in range(5):
        parsed = parse_commands(body)
        assert cmds(parsed) == [("status", ("solved",)), ("tag", ("+big",))]
        assert parsed.text.startswith("a line of prose")
        assert cmds(parse_commands(one_line)) == [("merge", ("5",))]
        assert cmds(parse_commands(many_blank)) == [("status", ("open",))]
        assert cmds(parse_commands("#" + "a" * 1_000_000)) == []
    assert time.perf_counter() - start < 2.0
