"""A template typo is caught before mail is lost to it (issue 10, item 2).

``check-config`` and start-up render every template file with the sample
context and name the file, the line and the unknown name; a template that
still fails at run time costs the mail, never the ticket.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from mailticket.app import TEMPLATES, App
from mailticket.domain import Address, Direction, OutboxState
from mailticket.errors import ConfigError
from mailticket.outbox.render import Renderer, RenderError, _default_dir, mail_context, sample_contexts
from mailticket.settings import load
from mailticket.store.models import Event, Message, OutboxRow, Ticket
from tests.conftest import ingest, mail, run_cli

TYPO_TEXT = "Hello,\n\nyour ticket {{ ticket.tag }}\nis for {{ custmer.name }}.\n"  # line 3
TYPO_HTML = "<p>Hello</p>\n<p>{{ ticket.tag }}</p>\n<p>{{ custmer.name }}</p>\n"  # line 3


@pytest.fixture
def template_dir(tmp_path: Path) -> Path:
    """An override directory holding copies of the shipped templates."""
    folder = tmp_path / "templates"
    folder.mkdir()
    for shipped in _default_dir().glob("*.j2"):
        shutil.copy(shipped, folder / shipped.name)
    return folder


def overridden(write_config: Callable[..., Path], folder: Path) -> Path:
    return write_config(extra=f'[templates]\ndirectory = "{folder}"\n')


def check_config_errors(config: Path) -> list[str]:
    result = run_cli(config, "check-config")
    assert result.returncode == 78, (result.stdout.decode(), result.stderr.decode())
    return [line for line in result.stderr.decode().splitlines() if line.startswith("templates:")]


# -- check-config and start-up ------------------------------------------------


def test_shipped_templates_pass_check_config(write_config: Callable[..., Path]) -> None:
    Renderer().check(TEMPLATES)
    result = run_cli(write_config(), "check-config")
    assert result.returncode == 0, result.stderr.decode()


def test_check_config_names_the_text_template_line_and_unknown_name(
    write_config: Callable[..., Path], template_dir: Path
) -> None:
    (template_dir / "ack_new.txt.j2").write_text(TYPO_TEXT)
    [problem] = check_config_errors(overridden(write_config, template_dir))
    assert "ack_new.txt.j2 line 4:" in problem and "'custmer' is undefined" in problem


def test_check_config_names_the_html_template(write_config: Callable[..., Path], template_dir: Path) -> None:
    (template_dir / "ack_new.html.j2").write_text(TYPO_HTML)
    [problem] = check_config_errors(overridden(write_config, template_dir))
    assert "ack_new.html.j2 line 3:" in problem and "'custmer' is undefined" in problem


def test_check_config_names_a_syntax_error(write_config: Callable[..., Path], template_dir: Path) -> None:
    (template_dir / "ack_new.txt.j2").write_text("Hello\n{% if customer.name %}\n{{ customer.name }\n")
    [problem] = check_config_errors(overridden(write_config, template_dir))
    assert "ack_new.txt.j2 line 3:" in problem


def test_a_typo_in_a_branch_the_sample_does_not_take_is_caught(
    write_config: Callable[..., Path], template_dir: Path
) -> None:
    (template_dir / "ack_new.txt.j2").write_text("Hi\n{% if ticket.number == 7 %}\n{{ custmer.name }}\n{% endif %}\n")
    [problem] = check_config_errors(overridden(write_config, template_dir))
    assert "ack_new.txt.j2 line 3: 'custmer' is undefined" in problem


def test_a_bad_attribute_is_caught_with_its_line(write_config: Callable[..., Path], template_dir: Path) -> None:
    (template_dir / "ack_new.html.j2").write_text("<p>\n\n{{ customer.nmae }}</p>\n")
    [problem] = check_config_errors(overridden(write_config, template_dir))
    assert "ack_new.html.j2 line 3:" in problem and "nmae" in problem


def test_every_problem_is_one_line_and_variant_files_are_checked(
    write_config: Callable[..., Path], template_dir: Path
) -> None:
    (template_dir / "ack_new.txt.j2").write_text(TYPO_TEXT)
    (template_dir / "ack_new.html.j2").write_text(TYPO_HTML)
    (template_dir / "ack_new.de.txt.j2").write_text("Hallo {{ kunde.name }},\n")  # another language's file
    problems = check_config_errors(overridden(write_config, template_dir))
    assert len(problems) == 3
    assert any("ack_new.de.txt.j2 line 1: 'kunde' is undefined" in p for p in problems)


def test_serve_refuses_to_start_with_a_template_typo(write_config: Callable[..., Path], template_dir: Path) -> None:
    (template_dir / "ack_new.txt.j2").write_text(TYPO_TEXT)
    config = overridden(write_config, template_dir)
    with pytest.raises(ConfigError) as caught:
        App(load(config)).prepare(upgrade=True)
    [problem] = caught.value.problems
    assert "ack_new.txt.j2 line 4: 'custmer' is undefined" in problem
    result = run_cli(config, "serve")
    assert result.returncode == 78 and b"'custmer' is undefined" in result.stderr


def test_the_rules_context_is_the_sample_context() -> None:
    """One definition of the keys: a template using every sample value renders at run time too."""
    context = mail_context(ticket_number=5, ticket_subject="s", tag="[#5]", status="new",
                           customer=Address("A", "a@customer.example"), mailbox=Address("S", "s@example.com"))
    for sample in sample_contexts():
        assert set(sample) == set(context)
        for key, value in sample.items():
            if isinstance(value, dict):
                assert set(value) == set(context[key]), key


# -- run time -----------------------------------------------------------------


def test_a_render_failure_at_run_time_keeps_the_ticket_and_fails_the_mail(
    make_app: Callable[..., App], write_config: Callable[..., Path], template_dir: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(settings_override=load(overridden(write_config, template_dir)))  # prepare() passes
    typo = template_dir / "ack_new.txt.j2"
    typo.write_text(TYPO_TEXT)  # the override changes after start-up
    later = os.stat(typo).st_mtime + 5
    os.utime(typo, (later, later))

    number, decision = ingest(app, mail(message_id="typo@customer.example"))
    assert decision == "new_ticket" and number is not None
    with app.db.transaction() as s:
        assert s.get(Ticket, number) is not None
        [row] = s.execute(select(OutboxRow)).scalars().all()
        assert (row.state, row.kind, row.ticket_number, row.content) == (OutboxState.FAILED, "ack_new", number, b"")
        assert row.last_error is not None
        assert "ack_new.txt.j2 line 4: 'custmer' is undefined" in row.last_error
        assert row.subject.endswith("Printer on fire")
        outbound = s.execute(select(Message).where(Message.direction == Direction.OUT)).scalars().all()
        assert outbound == []
        details = s.execute(select(Event.detail).where(Event.kind == "queue_failed")).scalars().all()
        assert len(details) == 1 and "'custmer' is undefined" in details[0]
        row_id = row.id
    assert any(r.levelname == "ERROR" and "'custmer' is undefined" in r.getMessage() for r in caplog.records)

    flushed = app.sender.flush()
    assert flushed.sent == flushed.failed == flushed.retried == 0
    maildir = tmp_path / "outbox"
    assert not maildir.exists() or not any(p.is_file() for p in maildir.rglob("*"))
    retried = app.sender.retry(row_id)  # `outbox retry` cannot send what was never rendered
    assert retried is not None and retried.state == OutboxState.FAILED
    assert app.sender.flush().sent == 0


def test_an_injected_render_failure_is_recorded_the_same_way(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str, context: object, language: str = "en") -> tuple[str, str]:
        raise RenderError(f"templates: {name}.html.j2 line 2: 'dict object' has no attribute 'x'")

    monkeypatch.setattr(app.renderer, "render", broken)
    number, decision = ingest(app, mail())
    assert decision == "new_ticket"
    with app.db.transaction() as s:
        [row] = s.execute(select(OutboxRow)).scalars().all()
        assert row.state == OutboxState.FAILED and row.ticket_number == number
        assert row.last_error == "templates: ack_new.html.j2 line 2: 'dict object' has no attribute 'x'"
    assert app.sender.flush().sent == 0


def test_run_time_errors_name_the_file_and_line(template_dir: Path) -> None:
    (template_dir / "ack_new.html.j2").write_text(TYPO_HTML)
    with pytest.raises(RenderError) as caught:
        Renderer(template_dir).render("ack_new", sample_contexts()[0])
    assert str(caught.value) == f"templates: {template_dir / 'ack_new.html.j2'} line 3: 'custmer' is undefined"


# -- languages ----------------------------------------------------------------

def test_every_shipped_template_exists_in_english_and_german() -> None:
    shipped = {p.name for p in _default_dir().glob("*.j2")}
    for kind in TEMPLATES:
        for suffix in ("txt", "html"):
            assert f"{kind}.{suffix}.j2" in shipped
            assert f"{kind}.de.{suffix}.j2" in shipped, f"{kind} has no German {suffix} template"


def test_a_queue_in_german_acknowledges_in_german(make_app: Callable[..., App],
                                                  write_config: Callable[..., Path]) -> None:
    config = write_config(extra='[[queues]]\nname = "support"\nlanguage = "de"\n')
    app = make_app(settings_override=load(config))
    ingest(app, mail(subject="Drucker brennt", body="Drucker brennt.\n"))  # too short to tell: the queue's
    with app.db.transaction() as session:
        row = session.execute(select(OutboxRow).where(OutboxRow.kind == "ack_new")).scalar_one()
    import email

    parsed = email.message_from_bytes(row.content)
    text = next(p for p in parsed.walk() if p.get_content_type() == "text/plain").get_payload(decode=True)
    assert "vielen Dank" in text.decode("utf-8") and "Drucker brennt" in text.decode("utf-8")


def test_a_language_without_its_own_file_falls_back_to_english(template_dir: Path) -> None:
    context = sample_contexts()[0]
    text, _html = Renderer(template_dir).render("ack_new", context, "fr")
    assert text.startswith("Hello")
    text, _html = Renderer(template_dir).render("ack_new", context, "de")
    assert text.startswith("Guten Tag")
