"""ingest.identity: DMARC from a trusted host's Authentication-Results, and DKIM verified by ourselves."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from dkim import dknewkey

from mailticket.domain import Address, ParsedMail
from mailticket.ingest.identity import DmarcResult, aligned, dkim_verify, dmarc_from_headers

TRUSTED = ("MX.example.com",)


def mail(*auth_results: str, sender: str = "alex@example.com") -> ParsedMail:
    headers = tuple(("Authentication-Results", value) for value in auth_results)
    return ParsedMail(
        message_id="1@example.com", in_reply_to=(), references=(), subject="hi",
        from_=Address("Alex", sender) if sender else None, reply_to=(), to=(Address("", "support@example.com"),),
        cc=(), date=None, text="hello", html="", attachments=(),
        headers=(("From", f"Alex <{sender}>"), *headers, ("Subject", "hi")), content_type="text/plain",
    )


def test_trusted_dmarc_pass() -> None:
    result = dmarc_from_headers(mail("mx.example.com; spf=pass smtp.mailfrom=example.com; "
                                     "dmarc=pass (p=reject dis=none) header.from=example.com"), TRUSTED)
    assert result == DmarcResult("pass", "dmarc=pass (p=reject dis=none) header.from=example.com by mx.example.com")
    assert result.passed


def test_trusted_dmarc_fail() -> None:
    result = dmarc_from_headers(mail("mx.example.com; dmarc=fail (p=reject) header.from=example.com"), TRUSTED)
    assert result == DmarcResult("fail", "dmarc=fail (p=reject) header.from=example.com by mx.example.com")


def test_dmarc_pass_for_another_domain_than_from_is_a_fail() -> None:
    result = dmarc_from_headers(mail("mx.example.com; dmarc=pass header.from=evil.example"), TRUSTED)
    assert result.verdict == "fail"
    assert "but From is example.com" in result.detail


def test_untrusted_header_is_ignored_and_said_so() -> None:
    result = dmarc_from_headers(mail("evil.example; dmarc=pass header.from=example.com"), TRUSTED)
    assert result == DmarcResult("none", "no Authentication-Results from a trusted host (mx.example.com); "
                                         "ignored: untrusted evil.example")


def test_sender_written_header_below_ours_does_not_count() -> None:
    result = dmarc_from_headers(mail("evil.example; dmarc=pass header.from=example.com",
                                     "mx.example.com; dmarc=fail header.from=example.com",
                                     "mx.example.com; dmarc=pass header.from=example.com"), TRUSTED)
    assert result.verdict == "fail"  # the topmost trusted one wins
    assert result.detail == "dmarc=fail header.from=example.com by mx.example.com; ignored: untrusted evil.example"


def test_no_header() -> None:
    assert dmarc_from_headers(mail(), TRUSTED) == DmarcResult(
        "none", "no Authentication-Results from a trusted host (mx.example.com)")
    assert dmarc_from_headers(mail("mx.example.com; dmarc=pass header.from=example.com"), ()).verdict == "none"


@pytest.mark.parametrize("value", [
    "mx.example.com; dkim=pass header.d=example.com header.b=abc",
    "mx.example.com; dkim=pass header.d=mail.example.com",  # a subdomain signs for its parent
    "mx.example.com; dkim=pass header.i=@example.com",
    "mx.example.com; dkim=fail header.d=example.com; dkim=pass header.d=EXAMPLE.com",
])
def test_dkim_fallback_aligned_pass(value: str) -> None:
    result = dmarc_from_headers(mail(value), TRUSTED)
    assert result.verdict == "pass", result
    assert "aligns with From example.com" in result.detail and "no dmarc result" in result.detail


@pytest.mark.parametrize("value", [
    "mx.example.com; dkim=pass header.d=other.org",
    "mx.example.com; dkim=pass header.d=evil.com",
    "mx.example.com; dkim=pass header.d=com",
    "mx.example.com; dkim=fail header.d=example.com",
    "mx.example.com; dkim=none",
])
def test_dkim_fallback_unaligned_or_failed(value: str) -> None:
    result = dmarc_from_headers(mail(value), TRUSTED)
    assert result.verdict == "fail", result
    assert "no aligned pass for From example.com" in result.detail


def test_trusted_header_without_dmarc_or_dkim() -> None:
    result = dmarc_from_headers(mail("mx.example.com; spf=pass smtp.mailfrom=example.com"), TRUSTED)
    assert result == DmarcResult("none", "no dmarc or dkim result by mx.example.com (methods: spf)")


def test_malformed_header_is_ignored_and_noted() -> None:
    result = dmarc_from_headers(mail("; ;; ==", "mx.example.com; dmarc=pass header.from=example.com"), TRUSTED)
    assert result.verdict == "pass"
    assert "ignored: malformed (" in result.detail
    assert "\n" not in result.detail


def test_malformed_trusted_header_on_top_stops_the_search() -> None:
    result = dmarc_from_headers(mail("mx.example.com; dmarc", "mx.example.com; dmarc=pass header.from=example.com"),
                                TRUSTED)
    assert result.verdict == "none"
    assert result.detail.startswith("malformed Authentication-Results from trusted host mx.example.com")


def test_folded_header_and_no_from() -> None:
    folded = "mx.example.com;\r\n\tdmarc=pass\r\n header.from=example.com"
    assert dmarc_from_headers(mail(folded), TRUSTED).verdict == "pass"
    assert dmarc_from_headers(mail(folded, sender=""), TRUSTED).verdict == "fail"


def test_alignment() -> None:
    assert aligned("example.com", "EXAMPLE.com")
    assert aligned("mail.example.com", "example.com")
    assert aligned("example.com", "support.example.com")
    assert aligned("@example.com", "example.com.")
    assert not aligned("notexample.com", "example.com")
    assert not aligned("com", "example.com")
    assert not aligned("evil.co.uk", "victim.co.uk")
    assert not aligned("", "example.com")


# --- dkim_verify: real signatures made by dkimpy, DNS answered by the test ---------------------------------------

MESSAGE = (b"From: Alex <alex@example.com>\r\nTo: support@example.com\r\nSubject: the printer\r\n"
           b"Message-ID: <1@example.com>\r\n\r\nIt is on fire again.\r\n")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(PEM private key, DNS TXT record), made with dkimpy's own helpers (they run openssl)."""
    if not Path(dknewkey.OPENSSL_BINARY).exists() and shutil.which("openssl"):
        dknewkey.OPENSSL_BINARY = shutil.which("openssl")
    if not Path(dknewkey.OPENSSL_BINARY).exists():
        pytest.skip("openssl is needed to make an RSA key")
    folder = tmp_path_factory.mktemp("dkim")
    dknewkey.GenRSAKeys(str(folder / "k.key"), verbose=False)
    dknewkey.ExtractRSADnsPublicKey(str(folder / "k.key"), str(folder / "k.dns"), verbose=False)
    return (folder / "k.key").read_bytes(), (folder / "k.dns").read_bytes()


