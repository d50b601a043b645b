"""mailticket: an email-to-ticket daemon."""

__version__ = "0.1.0"
