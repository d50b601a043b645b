"""The shape of a rule (after GNU Mailman 3's rules): a name, a description and one small check."""

from __future__ import annotations

from typing import Protocol

from mailticket.rules.actions import Action
from mailticket.rules.facts import Facts


class Rule(Protocol):
    """``check`` is pure: it looks at the facts and returns what it asks for ([] when it does not hit).

    ``group`` lets a ``Stop`` action end the rules of one group ("routing") while the rules
    that keep mail safe ("reaction") still run.
    """

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def group(self) -> str: ...

    def check(self, facts: Facts) -> list[Action]: ...