def signed(key: tuple[bytes, bytes], domain: str, message: bytes = MESSAGE) -> bytes:
    return bytes(dkim.sign(message, b"sel", domain.encode(), key[0],
                           include_headers=[b"from", b"to", b"subject", b"message-id"])) + message


def dns_for(key: tuple[bytes, bytes], *domains: str) -> Callable[[bytes], bytes]:
    records = {f"sel._domainkey.{d}.".encode(): key[1] for d in domains}
    return lambda name: records.get(name, b"")


def test_dkim_verify_pass(key: tuple[bytes, bytes]) -> None:
    result = dkim_verify(signed(key, "example.com"), "example.com", dns_for(key, "example.com"))
    assert result == DmarcResult("pass", "dkim=pass d=example.com aligns with From example.com")
    sub = dkim_verify(signed(key, "mail.example.com"), "example.com", dns_for(key, "mail.example.com"))
    assert sub.verdict == "pass"


def test_dkim_verify_tampered_body_fails(key: tuple[bytes, bytes]) -> None:
    raw = signed(key, "example.com").replace(b"on fire", b"all fine")
    result = dkim_verify(raw, "example.com", dns_for(key, "example.com"))
    assert result.verdict == "fail"
    assert "body hash mismatch" in result.detail


def test_dkim_verify_unaligned_domain_fails(key: tuple[bytes, bytes]) -> None:
    asked: list[bytes] = []

    def dns(name: bytes) -> bytes:
        asked.append(name)
        return key[1]

    result = dkim_verify(signed(key, "other.org"), "example.com", dns)
    assert result == DmarcResult("fail", "dkim=fail: d=other.org does not align with example.com")
    assert asked == []  # a signature that could not vouch anyway is not looked up


def test_dkim_verify_never_raises(key: tuple[bytes, bytes]) -> None:
    def broken(name: bytes) -> bytes:
        raise OSError("network is unreachable")

    assert dkim_verify(signed(key, "example.com"), "example.com", broken) == DmarcResult(
        "fail", "dkim=fail: d=example.com: OSError: network is unreachable")
    assert dkim_verify(MESSAGE, "example.com", broken) == DmarcResult("fail", "dkim: no DKIM-Signature")
    assert dkim_verify(b"\x00 not mail", "example.com", broken).verdict == "fail"
    assert dkim_verify(signed(key, "example.com"), "", broken).verdict == "fail"
    wrong_key = dkim_verify(signed(key, "example.com"), "example.com", lambda name: b"v=DKIM1; k=rsa; p=AAAA")
    assert wrong_key.verdict == "fail"
    no_key = dkim_verify(signed(key, "example.com"), "example.com", lambda name: b"")
    assert no_key.verdict == "fail"
