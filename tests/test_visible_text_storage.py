"""What `tickets show` says of a message's text: what the author wrote, the whole text with --full, and a
flag (not the quote) for a mail that is nothing but a quote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mailticket.app import App
from mailticket.settings import load
from tests.conftest import as_json, ingest, mail, run_cli


def test_visible_text_full_text_and_quote_only(write_config: Callable[..., Path],
                                               make_app: Callable[..., App]) -> None:
    config = write_config()
    app = make_app(settings_override=load(config))
    number, _ = ingest(app, mail(subject="Printer on fire", message_id="first@customer.example",
                                 body="It is on fire.\n\nOn Mon, 2 Nov 2026, Support <support@example.com> wrote:\n"
                                      "> earlier text\n"))
    ingest(app, mail(subject=f"Re: [#{number}] Printer on fire", message_id="quote@customer.example",
                     body="On Mon, 2 Nov 2026, Support <support@example.com> wrote:\n> only quoted\n> lines\n"))
    shown = as_json(run_cli(config, "tickets", "show", str(number), "--json"))
    assert isinstance(shown, dict)
    first, quote = (m for m in shown["messages"] if m["direction"] == "in")
    assert (first["visible_text"], first["quote_only"]) == ("It is on fire.", False)
    assert (quote["visible_text"], quote["quote_only"]) == ("", True)
    assert "text" not in first
    full = as_json(run_cli(config, "tickets", "show", str(number), "--json", "--full"))
    assert isinstance(full, dict)
    assert "> earlier text" in full["messages"][0]["text"]
    table = run_cli(config, "tickets", "show", str(number)).stdout.decode()
    assert "only a quote of earlier mail" in table and "only quoted" not in table
