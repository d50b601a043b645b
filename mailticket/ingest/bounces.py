"""Delivery failure reports: who could not be reached, why, and which of our mails it was.

RFC 3464 reports (``message/delivery-status``) are read field by field. For
the many MTAs that send plain text instead (qmail, Exim without DSN, old
Exchange, provider-specific formats) the text is searched for enhanced
status codes (RFC 3463), SMTP reply codes and the addresses next to them.
The original message's Message-ID comes from the returned message or
headers (``message/rfc822``, ``text/rfc822-headers``) or, failing those, from
a ``Message-ID:`` line quoted in the text.
"""

from __future__ import annotations

import email
import email.policy
import re

from mailticket.domain import BounceReport, FailedRecipient, ParsedMail

# Parts that carry the returned message, or its headers.
RETURNED_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "message/rfc822-headers"})
_FIELD_BLOCK = re.compile(rb"\r?\n\r?\n")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"(?<![\d.])([45]\d\d)(?:[ -]|$)")
_ADDRESS = re.compile(r"<?([A-Za-z0-9._%+=/!#$&'*^`{|}~-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?")
_MESSAGE_ID_LINE = re.compile(r"^\s*Message-ID:\s*<([^>\s]+)>", re.I | re.M)
# Phrases of the text bounces in the corpus (sisimai's set-of-emails, BounceParser's corpus).
FAILURE_TEXT = re.compile(
    r"(could not be delivered|couldn't be delivered|undeliverable|undelivered mail|delivery (has )?failed|"
    r"delivery to the following recipients? failed|permanent(ly)? (error|failure|fatal)|"
    r"user unknown|unknown user|no such (user|recipient|mailbox|address)|mailbox (is )?(unavailable|full|"
    r"not found|does not exist)|recipient address rejected|address rejected|does not exist|"
    r"not a valid (user|recipient|mailbox|address)|invalid recipient|returned mail|failure notice|"
    r"message not delivered|was not delivered|unable to deliver|delivery status notification \(failure\)|"
    r"over quota|quota exceeded|host unknown|domain not found|relay(ing)? denied|"
    r"retry time(out)? exceeded|message (was )?rejected|this is a permanent error|"
    r"i'm sorry to have to inform you|i'm afraid i wasn't able to deliver)",
    re.I,
)


def _fields(block: bytes) -> dict[str, str]:
    message = email.message_from_bytes(block.strip() + b"\n\n", policy=email.policy.compat32)
    return {key.lower(): " ".join(str(value).split()) for key, value in message.items()}


def _address_of(value: str) -> str:
    """'rfc822; Bob@Example.com' -> 'bob@example.com'."""
    value = value.split(";", 1)[1] if ";" in value else value
    return value.strip().strip("<>").strip().lower()[:320]


def _from_delivery_status(data: bytes) -> list[FailedRecipient]:
    recipients: list[FailedRecipient] = []
    for block in _FIELD_BLOCK.split(data)[1:] or _FIELD_BLOCK.split(data):  # first block: per-message fields
        fields = _fields(block)
        recipient = fields.get("final-recipient") or fields.get("original-recipient")
        if not recipient:
            continue
        status_match = _STATUS.search(fields.get("status", ""))
        recipients.append(FailedRecipient(
            address=_address_of(recipient),
            action=fields.get("action", "").lower().split()[0] if fields.get("action") else "",
            status=status_match.group(0) if status_match else "",
            diagnostic=fields.get("diagnostic-code", "")[:500],
        ))
    return recipients


def _from_text(text: str, ours: set[str]) -> list[FailedRecipient]:
    """Addresses on or next to a line with an enhanced status or SMTP code; or the first address in a
    failure paragraph."""
    found: dict[str, FailedRecipient] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines[:2000]):
        window = " ".join(lines[i : i + 3])
        status = _STATUS.search(window)
        code = _SMTP_CODE.search(window)
        if not (status or code or FAILURE_TEXT.search(line)):
            continue
        for match in _ADDRESS.finditer(line):
            address = match.group(1).lower()
            if address in found or address in ours or address.split("@")[0] in {"mailer-daemon", "postmaster"}:
                continue
            text_status = status.group(0) if status else (f"{code.group(1)[0]}.0.0" if code else "")
            found[address] = FailedRecipient(address, "failed" if not text_status.startswith("4") else "delayed",
                                             text_status, " ".join(window.split())[:500])
            if len(found) >= 50:
                return list(found.values())
    return list(found.values())


def _original_message_id(mail: ParsedMail) -> str:
    for attachment in mail.attachments:
        if attachment.content_type in RETURNED_TYPES:
            headers = attachment.content.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
            match = _MESSAGE_ID_LINE.search(headers.decode("utf-8", "replace"))
            if match:
                return match.group(1)
    match = _MESSAGE_ID_LINE.search(mail.text[:200_000])
    return match.group(1) if match else ""


def parse_bounce(mail: ParsedMail, ours: set[str] | None = None) -> BounceReport:
    """What a delivery report says. ``ours``: addresses never taken for the failed recipient
    (the support addresses the report is sent back to)."""
    recipients: list[FailedRecipient] = []
    standard = False
    for attachment in mail.attachments:
        if attachment.content_type in {"message/delivery-status", "message/global-delivery-status"}:
            standard = True
            recipients.extend(_from_delivery_status(attachment.content))
    if not recipients:
        recipients = _from_text(mail.text[:200_000], {a.lower() for a in (ours or set())})
    return BounceReport(tuple(recipients), _original_message_id(mail), standard)
