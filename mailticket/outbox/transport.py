"""Delivery of rendered mail: a maildir folder, or an SMTP server.

``send`` returns on success, raises TemporaryError for what may pass (4xx,
connection trouble) and PermanentError for what will not (5xx), each with
the server's own words.
"""

from __future__ import annotations

import mailbox
import smtplib
import ssl
from pathlib import Path
from typing import Protocol

from mailticket.errors import PermanentError, TemporaryError
from mailticket.settings import OutboundSettings, SmtpTransportSettings


class Transport(Protocol):
    def send(self, mail_from: str, recipients: list[str], content: bytes) -> None: ...

    def close(self) -> None: ...


class MaildirTransport:
    """Writes each mail into a maildir (tmp/ then new/, atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, mail_from: str, recipients: list[str], content: bytes) -> None:
        try:
            box = mailbox.Maildir(str(self.path), create=True)
            box.add(content)
        except OSError as exc:
            raise TemporaryError(f"maildir {self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        pass


class SmtpTransport:
    """One SMTP connection per flush, reused for its mails."""

    def __init__(self, settings: SmtpTransportSettings) -> None:
        self._settings = settings
        self._client: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self._settings
        context = ssl.create_default_context()
        try:
            if s.security == "implicit":
                client: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.security == "starttls":
                    # starttls() raises when the server does not offer it: never a silent downgrade.
                    client.starttls(context=context)
            if s.username:
                client.login(s.username, s.password or "")
            return client
        except smtplib.SMTPNotSupportedError as exc:
            raise TemporaryError(f"smtp {s.host}:{s.port}: STARTTLS required but not offered") from exc
        except smtplib.SMTPAuthenticationError as exc:
            detail = f"{exc.smtp_code} {_text(exc.smtp_error)}"
            raise TemporaryError(f"smtp {s.host}:{s.port}: login refused: {detail}") from exc
        except smtplib.SMTPResponseException as exc:
            raise _classify(exc.smtp_code, exc.smtp_error, f"smtp {s.host}:{s.port}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryError(f"smtp {s.host}:{s.port}: {exc}") from exc

    def send(self, mail_from: str, recipients: list[str], content: bytes) -> None:
        if self._client is None:
            self._client = self._connect()
        try:
            refused = self._client.sendmail(mail_from, recipients, content)
        except smtplib.SMTPRecipientsRefused as exc:
            self.close()
            code, message = next(iter(exc.recipients.values()))
            raise _classify(code, message, "recipient refused") from exc
        except smtplib.SMTPResponseException as exc:
            self.close()
            raise _classify(exc.smtp_code, exc.smtp_error, "server refused") from exc
        except (TimeoutError, OSError, smtplib.SMTPException) as exc:
            self.close()
            raise TemporaryError(f"smtp connection: {exc}") from exc
        if refused:
            code, message = next(iter(refused.values()))
            raise _classify(code, message, "recipient refused")

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.quit()
            except (OSError, smtplib.SMTPException):
                self._client.close()
            self._client = None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _classify(code: int, message: bytes | str, what: str) -> TemporaryError | PermanentError:
    detail = f"{what}: {code} {_text(message)}"
    return PermanentError(detail) if 500 <= code < 600 else TemporaryError(detail)


def make_transport(settings: OutboundSettings) -> Transport:
    if settings.smtp is not None:
        return SmtpTransport(settings.smtp)
    assert settings.maildir is not None
    return MaildirTransport(settings.maildir)
