"""Opening an authenticated IMAP connection: TLS as configured, never a silent downgrade."""

from __future__ import annotations

import contextlib
import ssl
import subprocess

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import LoginError

from mailticket.settings import ImapSettings

TOKEN_COMMAND_TIMEOUT = 30.0


class ImapSetupError(Exception):
    """A problem the admin must fix (TLS not offered, login refused, token command failed)."""


def tls_context(settings: ImapSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)


def connect(settings: ImapSettings) -> IMAPClient:
    """A logged-in client; raises ImapSetupError, OSError or imaplib errors."""
    timeout = SocketTimeout(connect=min(settings.timeout, 30.0), read=settings.timeout)
    if settings.tls == "implicit":
        client = IMAPClient(settings.host, settings.port, ssl=True, ssl_context=tls_context(settings), timeout=timeout)
    else:
        client = IMAPClient(settings.host, settings.port, ssl=False, timeout=timeout)
    try:
        if settings.tls == "starttls":
            if not client.has_capability("STARTTLS"):
                raise ImapSetupError(
                    f"{settings.host}:{settings.port} does not offer STARTTLS; not sending the password "
                    'in clear text (use tls = "implicit", or tls = "none" with insecure = true)'
                )
            client.starttls(tls_context(settings))
        _login(client, settings)
    except BaseException:
        drop(client)
        raise
    return client


def _login(client: IMAPClient, settings: ImapSettings) -> None:
    try:
        if settings.oauth2_token_command:
            client.oauth2_login(settings.username, oauth2_token(settings.oauth2_token_command))
        else:
            client.login(settings.username, settings.password or "")
    except LoginError as exc:
        raise ImapSetupError(f"login as {settings.username} at {settings.host} refused: {exc}") from None


def oauth2_token(command: tuple[str, ...]) -> str:
    """Run the configured command; its stdout (stripped) is the access token."""
    try:
        done = subprocess.run(list(command), capture_output=True, timeout=TOKEN_COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImapSetupError(f"oauth2_token_command {command[0]!r} could not run: {exc}") from None
    token = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0 or not token:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise ImapSetupError(f"oauth2_token_command {command[0]!r} failed (exit {done.returncode}): {tail[0]}")
    return token


def drop(client: IMAPClient) -> None:
    """Close the socket without a word to the server."""
    with contextlib.suppress(Exception):  # the connection is being abandoned anyway
        client.shutdown()


def close(client: IMAPClient) -> None:
    """Log out politely when the connection still works; drop it otherwise."""
    try:
        client.logout()
    except Exception:  # dead connection: just drop the socket
        drop(client)
