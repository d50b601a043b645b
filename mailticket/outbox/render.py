"""Jinja2 rendering of mail templates. Customer text is only ever a variable.

Templates come from the install's override directory first, then the
defaults shipped in the package. StrictUndefined turns a typo into an
error instead of a silently blank mail; the sandbox keeps templates from
reaching into Python objects.

``mail_context`` is the one place the context's shape is defined: the rules
build every context with it, and ``Renderer.check`` renders every template
file of every kind (text and HTML, and any other variant file such as
``ack_new.de.txt.j2``) with samples built by it, so a typo, or a name the
rules stop providing, fails ``check-config`` and start-up, naming the file,
the line and the unknown name. At run time ``render`` raises ``RenderError``
with the same one line; the outbox records it instead of losing the ticket.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    nodes,
)
from jinja2 import meta as jinja_meta
from jinja2.sandbox import SandboxedEnvironment

from mailticket.domain import Address
from mailticket.errors import ConfigError, MailticketError
from mailticket.marks import REPLY_MARKERS

SUFFIXES = ("txt", "html")  # every kind has both; render() returns them in this order
DEFAULT_LANGUAGE = "en"  # name.txt.j2; other languages are name.<lang>.txt.j2 (each shipped template has "de")


def _default_dir() -> Path:
    return Path(str(resources.files("mailticket.templates")))


class RenderError(MailticketError):
    """A template could not be rendered; ``str()`` is one line naming the file, the line and the cause."""




def reply_marker(language: str) -> str:
    """The "reply above this line" line in ``language``; English for a language without its own."""
    return REPLY_MARKERS.get(language, REPLY_MARKERS[DEFAULT_LANGUAGE])


def file_language(filename: str) -> str:
    """The language of a template file: ``ack_new.de.txt.j2`` is "de", ``ack_new.txt.j2`` is English."""
    parts = Path(filename).name.split(".")
    return parts[1] if len(parts) == 4 else DEFAULT_LANGUAGE


@dataclass(frozen=True)
class SlaLine:
    """What an SLA reminder or escalation is about. ``due`` and ``over`` are written out ("2026-12-07
    13:00 UTC", "2h 15m"); ``over`` is "" while the target is not yet due (a reminder), ``left`` then says
    how much business time is left; ``level`` is the escalation level (0 for a reminder)."""

    target: str  # first_response, next_response, resolution
    policy: str
    due: str
    due_local: str = ""  # the same instant in the SLA timezone, e.g. "2026-12-07 14:00 CET"
    over: str = ""
    left: str = ""
    level: int = 0


@dataclass(frozen=True)
class RatingLink:
    """One satisfaction rating in a survey: ``address`` is the signed plus-address, ``href`` its mailto."""

    rating: int
    address: str
    href: str


@dataclass(frozen=True)
class AttachmentLine:
    """One attachment as a mail lists it; ``attached`` False means over the size limit, only named."""

    filename: str
    size: int
    attached: bool = True


def mail_context(*, ticket_number: int, ticket_subject: str, tag: str, status: str, customer: Address,
                 mailbox: Address, priority: str = "", queue: str = "", requester: Address | None = None,
                 linked_to: int | None = None, agent: Address | None = None, message_from: Address | None = None,
                 message_text: str = "", verified: bool | None = None, note: str = "", is_new_ticket: bool = False,
                 date: str = "", attachments: Sequence[AttachmentLine] = (), language: str = DEFAULT_LANGUAGE,
                 reason: str = "", sent_from_name: str = "", sent_text: str = "", sent_date: str = "",
                 held_text: str = "", sla: SlaLine | None = None, ratings: Sequence[RatingLink] = (),
                 close_at: str = "", waited_days: int = 0) -> dict[str, Any]:
    """The context every mail template renders with (the single definition of its keys).

    Every kind renders from this one shape; what a kind does not need stays at its neutral default.
    ``requester`` defaults to ``customer``; ``message_from`` (who wrote the mail this one is about) to
    nobody. ``marker`` is the reply marker of ``language``; ``Renderer.render`` sets it to the marker of
    the language of the file it actually renders, so a fallback to English carries the English marker.
    """
    requester = requester if requester is not None else customer
    agent = agent if agent is not None else Address("", "")
    message_from = message_from if message_from is not None else Address("", "")
    sla = sla if sla is not None else SlaLine("", "", "")
    return {
        "ticket": {"number": ticket_number, "subject": ticket_subject, "tag": tag, "status": status,
                   "priority": priority, "queue": queue, "requester": requester.email,
                   "requester_name": requester.name, "linked_to": linked_to},
        "customer": {"name": customer.name, "email": customer.email},
        "mailbox": {"name": mailbox.name, "address": mailbox.email},
        "agent": {"name": agent.name, "email": agent.email},
        "message": {"from_name": message_from.name, "from_email": message_from.email, "text": message_text,
                    "verified": verified, "note": note, "is_new_ticket": is_new_ticket, "date": date},
        "attachments": [{"filename": a.filename, "size": a.size, "attached": a.attached} for a in attachments],
        "marker": reply_marker(language),
        "reason": reason,
        "sent": {"from_name": sent_from_name, "text": sent_text, "date": sent_date},
        "held_text": held_text,
        # sla_reminder, sla_escalation: the target, how long it is over (message.text: the customer's last text)
        "sla": {"target": sla.target, "policy": sla.policy, "due": sla.due, "due_local": sla.due_local,
                "over": sla.over, "left": sla.left, "level": sla.level},
        # csat_survey: ratings 1..5, each a mailto link to a signed plus-address
        "ratings": [{"rating": r.rating, "address": r.address, "href": r.href} for r in ratings],
        # pending_reminder: the day the ticket closes if nothing comes; waited_days: how long it waited
        "lifecycle": {"close_at": close_at, "waited_days": waited_days},
    }


def sample_contexts() -> list[dict[str, Any]]:
    """Contexts for the start-up check: every value filled in, then every optional value empty."""
    full = mail_context(
        ticket_number=1234, ticket_subject="Printer on fire", tag="[#1234]", status="new",
        customer=Address("Alice Customer", "alice@customer.example"),
        mailbox=Address("Example Support", "support@example.com"),
        priority="high", queue="support", requester=Address("Alice Customer", "alice@customer.example"),
        linked_to=1200, agent=Address("Bob Agent", "bob@example.com"),
        message_from=Address("Alice Customer", "alice@customer.example"),
        message_text="Hello,\n\nthe printer on floor 2 is on fire.\n\nAlice",
        verified=False, note="sender not verified: dmarc=fail (p=reject) for customer.example",
        is_new_ticket=True, date="2024-05-01 09:30 +0200",
        attachments=[AttachmentLine("photo.jpg", 245_760, True), AttachmentLine("video.mp4", 52_428_800, False)],
        reason="the reply came from bob@elsewhere.example, not from the agent's address bob@example.com",
        sent_from_name="Carol Agent", sent_text="Hello Alice,\n\nthe fire brigade is on its way.\n\nCarol",
        sent_date="2024-05-01 09:41 +0200", held_text="Hi Alice,\n\nplease unplug the printer.\n\nBob",
        sla=SlaLine("first_response", "high", "2024-05-01 13:00 UTC", "2024-05-01 15:00 CEST", "2h 15m", "", 2),
        ratings=[RatingLink(n, f"support+csat.1a2b.{n}@example.com",
                            f"mailto:support+csat.1a2b.{n}@example.com?subject=%5B%231234%5D%20Rating%20{n}")
                 for n in range(1, 6)],
        close_at="2024-05-05", waited_days=3,
    )
    bare = mail_context(ticket_number=1, ticket_subject="", tag="[#1]", status="open",
                        customer=Address("", "alice@customer.example"),
                        mailbox=Address("", "support@example.com"))
    return [full, bare]


def _template_line(exc: BaseException, filename: str | None) -> tuple[str | None, int | None]:
    """The template file and line an exception was raised at, from jinja2's rewritten traceback."""
    if isinstance(exc, TemplateSyntaxError):
        return exc.filename or exc.name or filename, exc.lineno
    found: tuple[str | None, int | None] = (filename, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        # jinja2 rewrites template frames so that they carry the template's file name and line
        if frame.filename == filename or frame.filename.endswith(".j2"):
            found = (frame.filename, frame.lineno)
    return found


def describe(name: str, exc: BaseException, filename: str | None = None) -> str:
    """One line: ``templates: FILE line N: MESSAGE``."""
    if isinstance(exc, TemplateNotFound):
        return f"templates: {name} not found"
    where, line = _template_line(exc, filename)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    message = " ".join(str(message).split())
    at = f" line {line}" if line else ""
    return f"templates: {where or name}{at}: {message}"


def _unknown_names(env: SandboxedEnvironment, template: Template, known: set[str]) -> list[str]:
    """Top-level names a template uses that no context provides, even in a branch a sample does not take."""
    if not template.filename:
        return []
    source = Path(template.filename).read_text(encoding="utf-8")
    tree = env.parse(source, template.name, template.filename)
    unknown = sorted(jinja_meta.find_undeclared_variables(tree) - known - set(env.globals))
    lines: dict[str, int] = {}
    for node in tree.find_all(nodes.Name):
        if node.ctx == "load" and node.name in unknown:
            lines.setdefault(node.name, node.lineno)
    return [f"templates: {template.filename} line {lines.get(n, 0)}: {n!r} is undefined" for n in unknown]


class Renderer:
    def __init__(self, override_dir: Path | None = None) -> None:
        loaders = [FileSystemLoader(str(override_dir))] if override_dir else []
        loaders.append(FileSystemLoader(str(_default_dir())))
        self._env = SandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,
            autoescape=lambda name: bool(name and name.endswith(".html.j2")),
            keep_trailing_newline=True,
        )

    def _render_file(self, filename: str, context: dict[str, Any]) -> str:
        template: Template | None = None
        try:
            template = self._env.get_template(filename)
            return template.render({**context, "marker": reply_marker(file_language(filename))})
        except Exception as exc:  # any failure inside a template is the template's, named as such
            raise RenderError(describe(filename, exc, template.filename if template else None)) from exc

    def render(self, name: str, context: dict[str, Any], language: str = DEFAULT_LANGUAGE) -> tuple[str, str]:
        """(text, html) for template ``name`` in ``language``: ``name.de.txt.j2`` and ``name.de.html.j2``
        when they exist, else the English ``name.txt.j2`` and ``name.html.j2``; RenderError on failure.
        ``marker`` is set to the reply marker of the language of the file rendered."""
        text, html = (self._render_file(self._localized(name, suffix, language), context) for suffix in SUFFIXES)
        return text, html

    def _localized(self, name: str, suffix: str, language: str) -> str:
        if language != DEFAULT_LANGUAGE:
            wanted = f"{name}.{language}.{suffix}.j2"
            try:
                self._env.get_template(wanted)
                return wanted
            except TemplateNotFound:
                pass
        return f"{name}.{suffix}.j2"

    def files(self, name: str) -> list[str]:
        """Every template file of kind ``name``: the two required ones, then any variant found (sorted)."""
        required = [f"{name}.{suffix}.j2" for suffix in SUFFIXES]
        variants = [f for f in self._env.list_templates(filter_func=lambda f: f.startswith(f"{name}.")
                                                          and f.endswith(".j2")) if f not in required]
        return required + sorted(variants)

    def check(self, names: list[str]) -> None:
        """Fail at start-up, not at the first customer mail, when a template is broken.

        Every file of every kind is compiled and rendered with each sample context; one line per
        problem names the file, the line and the cause.
        """
        samples = sample_contexts()
        known = set().union(*(s.keys() for s in samples))
        problems: list[str] = []
        for name in names:
            for filename in self.files(name):
                template: Template | None = None
                try:
                    template = self._env.get_template(filename)
                    found = _unknown_names(self._env, template, known)
                    if found:
                        problems.extend(found)
                        continue
                    for sample in samples:
                        template.render({**sample, "marker": reply_marker(file_language(filename))})
                except Exception as exc:
                    problem = describe(filename, exc, template.filename if template else None)
                    if problem not in problems:
                        problems.append(problem)
        if problems:
            raise ConfigError(problems)
