"""One ``[[routing]]`` table of the config as a rule (group "routing").

Every condition the table asks for must hold, and only a new ticket is routed.
``evaluate`` says, condition by condition, what held and why (``mailticket rules test``);
``check`` turns a hit into actions. Regexes run over bounded text, so a huge mail cannot stall them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailticket.rules.actions import (
    Action,
    AddTags,
    Assign,
    Hold,
    NoAcknowledgement,
    QueueMail,
    SetPriority,
    SetQueue,
    Stop,
)
from mailticket.rules.facts import Facts
from mailticket.settings import RoutingSettings, RoutingWhen

ROUTING = "routing"
BODY_LIMIT = 100_000  # characters of the body a regex looks at
LINE_LIMIT = 10_000  # characters of a subject, header value or address a regex looks at
SHOWN = 80  # characters of a searched text quoted in a condition's detail


@dataclass(frozen=True)
class Condition:
    name: str  # "subject", "header.list-id", ...
    held: bool
    detail: str


def _quote(text: str) -> str:
    text = " ".join(text[: SHOWN * 20].split())
    if len(text) > SHOWN:
        text = text[: SHOWN - 1] + "…"
    return '"' + text.replace('"', '\\"') + '"'


def _shown(pattern: re.Pattern[str]) -> str:
    return f"/{pattern.pattern}/"


def _flag(name: str, wanted: bool) -> str:
    return name if wanted else f"not {name}"


def describe(when: RoutingWhen) -> str:
    """The conditions in words, e.g. ``subject ~ /(?i)invoice/, has_attachment``."""
    parts: list[str] = []
    if when.subject is not None:
        parts.append(f"subject ~ {_shown(when.subject)}")
    if when.body is not None:
        parts.append(f"body ~ {_shown(when.body)}")
    if when.sender is not None:
        parts.append(f"sender ~ {_shown(when.sender)}")
    if when.sender_domain:
        parts.append(f"sender_domain in ({', '.join(when.sender_domain)})")
    if when.recipient is not None:
        parts.append(f"recipient ~ {_shown(when.recipient)}")
    for header, pattern in when.headers:
        parts.append(f"header.{header} ~ {_shown(pattern)}")
    if when.has_attachment is not None:
        parts.append(_flag("has_attachment", when.has_attachment))
    if when.verdict:
        parts.append(f"verdict in ({', '.join(when.verdict)})")
    if when.known_customer is not None:
        parts.append(_flag("known_customer", when.known_customer))
    return ", ".join(parts) if parts else "every new ticket"


def _search(name: str, what: str, text: str, pattern: re.Pattern[str], limit: int = LINE_LIMIT) -> Condition:
    held = pattern.search(text[:limit]) is not None
    verb = "matches" if held else "does not match"
    return Condition(name, held, f"{what} {_quote(text)} {verb} {_shown(pattern)}")


def _body(facts: Facts, pattern: re.Pattern[str]) -> Condition:
    text = facts.mail.text
    where = "body (from its HTML)" if facts.mail.text_from_html else "body"
    found = pattern.search(text[:BODY_LIMIT])
    if found is not None:
        return Condition("body", True, f"{where} matches {_shown(pattern)} at {_quote(found.group(0))}")
    bounded = f", first {BODY_LIMIT} characters searched" if len(text) > BODY_LIMIT else ""
    return Condition("body", False, f"{where} ({len(text)} characters{bounded}) does not match {_shown(pattern)}")


def _sender(facts: Facts, pattern: re.Pattern[str]) -> Condition:
    if not facts.sender.email:
        return Condition("sender", False, f"no sender address to match {_shown(pattern)}")
    return _search("sender", "sender", facts.sender.email, pattern)


def _sender_domain(facts: Facts, domains: tuple[str, ...]) -> Condition:
    wanted = ", ".join(domains)
    if "@" not in facts.sender.email:
        return Condition("sender_domain", False, f"no sender address to compare with ({wanted})")
    domain = facts.sender_domain.lower().rstrip(".")
    for item in domains:
        item = item.lower().strip().strip(".")
        if item and (domain == item or domain.endswith("." + item)):
            return Condition("sender_domain", True, f"sender domain {domain} is {item} or under it")
    return Condition("sender_domain", False, f"sender domain {domain or '(none)'} is not under any of ({wanted})")


def _recipient(facts: Facts, pattern: re.Pattern[str]) -> Condition:
    for address in facts.recipients:
        if pattern.search(address[:LINE_LIMIT]) is not None:
            return Condition("recipient", True, f"recipient {address} matches {_shown(pattern)}")
    if not facts.recipients:
        return Condition("recipient", False, f"no recipients to match {_shown(pattern)}")
    shown = ", ".join(facts.recipients[:5]) + (", …" if len(facts.recipients) > 5 else "")
    return Condition("recipient", False, f"no recipient ({shown}) matches {_shown(pattern)}")


def _header(facts: Facts, header: str, pattern: re.Pattern[str]) -> Condition:
    name = f"header.{header}"
    values = facts.mail.header_all(header)
    if not values:
        return Condition(name, False, f"no {header} header to match {_shown(pattern)}")
    for value in values[:100]:
        if pattern.search(value[:LINE_LIMIT]) is not None:
            return Condition(name, True, f"{header} {_quote(value)} matches {_shown(pattern)}")
    more = f" (and {len(values) - 1} more)" if len(values) > 1 else ""
    return Condition(name, False, f"{header} {_quote(values[0])}{more} does not match {_shown(pattern)}")


def _has_attachment(facts: Facts, wanted: bool) -> Condition:
    real = facts.attachments
    if real:
        names = ", ".join(a.filename for a in real[:3]) + (", …" if len(real) > 3 else "")
        detail = f"has {len(real)} attachment{'s' if len(real) > 1 else ''} ({names})"
    else:
        other = len(facts.mail.attachments)
        detail = "has no attachment" + (f" ({other} inline or report parts do not count)" if other else "")
    return Condition("has_attachment", bool(real) == wanted, f"{detail}; wanted {_flag('has_attachment', wanted)}")


def _verdict(facts: Facts, kinds: tuple[str, ...]) -> Condition:
    kind = str(facts.verdict.kind)
    held = kind in kinds
    return Condition("verdict", held,
                     f"verdict {kind} ({facts.verdict.reason}) is {'' if held else 'not '}in ({', '.join(kinds)})")


def _known_customer(facts: Facts, wanted: bool) -> Condition:
    known = facts.known_customer
    detail = f"sender {facts.sender.email or '(none)'} is {'' if known else 'not '}a known customer"
    return Condition("known_customer", known == wanted, f"{detail}; wanted {_flag('known_customer', wanted)}")


class RoutingRule:
    """A ``[[routing]]`` table: all its conditions hold for a new ticket -> its ``then`` actions."""

    def __init__(self, settings: RoutingSettings) -> None:
        self._settings = settings
        self._description = describe(settings.when)

    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def description(self) -> str:
        return self._description

    @property
    def group(self) -> str:
        return ROUTING

    @property
    def settings(self) -> RoutingSettings:
        return self._settings

    def __repr__(self) -> str:
        return f"RoutingRule({self.name!r}: {self._description})"

    def evaluate(self, facts: Facts) -> list[Condition]:
        """One ``Condition`` per condition the table asks for, in the order of ``describe``."""
        when = self._settings.when
        conditions: list[Condition] = []
        if when.subject is not None:
            conditions.append(_search("subject", "subject", facts.mail.subject, when.subject))
        if when.body is not None:
            conditions.append(_body(facts, when.body))
        if when.sender is not None:
            conditions.append(_sender(facts, when.sender))
        if when.sender_domain:
            conditions.append(_sender_domain(facts, when.sender_domain))
        if when.recipient is not None:
            conditions.append(_recipient(facts, when.recipient))
        for header, pattern in when.headers:
            conditions.append(_header(facts, header, pattern))
        if when.has_attachment is not None:
            conditions.append(_has_attachment(facts, when.has_attachment))
        if when.verdict:
            conditions.append(_verdict(facts, when.verdict))
        if when.known_customer is not None:
            conditions.append(_known_customer(facts, when.known_customer))
        return conditions

    def check(self, facts: Facts) -> list[Action]:
        if not facts.created:
            return []
        if not all(condition.held for condition in self.evaluate(facts)):
            return []
        then = self._settings.then
        actions: list[Action] = []
        if then.queue is not None:
            actions.append(SetQueue(then.queue))
        if then.priority is not None:
            actions.append(SetPriority(then.priority))
        if then.tags:
            actions.append(AddTags(then.tags))
        if then.assignee is not None:
            actions.append(Assign(then.assignee))
        if then.acknowledge is False:
            actions.append(NoAcknowledgement(f'routing rule "{self.name}": then.acknowledge = false'))
        elif then.acknowledge is True:
            actions.append(QueueMail("ack_new", "requester"))
        if then.hold:
            actions.append(Hold(f'routing rule "{self.name}"'))
        if self._settings.stop:
            actions.append(Stop())
        return actions
