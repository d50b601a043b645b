"""Build the RFC 5322 bytes of an outbound mail.

Headers are set through the standard library's SMTP policy, which
RFC 2047-encodes non-ASCII text and refuses CR/LF in a header value; customer
text is additionally reduced to one clean line before it gets near a header.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime

from mailticket.domain import Address
from mailticket.ingest.classify import LOOP_HEADER, OWN_MESSAGE_ID_PREFIX
from mailticket.ingest.decode import clean_line

MAX_REFERENCES = 20


@dataclass(frozen=True)
class Composed:
    message_id: str  # without brackets
    subject: str
    content: bytes


def new_message_id(domain: str, ticket_number: int | None) -> str:
    ticket = f"{ticket_number}." if ticket_number is not None else ""
    return f"{OWN_MESSAGE_ID_PREFIX}{ticket}{secrets.token_hex(8)}@{domain}"


def header_address(address: Address) -> HeaderAddress:
    """A header address; raises ValueError when the addr-spec cannot be sent to."""
    local, _, domain = address.email.partition("@")
    if not local or not domain or any(ch in address.email for ch in " \t\r\n<>,;\"()"):
        raise ValueError(f"not a deliverable address: {address.email!r}")
    if not address.email.isascii():  # would need SMTPUTF8; RFC 2047 cannot encode an addr-spec
        raise ValueError(f"not deliverable without SMTPUTF8: {address.email!r}")
    return HeaderAddress(display_name=clean_line(address.name)[:200], username=local, domain=domain)


def compose(
    *,
    sender: Address,
    recipient: Address,
    subject: str,
    text: str,
    html: str,
    message_id_domain: str,
    loop_token: str,
    ticket_number: int | None,
    now: dt.datetime,
    in_reply_to: str = "",
    references: tuple[str, ...] = (),
    auto_submitted: str = "auto-replied",
) -> Composed:
    message_id = new_message_id(message_id_domain, ticket_number)
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = header_address(sender)
    msg["To"] = header_address(recipient)
    clean_subject = clean_line(subject)[:900]
    msg["Subject"] = clean_subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
        refs = [*references, in_reply_to][-MAX_REFERENCES:]
        msg["References"] = " ".join(f"<{r}>" for r in dict.fromkeys(refs))
    if auto_submitted:
        msg["Auto-Submitted"] = auto_submitted
        msg["X-Auto-Response-Suppress"] = "All"
    msg[LOOP_HEADER] = loop_token
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return Composed(message_id, clean_subject, msg.as_bytes())
