"""Did the sender's domain vouch for this mail? DMARC from our own MTA's Authentication-Results, or DKIM ourselves.

Anyone can write an ``Authentication-Results`` header, so only those whose authserv-id is one of ours
([identity] trusted_authserv_ids) count, and of those only the topmost: our MTA adds its header on top
of whatever the sender wrote. Parsing is authres's (RFC 8601), verifying a signature dkimpy's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import authres
import authres.dmarc
import dkim
import dkim.dnsplug
import dkim.util

from mailticket.domain import ParsedMail

PASS = "pass"
FAIL = "fail"
NONE = "none"  # no trusted result at all

MAX_SIGNATURES = 5  # aligned DKIM signatures we try (each is a DNS lookup)
_DETAIL_CHARS = 300
_FEATURES = authres.FeatureContext(authres.dmarc)
# The authserv-id of a header value, read before (and without) a full parse: a dot-atom up to CFWS or ";".
_AUTHSERV_RE = re.compile(r"\s*([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+)")
# "dmarc=fail (p=reject dis=none)": authres drops comments, the policy one is worth showing.
_DMARC_COMMENT_RE = re.compile(r"\bdmarc\s*=\s*[\w.-]+\s*(\([^()]*\))", re.I)


@dataclass(frozen=True)
class DmarcResult:
    verdict: str  # "pass", "fail", "none" (no trusted result at all)
    detail: str  # one line, for the ticket's history and the logs

    @property
    def passed(self) -> bool:
        return self.verdict == PASS


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _domain_of(value: str) -> str:
    """"user@Example.COM" / "@example.com" / "example.com." -> "example.com"."""
    return value.rpartition("@")[2].strip().strip(".").lower()


def aligned(signing_domain: str, from_domain: str) -> bool:
    """Relaxed alignment without a public-suffix list: equal, or one a subdomain of the other.

    "mail.example.com" signs for "example.com" and the reverse; two siblings ("a.example.com",
    "b.example.com") do not align here, and neither does a bare top-level domain: without the
    public-suffix list, "same last two labels" would let "evil.co.uk" vouch for "victim.co.uk".
    """
    d, f = _domain_of(signing_domain), _domain_of(from_domain)
    if not d or not f:
        return False
    if d == f:
        return True
    shorter, longer = sorted((d, f), key=len)
    return "." in shorter and longer.endswith("." + shorter)


def _property(result: Any, ptype: str, name: str) -> str:
    for prop in getattr(result, "properties", ()):
        if str(prop.type).lower() == ptype and str(prop.name).lower() == name:
            return str(prop.value or "")
    return ""


def _authserv_id(value: str) -> str:
    match = _AUTHSERV_RE.match(value)
    return match.group(1).lower() if match else ""


def dmarc_from_headers(mail: ParsedMail, trusted_authserv_ids: Sequence[str]) -> DmarcResult:
    """The verdict of the topmost Authentication-Results header written by a trusted host."""
    trusted = tuple(dict.fromkeys(t.strip().lower() for t in trusted_authserv_ids if t.strip()))
    ours = ", ".join(trusted) or "none configured"
    from_domain = _domain_of(mail.from_.email) if mail.from_ is not None else ""
    ignored: list[str] = []
    for value in mail.header_all("Authentication-Results"):
        value = " ".join(value.split())
        claimed = _authserv_id(value)
        try:
            header = _FEATURES.parse_value(value)
        except Exception as exc:  # authres.AuthResError, and whatever else a hostile header provokes
            reason = _one_line(str(exc)) or type(exc).__name__
            if claimed in trusted:
                # Our MTA's own header is on top; falling through to a lower one would believe the sender's.
                return DmarcResult(NONE, _one_line(
                    f"malformed Authentication-Results from trusted host {claimed} ({reason}); "
                    "lower ones are not believed"))
            ignored.append(f"malformed ({reason})")
            continue
        authserv = str(header.authserv_id or "").lower()
        if authserv not in trusted:
            ignored.append(f"untrusted {authserv}")
            continue
        result = _judge(header, authserv, from_domain, value)
        if ignored:
            result = DmarcResult(result.verdict, _one_line(f"{result.detail}; ignored: {', '.join(ignored)}"))
        return result
    detail = f"no Authentication-Results from a trusted host ({ours})"
    if ignored:
        detail += f"; ignored: {', '.join(ignored)}"
    return DmarcResult(NONE, _one_line(detail))


def _judge(header: Any, authserv: str, from_domain: str, value: str) -> DmarcResult:
    results = list(header.results)
    dmarc_results = [r for r in results if str(r.method).lower() == "dmarc"]
    if dmarc_results:
        dmarc_result = dmarc_results[0]
        verdict = str(dmarc_result.result).lower()
        header_from = _property(dmarc_result, "header", "from").lower()
        comment_match = _DMARC_COMMENT_RE.search(value)
        comment = f" {comment_match.group(1)}" if comment_match else ""
        detail = f"dmarc={verdict}{comment} header.from={header_from or '?'} by {authserv}"
        if verdict != PASS:
            return DmarcResult(FAIL, _one_line(detail))
        if header_from and from_domain and _domain_of(header_from) != from_domain:
            return DmarcResult(FAIL, _one_line(f"{detail}, but From is {from_domain}"))
        if not from_domain:
            return DmarcResult(FAIL, _one_line(f"{detail}, but the mail has no From address"))
        return DmarcResult(PASS, _one_line(detail))
    dkim_results = [r for r in results if str(r.method).lower() == "dkim"]
    if not dkim_results:
        methods = ", ".join(str(r.method) for r in results) or "none"
        return DmarcResult(NONE, _one_line(f"no dmarc or dkim result by {authserv} (methods: {methods})"))
    seen: list[str] = []
    for dkim_result in dkim_results:
        verdict = str(dkim_result.result).lower()
        signer = _property(dkim_result, "header", "d") or _domain_of(_property(dkim_result, "header", "i"))
        seen.append(f"dkim={verdict} header.d={signer or '?'}")
        if verdict == PASS and from_domain and aligned(signer, from_domain):
            return DmarcResult(PASS, _one_line(f"dkim=pass header.d={signer} aligns with From {from_domain} "
                                               f"by {authserv} (no dmarc result)"))
    return DmarcResult(FAIL, _one_line(f"{'; '.join(seen)} by {authserv}: no aligned pass for From "
                                       f"{from_domain or '(none)'} (no dmarc result)"))


def dkim_verify(raw: bytes, from_domain: str, dnsfunc: Callable[[bytes], bytes] | None = None) -> DmarcResult:
    """Verify the DKIM signatures ourselves: pass when one whose d= aligns with from_domain verifies.

    ``dnsfunc`` maps a TXT name (b"sel._domainkey.example.com.") to its record; None is dkimpy's resolver.
    Never raises: whatever goes wrong is a fail with the reason.
    """
    from_domain = _domain_of(from_domain)
    if not from_domain:
        return DmarcResult(FAIL, "dkim: the mail has no From domain")
    try:
        signer = dkim.DKIM(raw)
        signatures = [value for name, value in signer.headers if name.lower() == b"dkim-signature"]
    except Exception as exc:
        return DmarcResult(FAIL, _one_line(f"dkim: unreadable message ({type(exc).__name__}: {exc})"))
    if not signatures:
        return DmarcResult(FAIL, "dkim: no DKIM-Signature")
    lookup: Callable[..., Any]
    if dnsfunc is None:
        lookup = dkim.dnsplug.get_txt
    else:
        given = dnsfunc

        def lookup(name: bytes, timeout: float = 5) -> bytes:  # dkimpy passes timeout=
            return given(name)

    notes: list[str] = []
    tried = 0
    for idx, value in enumerate(signatures):
        try:
            domain = dkim.util.parse_tag_value(value).get(b"d", b"").decode("ascii", "replace").strip()
        except Exception as exc:
            notes.append(f"signature {idx + 1} unreadable ({type(exc).__name__})")
            continue
        if not aligned(domain, from_domain):
            notes.append(f"d={domain or '?'} does not align with {from_domain}")
            continue
        if tried >= MAX_SIGNATURES:
            notes.append(f"more than {MAX_SIGNATURES} aligned signatures; the rest not tried")
            break
        tried += 1
        try:
            ok = bool(signer.verify(idx=idx, dnsfunc=lookup))
        except Exception as exc:  # dkim.DKIMException, and a dnsfunc's own errors
            notes.append(f"d={domain}: {type(exc).__name__}: {exc}")
            continue
        if ok:
            return DmarcResult(PASS, _one_line(f"dkim=pass d={domain} aligns with From {from_domain}"))
        notes.append(f"d={domain}: signature does not verify")
    return DmarcResult(FAIL, _one_line(f"dkim=fail: {'; '.join(notes)}"))
