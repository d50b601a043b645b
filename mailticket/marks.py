"""What marks our own mail: the loop header and signed Message-IDs.

Every outbound Message-ID is ``mt.<ticket>.<random>.<mac>@<domain>``: a
random part (so nobody can guess one) and an HMAC-SHA256 over the ticket
number and the random part with the install's secret (so one that comes
back in In-Reply-To/References can be checked without trusting the
sender). ``verify`` returns the ticket number a genuine one was made for.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

LOOP_HEADER = "X-Mailticket-Loop"
OWN_MESSAGE_ID_PREFIX = "mt."

_MAC_HEX = 24  # 96 bits of HMAC-SHA256: more than enough against guessing, short in a header
_SIGNED = re.compile(r"^mt\.(\d{1,12}|x)\.([0-9a-f]{16})\.([0-9a-f]{24})@(.+)$")


class MessageIdSigner:
    """Makes and checks our outbound Message-IDs; ``key`` is called once, on first use."""

    def __init__(self, domain: str, key: Callable[[], bytes]) -> None:
        self._domain = domain.lower()
        self._key_source = key
        self._key: bytes | None = None

    def _mac(self, ticket: str, nonce: str) -> str:
        if self._key is None:
            self._key = self._key_source()
        message = f"message-id:{ticket}.{nonce}@{self._domain}".encode("ascii")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:_MAC_HEX]

    def new(self, ticket_number: int | None) -> str:
        ticket = str(ticket_number) if ticket_number is not None else "x"
        nonce = secrets.token_hex(8)
        return f"{OWN_MESSAGE_ID_PREFIX}{ticket}.{nonce}.{self._mac(ticket, nonce)}@{self._domain}"

    def verify(self, message_id: str) -> int | None:
        """The ticket number of a genuine Message-ID of ours (ticket-less ones give 0); None otherwise."""
        match = _SIGNED.match(message_id.lower())
        if match is None or match.group(4) != self._domain:
            return None
        ticket, nonce, mac = match.group(1), match.group(2), match.group(3)
        if not hmac.compare_digest(mac, self._mac(ticket, nonce)):
            return None
        return 0 if ticket == "x" else int(ticket)

    def looks_ours(self, message_id: str) -> bool:
        """Our prefix and domain, signed or not (older mail, forgeries): used only to spot loops."""
        mid = message_id.lower()
        return mid.startswith(OWN_MESSAGE_ID_PREFIX) and mid.endswith("@" + self._domain)
