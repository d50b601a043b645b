"""The SMTP/LMTP listener (aiosmtpd): 250 only after the raw bytes are committed.

- RCPT: only our support addresses (case-insensitive, +extension allowed);
  anything else 550 5.1.1. Never a relay. AUTH is never offered.
- DATA ends only on <CR><LF>.<CR><LF> (aiosmtpd >= 1.4.5 reads CRLF lines
  only), as Postfix's default ``smtpd_forbid_bare_newline = normalize``: a
  bare LF (or CR) inside is a line end, stored as CRLF, and a line after it
  is dot-unstuffed like any other (see ``normalize_line_ends``). So a dot
  line next to a bare line end (LF.LF, CR.CR, LF.CRLF, CRLF.LF) never ends
  the message: whatever follows stays inside the same message's bytes, no
  second message or MAIL FROM can be smuggled, and an old client's bare-LF
  mail is accepted, not bounced.
  The bytes go to the group committer off the event loop and the client
  hears 250 with our queue id after the commit, 451 4.3.0 on any failure
  before it (never aiosmtpd's default 500).
- Long lines: a DATA line over RFC 5321's 1,000 octets is accepted (as
  Postfix does; scripts, webmail and 8-bit bodies send them) and stored as
  received; only ``max_message_size`` answers 552 5.3.4 (never aiosmtpd's
  ``500 Line too long``). DATA is read in bounded chunks: past the size
  limit the rest is drained and dropped, so memory stays within the limit
  even for one endless line. Command lines keep aiosmtpd's limits.
- Limits: SIZE, total and per-IP connections (421 past them), an idle
  timeout for commands and DATA.
- LMTP listeners answer DATA once per recipient.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Session, syntax
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from mailticket.domain import Envelope
from mailticket.errors import ConfigError
from mailticket.ingest.committer import GroupCommitter
from mailticket.settings import Listener, Settings

log = logging.getLogger("mailticket.smtp")

_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_LINE_END = re.compile(rb"(\r\n|\r|\n)")
TEMPFAIL = "451 4.3.0 Temporary failure storing the message, please try again later"
TOO_BIG = "552 5.3.4 Message too big for this system"


def normalize_line_ends(data: bytes) -> bytes:
    """DATA as aiosmtpd unstuffed it -> every line ending in CRLF, as Postfix's ``normalize`` does.

    aiosmtpd splits DATA on CRLF only, ends it only on CRLF.CRLF and removes one
    leading dot from each CRLF line. Here every bare LF becomes CRLF, and so does
    every bare CR: Python's email parser (and so our parse step) takes a bare CR
    as a line end too, so storing CRLF makes the stored bytes say exactly what
    the parser sees (no header hiding behind a CR that a later reader would not
    split on). A line that starts after a bare CR or LF was never unstuffed by
    aiosmtpd, so it loses one leading dot here, as Postfix would do for a line
    after a bare LF: every line of the stored message is unstuffed exactly once,
    whatever ended the line before it. A lone "." after a bare line end thus
    becomes an empty line of the same message; it never ends DATA (that was
    aiosmtpd's CRLF.CRLF alone). Linear time; CRLF-only data comes back as is.
    """
    if _BARE_CR_OR_LF.search(data) is None:
        return data
    parts = _LINE_END.split(data)  # [line, end, line, end, ..., last line]
    out = [parts[0]]
    for index in range(1, len(parts) - 1, 2):
        line = parts[index + 1]
        if parts[index] != b"\r\n" and line.startswith(b"."):
            line = line[1:]
        out.append(line)
    return b"\r\n".join(out)


class InboxHandler:
    """aiosmtpd handler hooks; one per listener."""

    def __init__(self, settings: Settings, committer: GroupCommitter, on_stored: Callable[[], None],
                 lmtp: bool, registry: _Registry) -> None:
        self._settings = settings
        self._committer = committer
        self._on_stored = on_stored
        self._lmtp = lmtp
        self._registry = registry

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: SmtpEnvelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [r for r in responses if not r[4:].upper().startswith("AUTH")]

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self._settings.mailbox_for(address) is None:
            return f"550 5.1.1 <{address}>: no such mailbox here"
        if address.lower() in (r.lower() for r in envelope.rcpt_tos):
            return "250 2.1.5 OK (duplicate recipient)"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        content = normalize_line_ends(envelope.original_content or b"")
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        mail_from = envelope.mail_from or ""
        source = "lmtp" if self._lmtp else "smtp"
        intake = Envelope(source, mail_from if mail_from else "<>", tuple(envelope.rcpt_tos), peer)
        self._registry.in_flight += 1
        try:
            accepted = await asyncio.wrap_future(self._committer.submit(content, intake))
        except Exception as exc:
            log.warning("DATA from %s not stored: %s", peer, exc)
            return self._per_recipient(envelope, TEMPFAIL)
        finally:
            self._registry.in_flight -= 1
        self._on_stored()
        note = " (duplicate)" if accepted.duplicate else ""
        return self._per_recipient(envelope, f"250 2.0.0 Ok: queued as {accepted.raw_id}{note}")

    def _per_recipient(self, envelope: SmtpEnvelope, status: str) -> str:
        if not self._lmtp:
            return status
        return "\r\n".join(status for _ in envelope.rcpt_tos)

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session error")
        return TEMPFAIL


class _Registry:
    """Open sessions per IP, and messages being committed right now (event-loop thread only)."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self.active: Counter[str] = Counter()
        self.transports: set[asyncio.BaseTransport] = set()
        self.in_flight = 0

    def admit(self, ip: str) -> str | None:
        if sum(self.active.values()) >= self.total:
            return "421 4.7.0 Too many connections, try again later"
        if self.active[ip] >= self.per_ip:
            return "421 4.7.0 Too many connections from your address, try again later"
        self.active[ip] += 1
        return None

    def release(self, ip: str) -> None:
        self.active[ip] -= 1
        if self.active[ip] <= 0:
            del self.active[ip]


class _Guarded:
    """Mixin for SMTP/LMTP: connection limits, no AUTH, RFC 3463 codes for size errors."""

    _registry: _Registry
    _refused: bool
    _ip: str
    _transport: asyncio.BaseTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if peer else "?"
        refusal = self._registry.admit(self._ip)
        self._refused = refusal is not None
        if refusal is not None:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(refusal.encode("ascii") + b"\r\n")
            transport.close()
            return
        self._transport = transport
        self._registry.transports.add(transport)
        super().connection_made(transport)  # type: ignore[misc]

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._registry.release(self._ip)
        self._registry.transports.discard(self._transport)
        super().connection_lost(error)  # type: ignore[misc]

    async def push(self, status: bytes | str) -> None:
        if isinstance(status, str) and status.startswith("552 Error"):
            status = TOO_BIG
        await super().push(status)  # type: ignore[misc]

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 AUTH not available")


class _LongLines(SMTP):
    """DATA without a line-length limit: only ``data_size_limit`` bounds a message (and memory)."""

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content = await self._read_data()
        if content is None:  # over the size limit, or the connection went away before the end of DATA
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            if self.transport is not None:
                await self.push(TOO_BIG)
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    async def _read_data(self) -> bytes | None:
        """DATA up to CRLF.CRLF, dot-unstuffed on CRLF lines as aiosmtpd does; None past the size limit.

        The StreamReader keeps its small limit (aiosmtpd's ``line_length_limit``), so a long line
        arrives as chunks (LimitOverrunError) that are joined here; nothing is kept past
        ``data_size_limit``: the rest is read and dropped until the end of DATA.
        """
        limit = self.data_size_limit
        lines: list[bytes] = []
        fragments: list[bytes] = []
        size = 0
        too_big = False
        at_line_start = True
        while self.transport is not None:
            try:
                chunk = await self._reader.readuntil(b"\r\n")
            except asyncio.CancelledError:
                log.info("connection lost during DATA")
                self._writer.close()
                raise
            except asyncio.LimitOverrunError as exc:  # a line longer than the reader's limit: one chunk of it
                chunk = await self._reader.read(exc.consumed)
            if at_line_start and chunk == b".\r\n":
                return None if too_big else b"".join(lines)
            at_line_start = chunk.endswith(b"\r\n")
            size += len(chunk)
            if not too_big and limit and size > limit:
                too_big = True
                lines.clear()
                fragments.clear()
            if too_big:
                continue
            fragments.append(chunk)
            if at_line_start:
                line = b"".join(fragments)
                fragments.clear()
                lines.append(line[1:] if line.startswith(b".") else line)
        return None


class GuardedSMTP(_Guarded, _LongLines):
    pass


class GuardedLMTP(_Guarded, _LongLines, LMTP):
    pass


class SmtpListener:
    """All configured listeners on one event loop in a thread of their own."""

    def __init__(self, settings: Settings, committer: GroupCommitter, on_stored: Callable[[], None]) -> None:
        self._settings = settings
        self._committer = committer
        self._on_stored = on_stored
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mailticket-smtp", daemon=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._registry = _Registry(settings.smtp.max_connections, settings.smtp.max_connections_per_ip)
        self.addresses: list[tuple[Listener, tuple[Any, ...]]] = []

    def _tls_context(self) -> ssl.SSLContext | None:
        smtp = self._settings.smtp
        if smtp.tls_cert is None or smtp.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(str(smtp.tls_cert), str(smtp.tls_key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([f"smtp.tls_cert: cannot load {smtp.tls_cert} / {smtp.tls_key}: {exc}"]) from None
        return context

    def _factory(self, listener: Listener, tls: ssl.SSLContext | None) -> Callable[[], SMTP]:
        smtp = self._settings.smtp
        handler = InboxHandler(self._settings, self._committer, self._on_stored, listener.lmtp, self._registry)
        cls = GuardedLMTP if listener.lmtp else GuardedSMTP

        def make() -> SMTP:
            protocol = cls(
                handler,
                hostname=smtp.hostname,
                data_size_limit=smtp.max_message_size,
                enable_SMTPUTF8=True,
                decode_data=False,
                tls_context=tls,
                require_starttls=False,
                auth_require_tls=True,
                timeout=smtp.timeout,
                loop=self._loop,
            )
            protocol._registry = self._registry
            return protocol

        return make

    def start(self) -> None:
        tls = self._tls_context()
        self._thread.start()
        for listener in self._settings.smtp.listen:
            future = asyncio.run_coroutine_threadsafe(
                self._loop.create_server(self._factory(listener, tls), host=listener.host, port=listener.port,
                                         reuse_address=True), self._loop)
            try:
                server = future.result(timeout=30)
            except OSError as exc:
                self.stop()
                raise ConfigError([_bind_error(listener, exc)]) from None
            self._servers.append(server)
            sockname = server.sockets[0].getsockname() if server.sockets else ()
            self.addresses.append((listener, tuple(sockname)))
            log.info("listening for %s on %s", "LMTP" if listener.lmtp else "SMTP", listener)

    def bound_port(self, index: int = 0) -> int:
        """The port a listener got (useful with port 0 in tests)."""
        return int(self.addresses[index][1][1])

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting; let transactions in flight finish (at most ``grace`` seconds)."""
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            for server in self._servers:
                server.close()  # no new connections
            deadline = self._loop.time() + grace
            while self._registry.in_flight and self._loop.time() < deadline:
                await asyncio.sleep(0.05)  # messages being committed get their answer
            for transport in list(self._registry.transports):
                if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
                    transport.write(b"421 4.3.2 Service shutting down, try again later\r\n")
                transport.close()
            for server in self._servers:
                await server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=grace + 5)
        except Exception as exc:  # a stuck client must not keep us from exiting
            log.warning("SMTP listener stop: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def _bind_error(listener: Listener, exc: OSError) -> str:
    if exc.errno == errno.EACCES and listener.port < 1024:
        return (f"smtp.listen: port {listener.port} needs CAP_NET_BIND_SERVICE (AmbientCapabilities= in the "
                "systemd unit) or a port above 1024")
    if exc.errno == errno.EADDRINUSE:
        return f"smtp.listen: {listener} is already in use (another mailticket serve, or an MTA?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"smtp.listen: {listener}: no such address on this machine"
    return f"smtp.listen: cannot listen on {listener}: {exc.strerror or exc}"
