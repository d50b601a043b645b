"""Delivery of rendered mail: a maildir folder, or an SMTP server.

``send(mail_from, recipients, content, on_handover)`` returns on success.
``on_handover`` is called exactly once, at the last moment before delivery
becomes possible: for SMTP after MAIL FROM and RCPT TO were accepted and the
server's 354 invites the body, for a maildir once the file is written and
fsynced in tmp/, right before its rename into new/. Until then the mail
certainly was not delivered; after it, it may have been. If ``on_handover``
raises, the transport abandons the mail (hangs up mid-DATA, deletes the tmp/
file) and lets the exception through.

Errors say whether the mail went out:

- ``TemporaryError`` (4xx, connection trouble, a full disk) and
  ``PermanentError`` (5xx): it was not delivered, whenever they are raised.
  After the hand-over they are raised only for a clear answer (the server's
  reply to the body, a failed rename).
- ``HandoverError``: the hand-over began and did not finish cleanly (the
  connection dropped before the server's answer to the body, new/ could not
  be fsynced): it may have been delivered.
- Anything else is a bug; whether it went out is told by whether
  ``on_handover`` ran.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mailticket.errors import MailticketError, PermanentError, TemporaryError
from mailticket.settings import OutboundSettings, SmtpTransportSettings


class HandoverError(MailticketError):
    """The hand-over began and did not finish cleanly: the mail may have been delivered."""


class Transport(Protocol):
    def send(self, mail_from: str, recipients: list[str], content: bytes,
             on_handover: Callable[[], None]) -> None: ...

    def close(self) -> None: ...


class MaildirTransport:
    """Writes each mail into a maildir: tmp/, fsync, rename into new/, fsync new/.

    ``write`` and ``fsync`` are the system calls, replaceable so tests can fill
    the disk or watch what was made durable.
    """

    def __init__(self, path: Path, *, write: Callable[[int, memoryview], int] = os.write,
                 fsync: Callable[[int], None] = os.fsync) -> None:
        self.path = path
        self._write = write
        self._fsync = fsync

    def send(self, mail_from: str, recipients: list[str], content: bytes,
             on_handover: Callable[[], None]) -> None:
        tmp = self._write_tmp(content)
        try:
            on_handover()
        except BaseException:
            _unlink(tmp)
            raise
        new = self.path / "new" / tmp.name
        try:
            os.rename(tmp, new)  # atomic: on error the mail is not in new/
        except OSError as exc:
            _unlink(tmp)
            raise TemporaryError(f"maildir {self.path}: moving into new/: {exc.strerror or exc}") from exc
        try:
            self._fsync_dir(new.parent)
        except OSError as exc:
            raise HandoverError(f"maildir {self.path}: {new.name} is in new/ but fsync of new/ failed: "
                                f"{exc.strerror or exc}") from exc

    def _write_tmp(self, content: bytes) -> Path:
        """The whole mail, durable in tmp/; TemporaryError (nothing left behind) when it cannot be."""
        tmp = self.path / "tmp" / _unique_name()
        try:
            self._make_folders()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise TemporaryError(f"maildir {self.path}: {exc.strerror or exc}") from exc
        try:
            try:
                data = memoryview(content)
                while data:
                    written = self._write(fd, data)
                    if written <= 0:
                        raise OSError(errno.EIO, "write() wrote nothing")
                    data = data[written:]
                self._fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            _unlink(tmp)
            raise TemporaryError(f"maildir {self.path}: writing {tmp.name}: {exc.strerror or exc}") from exc
        return tmp

    def _make_folders(self) -> None:
        created = False
        for folder in (self.path, self.path / "tmp", self.path / "new", self.path / "cur"):
            if not folder.is_dir():
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                created = True
        if created:
            self._fsync_dir(self.path)

    def _fsync_dir(self, folder: Path) -> None:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        pass


def _unique_name() -> str:
    """A maildir file name: time, process, a random part, host (``/`` and ``:`` escaped)."""
    now = time.time()
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}R{uuid.uuid4().hex}.{host}"


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):  # a stray file in tmp/ is never delivered; readers clean tmp/ up
        path.unlink(missing_ok=True)


class SmtpTransport:
    """One SMTP connection per flush, reused for its mails.

    The SMTP steps are taken one by one (not ``sendmail``) so the hand-over
    can be marked between the server's 354 and the body.
    """

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

    def send(self, mail_from: str, recipients: list[str], content: bytes,
             on_handover: Callable[[], None]) -> None:
        if self._client is None:
            self._client = self._connect()
        client = self._client
        try:
            self._start_data(client, mail_from, recipients, len(content))
        except (TemporaryError, PermanentError):
            self.close()
            raise
        except smtplib.SMTPResponseException as exc:
            self.close()
            raise _classify(exc.smtp_code, exc.smtp_error, "server refused") from exc
        except (OSError, smtplib.SMTPException) as exc:  # timeouts are OSErrors
            self.close()
            raise TemporaryError(f"smtp connection: {exc}") from exc
        try:
            on_handover()
        except BaseException:
            self._hang_up()  # without the final dot the server discards the mail
            raise
        try:
            client.send(_dot_stuffed(content))
            code, reply = client.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            self._hang_up()
            raise HandoverError(f"smtp connection lost after the mail was sent, before the server's "
                                f"answer: {exc}") from exc
        if code != 250:
            self.close()
            raise _classify(code, reply, "server refused")

    @staticmethod
    def _start_data(client: smtplib.SMTP, mail_from: str, recipients: list[str], size: int) -> None:
        """MAIL FROM, RCPT TO each, DATA: returns at the 354, raises for any other answer.

        Every recipient must be accepted before the body goes out, so a retry never
        reaches one of them twice.
        """
        client.ehlo_or_helo_if_needed()
        options = [f"SIZE={size}"] if client.does_esmtp and client.has_extn("size") else []
        code, reply = client.mail(mail_from, options)
        if code != 250:
            raise _classify(code, reply, "sender refused")
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            if code not in (250, 251):
                raise _classify(code, reply, "recipient refused")
        code, reply = client.docmd("DATA")
        if code != 354:
            raise _classify(code, reply, "server refused DATA")

    def _hang_up(self) -> None:
        """Drop the connection without QUIT (mid-DATA a QUIT would be part of the body)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.quit()
            except (OSError, smtplib.SMTPException):
                self._client.close()
            self._client = None


def _dot_stuffed(content: bytes) -> bytes:
    """The body as DATA carries it: leading dots doubled, ended by CRLF . CRLF (as smtplib.data)."""
    data = re.sub(rb"(?m)^\.", b"..", content)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


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
