"""The error tree of mailticket.

- ``MailticketError``: base of everything we raise on purpose.
  - ``ConfigError``: the configuration is wrong; carries one line per problem,
    each naming the key. The CLI prints them and exits 78 (EX_CONFIG).
    - ``CantCreateError``: a state folder or file cannot be created or written
      (permissions); one line per path, naming the key, the path and the user.
      The CLI exits 73 (EX_CANTCREAT).
  - ``SchemaError``: the database schema is missing or out of date; says which
    command fixes it.
  - ``TemporaryError``: try again later (database locked or down, disk full,
    a 4xx from an SMTP server, a connection error). Sources answer 451 / exit 75.
  - ``PermanentError``: retrying cannot help (a 5xx from an SMTP server).
  - ``BudgetExceeded``: one message's processing ran over its time budget and
    was stopped; the message is quarantined with this reason (replay it once
    the cause is fixed).
"""

from __future__ import annotations


class MailticketError(Exception):
    """Base of the errors mailticket raises on purpose."""


class ConfigError(MailticketError):
    """One or more configuration problems, one line each, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class CantCreateError(ConfigError):
    """A state folder or file mailticket cannot create or write (exit 73, EX_CANTCREAT)."""


class SchemaError(MailticketError):
    """The database schema is missing or out of date."""


class TemporaryError(MailticketError):
    """A failure that may pass: the caller should retry later."""


class PermanentError(MailticketError):
    """A failure that retrying cannot fix."""


class BudgetExceeded(MailticketError):
    """Work stopped because it ran over its time budget (not a TemporaryError: the batch goes on)."""

    def __init__(self, seconds: float, note: str = "") -> None:
        self.seconds = seconds
        super().__init__(f"processing took longer than {seconds:g} s (ingest.budget){note}")
