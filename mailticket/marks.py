"""What marks our own mail: the loop header and signed Message-IDs.

Every outbound Message-ID is ``mt.<ticket>.<random>.<mac>@<domain>``: a
random part (so nobody can guess one) and an HMAC-SHA256 over the ticket
number and the random part with the install's secret (so one that comes
back in In-Reply-To/References can be checked without trusting the
sender). ``verify`` returns the ticket number a genuine one was made for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

LOOP_HEADER = "X-Mailticket-Loop"
# The first line of every mail an agent answers: what they write goes above it; what is below is ours.
REPLY_MARKERS = {
    "en": "-- Reply above this line --",
    "de": "-- Bitte oberhalb dieser Zeile antworten --",
}
OWN_MESSAGE_ID_PREFIX = "mt."

_MAC_HEX = 24  # 96 bits of HMAC-SHA256: more than enough against guessing, short in a header
_SIGNED = re.compile(r"^mt\.(\d{1,12}|x)\.([0-9a-f]{16})\.([0-9a-f]{24})@(.+)$")


class _Keyed:
    """The install key, fetched once, on first use (reading the secret may create it)."""

    def __init__(self, key: Callable[[], bytes]) -> None:
        self._key_source = key
        self._key: bytes | None = None

    def _hmac(self, message: bytes, hex_digits: int) -> str:
        if self._key is None:
            self._key = self._key_source()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:hex_digits]


def _plus_address(mailbox: str, extension: str) -> str:
    local, at, domain = mailbox.strip().rpartition("@")
    if not at or not local or not domain or "+" in local:
        raise ValueError(f"not a mailbox address: {mailbox!r}")
    return f"{local}+{extension}@{domain}"


def _extensions(mailboxes: Iterable[str], recipients: Iterable[str], prefix: str) -> Iterator[str]:
    """The ``+extension`` (lower-cased) of each recipient at one of our mailboxes that starts with ``prefix``."""
    ours = {m.strip().lower() for m in mailboxes}
    for recipient in recipients:
        local, at, domain = recipient.strip().strip("<>").lower().rpartition("@")
        base, plus, extension = local.partition("+")
        if at and plus and f"{base}@{domain}" in ours and extension.startswith(prefix):
            yield extension


class MessageIdSigner(_Keyed):
    """Makes and checks our outbound Message-IDs; ``key`` is called once, on first use."""

    def __init__(self, domain: str, key: Callable[[], bytes]) -> None:
        super().__init__(key)
        self._domain = domain.lower()

    def _mac(self, ticket: str, nonce: str) -> str:
        return self._hmac(f"message-id:{ticket}.{nonce}@{self._domain}".encode("ascii"), _MAC_HEX)

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


# --- Signed reply tokens ------------------------------------------------------------------------------------
#
# A notification to an agent carries ``Reply-To: support+<token>@example.com``. The token is
#
#     r.<ticket>.<agent key>.<issued>[.h<held id>].<mac>
#
# with the numbers (ticket, issued as POSIX seconds, held reply id) in lower-case base 36, the agent key the
# first 8 hex digits of sha256(agent address) and the MAC 20 hex digits (80 bits) of HMAC-SHA256 over
# ``reply-token:`` + everything before ``.<mac>``. Only [a-z0-9.]: MTAs may lower-case a local part, and
# "+"/"-" are recipient delimiters. Base 36 keeps it short: at most 46 characters without a held id and 54
# with one (tickets and held ids below 36**6 ≈ 2.1 billion, issue times before 36**7 s ≈ year 4450), so
# ``support+<token>`` stays within the 64 characters a local part may have.

REPLY_TOKEN_PREFIX = "r."

_TOKEN_MAC_HEX = 20
_TOKEN_MAX_NUMBER = 36**6 - 1
_TOKEN_MAX_ISSUED = 36**7 - 1
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_NUM = r"(0|[1-9a-z][0-9a-z]{0,5})"  # canonical base 36: no leading zeros
_TOKEN = re.compile(
    rf"^(r\.{_NUM}\.([0-9a-f]{{8}})\.(0|[1-9a-z][0-9a-z]{{0,6}})(?:\.h{_NUM})?)\.([0-9a-f]{{{_TOKEN_MAC_HEX}}})$"
)
_TOKEN_CHARS = re.compile(r"^[a-z0-9.]+$")


def _to_b36(number: int) -> str:
    digits = ""
    while True:
        number, rest = divmod(number, 36)
        digits = _B36[rest] + digits
        if number == 0:
            return digits


@dataclass(frozen=True)
class ReplyToken:
    """What a genuine reply token says."""

    ticket: int
    agent_key: str  # ReplyTokenSigner.agent_key(address)
    issued: dt.datetime  # aware UTC, second precision
    held: int | None = None  # a held reply's messages.id (collision tokens)


class ReplyTokenSigner(_Keyed):
    """Makes and checks the tokens in agents' Reply-To addresses; ``key`` is called once, on first use.

    Stateless: everything the token says is in it, and the MAC (a different message prefix than
    Message-IDs, so one can never pass for the other) shows this install made it. Whether it is still
    fresh enough, or the agent still assigned, is the caller's policy.
    """

    def _mac(self, body: str) -> str:
        return self._hmac(b"reply-token:" + body.encode("ascii"), _TOKEN_MAC_HEX)

    @staticmethod
    def agent_key(address: str) -> str:
        """8 hex digits of sha256 of the lower-cased address: names the agent without spelling the address out."""
        return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()[:8]

    def make(self, ticket: int, agent: str, issued: dt.datetime, held: int | None = None) -> str:
        """The token; ValueError for a naive ``issued`` or numbers out of range."""
        if issued.tzinfo is None or issued.utcoffset() is None:
            raise ValueError("issued must be an aware datetime")
        seconds = int(issued.timestamp())
        if not 0 <= ticket <= _TOKEN_MAX_NUMBER:
            raise ValueError(f"ticket number out of range for a reply token: {ticket}")
        if held is not None and not 0 <= held <= _TOKEN_MAX_NUMBER:
            raise ValueError(f"held id out of range for a reply token: {held}")
        if not 0 <= seconds <= _TOKEN_MAX_ISSUED:
            raise ValueError(f"issue time out of range for a reply token: {issued.isoformat()}")
        body = f"{REPLY_TOKEN_PREFIX}{_to_b36(ticket)}.{self.agent_key(agent)}.{_to_b36(seconds)}"
        if held is not None:
            body += f".h{_to_b36(held)}"
        return f"{body}.{self._mac(body)}"

    def read(self, token: str) -> ReplyToken | None:
        """What a genuine token says (any letter case); None when malformed or not signed by this install."""
        match = _TOKEN.match(token.strip().lower()) if len(token) <= 80 else None
        if match is None:
            return None
        body, ticket, agent, issued, held, mac = match.groups()
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        return ReplyToken(
            ticket=int(ticket, 36),
            agent_key=agent,
            issued=dt.datetime.fromtimestamp(int(issued, 36), dt.UTC),
            held=int(held, 36) if held is not None else None,
        )

    def bound_to(self, token: ReplyToken, ticket: int, agent: str) -> bool:
        """The token was made for this ticket and this agent address."""
        same_agent = hmac.compare_digest(token.agent_key, self.agent_key(agent))
        return token.ticket == ticket and same_agent

    @staticmethod
    def address(mailbox: str, token: str) -> str:
        """``support@example.com`` and a token: ``support+<token>@example.com``."""
        if not _TOKEN_CHARS.match(token):
            raise ValueError(f"not a reply token: {token!r}")
        return _plus_address(mailbox, token)

    def find(self, mailboxes: Iterable[str], recipients: Iterable[str]) -> tuple[str, ReplyToken | None] | None:
        """The first recipient ``<local>+<token>@<domain>`` of one of our mailboxes: (token, read(token)).

        read() giving None means a forged or garbled token. Extensions that are not token-shaped
        (``support+billing@``) are ordinary addresses and ignored; None when no recipient has a token.
        """
        for extension in _extensions(mailboxes, recipients, REPLY_TOKEN_PREFIX):
            return extension, self.read(extension)
        return None


# --- Signed satisfaction-survey addresses ---------------------------------------------------------------------
#
# A survey offers ratings 1..5 as mailto links to ``support+csat.<token>.<rating>@example.com``. The token is
# the ticket number in lower-case base 36 followed directly by 20 hex digits (80 bits) of HMAC-SHA256 over
# ``csat-token:`` + that number: a different message prefix than reply tokens and Message-IDs, so neither can
# ever pass for a csat token. The MAC has a fixed length, so the token needs no separator: only [0-9a-z]. The
# rating is not signed: whoever holds the token may give any rating, and a rating out of 1..5 is not genuine.

CSAT_PREFIX = "csat."
CSAT_RATINGS = range(1, 6)

_CSAT_MAC_HEX = 20
_CSAT_TOKEN = re.compile(rf"^{_NUM}([0-9a-f]{{{_CSAT_MAC_HEX}}})$")
_CSAT_RATING = re.compile(r"^[1-9][0-9]{0,2}$")  # canonical: "05" is no rating


@dataclass(frozen=True)
class CsatVote:
    """What a ``csat.`` address says; ``genuine`` False: a forged or garbled token, or a rating out of 1..5
    (``ticket``/``rating`` then say what could be read, 0 when nothing could)."""

    ticket: int
    rating: int
    genuine: bool


class CsatTokenSigner(_Keyed):
    """Makes and checks the tokens of satisfaction-survey addresses; ``key`` is called once, on first use."""

    def _mac(self, number: str) -> str:
        return self._hmac(b"csat-token:" + number.encode("ascii"), _CSAT_MAC_HEX)

    def make(self, ticket: int) -> str:
        """The token for this ticket: lower-case, only [0-9a-z]; ValueError for a number out of range."""
        if not 0 <= ticket <= _TOKEN_MAX_NUMBER:
            raise ValueError(f"ticket number out of range for a csat token: {ticket}")
        number = _to_b36(ticket)
        return number + self._mac(number)

    def address(self, mailbox: str, ticket: int, rating: int) -> str:
        """``support@example.com``, #12, 5: ``support+csat.<token>.5@example.com``."""
        if rating not in CSAT_RATINGS:
            raise ValueError(f"a rating is 1 to 5, not {rating}")
        return _plus_address(mailbox, f"{CSAT_PREFIX}{self.make(ticket)}.{rating}")

    def read(self, extension: str) -> CsatVote:
        """What ``csat.<token>.<rating>`` (any letter case) says."""
        body = extension.strip().lower().removeprefix(CSAT_PREFIX)
        token, _dot, rating_text = body.rpartition(".")
        rating = int(rating_text) if _CSAT_RATING.match(rating_text) else 0
        match = _CSAT_TOKEN.match(token) if len(token) <= 40 else None
        if match is None:
            return CsatVote(0, rating, False)
        number, mac = match.groups()
        genuine = hmac.compare_digest(mac, self._mac(number)) and rating in CSAT_RATINGS
        return CsatVote(int(number, 36), rating, genuine)

    def find(self, mailboxes: Iterable[str], recipients: Iterable[str]) -> CsatVote | None:
        """The vote of the first recipient ``<local>+csat.<token>.<rating>@<domain>`` of one of our mailboxes;
        None when no recipient has a ``csat.`` extension."""
        for extension in _extensions(mailboxes, recipients, CSAT_PREFIX):
            return self.read(extension)
        return None
