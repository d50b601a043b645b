"""Jinja2 rendering of mail templates. Customer text is only ever a variable.

Templates come from the install's override directory first, then the
defaults shipped in the package. StrictUndefined turns a typo into an
error at render time instead of a silently blank mail; the sandbox keeps
templates from reaching into Python objects.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from mailticket.errors import ConfigError


def _default_dir() -> Path:
    return Path(str(resources.files("mailticket.templates")))


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

    def render(self, name: str, context: dict[str, Any]) -> tuple[str, str]:
        """(text, html) for template ``name``: ``name.txt.j2`` and ``name.html.j2``."""
        text = self._env.get_template(f"{name}.txt.j2").render(context)
        html = self._env.get_template(f"{name}.html.j2").render(context)
        return text, html

    def check(self, names: list[str]) -> None:
        """Fail at start-up, not at the first customer mail, when a template is broken."""
        problems = []
        for name in names:
            for suffix in ("txt", "html"):
                try:
                    self._env.get_template(f"{name}.{suffix}.j2")
                except TemplateNotFound:
                    problems.append(f"templates: {name}.{suffix}.j2 not found")
                except Exception as exc:
                    problems.append(f"templates: {name}.{suffix}.j2: {exc}")
        if problems:
            raise ConfigError(problems)
