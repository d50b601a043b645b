"""TOML configuration -> frozen, validated settings.

Every problem becomes one line naming its key; ``load`` raises ``ConfigError``
with all of them at once, so an admin fixes a file in one pass.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import socket
import string
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from mailticket.domain import PRIORITIES, VerdictKind
from mailticket.errors import ConfigError

ENV_CONFIG = "MAILTICKET_CONFIG"
DEFAULT_CONFIG_NAME = "mailticket.toml"
DEFAULT_STATE_DIR = "var"
DEFAULT_LISTEN = "127.0.0.1:2525"
DEFAULT_ADDRESS = "support@localhost"
SMTP_SCHEMES = {"smtp": "plain", "smtp+starttls": "starttls", "smtps": "implicit"}
_ADDRESS_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


IMAP_TLS = ("implicit", "starttls", "none")


@dataclass(frozen=True)
class ImapSettings:
    """Where one support mailbox is polled: the ``[mailboxes.imap]`` table."""

    host: str
    port: int
    tls: str  # "implicit", "starttls" or "none" (only with insecure = true)
    insecure: bool
    username: str
    password: str | None
    oauth2_token_command: tuple[str, ...] | None  # prints an XOAUTH2 access token on stdout
    folder: str
    move_to: str | None  # after commit: move here; None means flag \Seen and keep
    quarantine_folder: str | None
    idle: bool
    poll_interval: float
    ca_file: Path | None
    timeout: float
    max_message_size: int
    fetch_batch: int

    @property
    def account(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    @property
    def after(self) -> str:
        return f"move:{self.move_to}" if self.move_to else "seen"


@dataclass(frozen=True)
class MailboxSettings:
    address: str  # lower-cased
    name: str
    queue: str
    imap: ImapSettings | None = None
    # The display name of an agent's relayed reply: {agent} and {mailbox} are filled in.
    agent_display: str = "{agent}"


@dataclass(frozen=True)
class AgentSettings:
    address: str  # lower-cased
    name: str
    aliases: tuple[str, ...] = ()  # other addresses the agent writes from, lower-cased
    skills: tuple[str, ...] = ()  # matched against a routing rule's then.tags by "skills" assignment
    language: str = "en"  # the language of the mail the agent gets (one of LANGUAGES)

    def owns(self, address: str) -> bool:
        return address == self.address or address in self.aliases


ASSIGNMENTS = ("none", "round_robin", "least_open", "skills")
RECEIPTS = ("errors", "always", "never")  # [commands] receipt
LANGUAGES = ("en", "de")  # the languages every template exists in


@dataclass(frozen=True)
class QueueSettings:
    name: str
    assignment: str = "none"  # one of ASSIGNMENTS
    agents: tuple[str, ...] = ()  # agent addresses (primary, lower-cased), in config order
    language: str = "en"  # one of LANGUAGES


@dataclass(frozen=True)
class RoutingWhen:
    """Conditions of one routing rule; None / () means "not asked". All that are asked must hold."""

    subject: re.Pattern[str] | None = None
    body: re.Pattern[str] | None = None
    sender: re.Pattern[str] | None = None  # searched in the sender's address
    sender_domain: tuple[str, ...] = ()  # lower-cased domains; a subdomain matches too
    recipient: re.Pattern[str] | None = None  # searched in each recipient address (with its +extension)
    headers: tuple[tuple[str, re.Pattern[str]], ...] = ()  # (lower-cased header name, pattern): header.NAME
    has_attachment: bool | None = None
    verdict: tuple[str, ...] = ()  # VerdictKind values; any of them
    known_customer: bool | None = None


@dataclass(frozen=True)
class RoutingThen:
    queue: str | None = None
    priority: str | None = None  # low, normal, high, urgent
    tags: tuple[str, ...] = ()
    assignee: str | None = None  # an agent's primary address
    acknowledge: bool | None = None
    hold: bool = False


@dataclass(frozen=True)
class RoutingSettings:
    name: str
    when: RoutingWhen
    then: RoutingThen
    stop: bool = False


@dataclass(frozen=True)
class SmtpTransportSettings:
    host: str
    port: int
    security: str  # "plain", "starttls" or "implicit"
    username: str | None
    password: str | None
    timeout: float


@dataclass(frozen=True)
class OutboundSettings:
    transport: str  # as written, for display
    maildir: Path | None
    smtp: SmtpTransportSettings | None
    from_address: str  # "Name <addr>" or "addr"
    max_attempts: int
    retry_base_seconds: float
    retry_max_seconds: float


@dataclass(frozen=True)
class Listener:
    host: str  # without brackets, also for IPv6
    port: int
    lmtp: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'lmtp:' if self.lmtp else ''}{host}:{self.port}"


@dataclass(frozen=True)
class SmtpListenSettings:
    listen: tuple[Listener, ...]
    max_message_size: int
    hostname: str
    tls_cert: Path | None
    tls_key: Path | None
    max_connections: int
    max_connections_per_ip: int
    timeout: float  # seconds a client may stay silent, within a command or during DATA


DEFAULT_LADDER = ("10/10m", "25/1h", "100/1d")
DEFAULT_NO_AUTO_REPLY = (
    r"no[-_.]?reply", r"do[-_.]?not[-_.]?reply", r"mailer[-_]?daemon", r"post[-_]?master", r"abuse",
    r"bounces?([-+].*)?", r".*-bounces?", r"nobody", r"root", r"majordomo", r"listserv", r".*-request",
    r".*-owner", r"owner-.*",
)
_PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(item: str) -> tuple[int, int] | None:
    """"10/10m" -> (10, 600); units s, m, h, d."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*", item)
    if not match or int(match.group(1)) < 1:
        return None
    return int(match.group(1)), int(match.group(2) or 1) * _PERIOD_UNITS[match.group(3)]


def parse_ladder(items: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """The valid rungs, shortest period first."""
    return tuple(sorted(x for x in (parse_rate(item) for item in items) if x is not None))


@dataclass(frozen=True)
class LimitSettings:
    """Outbound auto-mail limits: ``[limits]``."""

    # (most mails, per seconds), checked per recipient address over every automatic kind
    ladder: tuple[tuple[int, int], ...] = parse_ladder(DEFAULT_LADDER)
    # full-match regexes on the local part: never any automatic mail to these
    no_auto_reply: tuple[str, ...] = DEFAULT_NO_AUTO_REPLY
    bounce_suppress_days: float = 30.0


def _limits(r: _Reader, data: Mapping[str, Any]) -> LimitSettings:
    where = "limits."
    table = r.table(data, "limits")
    r.unknown(table, {"auto_mail_per_recipient", "no_auto_reply", "bounce_suppress_days"}, where)

    def rates(value: Any) -> str | None:
        bad = [x for x in value if not isinstance(x, str) or parse_rate(x) is None]
        return f"{bad[0]!r} is not N/PERIOD (e.g. \"10/10m\", \"100/1d\")" if bad else None

    def patterns(value: Any) -> str | None:
        for item in value:
            try:
                re.compile(str(item))
            except re.error as exc:
                return f"{item!r} is not a regular expression: {exc}"
        return None

    ladder = r.get(table, "auto_mail_per_recipient", list, list(DEFAULT_LADDER), where, rates)
    return LimitSettings(
        ladder=parse_ladder(ladder),
        no_auto_reply=tuple(str(x) for x in r.get(table, "no_auto_reply", list, list(DEFAULT_NO_AUTO_REPLY), where,
                                                  patterns)),
        bounce_suppress_days=float(r.get(table, "bounce_suppress_days", (int, float), 30, where,
                                         lambda v: None if v >= 0 else "must be 0 or more")),
    )


@dataclass(frozen=True)
class Settings:
    source: str  # where the settings came from: a path, or "embedded default"
    base_dir: Path  # the config file's folder (the working directory for the embedded default)
    state_dir: Path  # where relative database, outbox and secret paths live ([paths] state_dir)
    database_url: str
    mailboxes: tuple[MailboxSettings, ...]
    agents: tuple[AgentSettings, ...]
    outbound: OutboundSettings
    smtp: SmtpListenSettings
    message_id_domain: str
    subject_tag_prefix: str
    loop_token: str
    template_dir: Path | None
    acknowledge_new: bool
    log_level: str
    auto_upgrade: bool = field(default=False)
    limits: LimitSettings = field(default_factory=lambda: LimitSettings())
    identity: IdentitySettings = field(
        default_factory=lambda: IdentitySettings(None, Path(DEFAULT_STATE_DIR, "secret")))
    machine_replies: str = "attach"  # machine mail that answers a ticket: "attach" to it, or "review_ticket"
    queues: tuple[QueueSettings, ...] = ()  # [[queues]]; a queue named nowhere here assigns nobody
    routing: tuple[RoutingSettings, ...] = ()  # [[routing]], in order
    priority_from_headers: bool = False  # [mail] priority_from_headers
    cc_participants: bool = True  # [mail] cc_participants: a customer's Cc become participants
    reopen_days: int = 14  # [lifecycle] reopen_days: a reply to a ticket closed longer ago opens a new one
    command_receipt: str = "errors"  # [commands] receipt: when an agent's commands are answered (RECEIPTS)
    attach_max_bytes: int = 10 * 1024 * 1024  # [notify] attach_max_bytes: larger customer files are a note
    sla: SlaSettings | None = None  # [sla]; None when the config has no [sla] table
    lifecycle: LifecycleSettings = field(default_factory=lambda: LifecycleSettings())
    csat_enabled: bool = True  # [csat] enabled: a survey when a ticket is solved

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def mailbox_for(self, address: str) -> MailboxSettings | None:
        local, _, domain = address.lower().partition("@")
        local = local.split("+", 1)[0]
        wanted = f"{local}@{domain}"
        for mailbox in self.mailboxes:
            if mailbox.address == wanted:
                return mailbox
        return None

    def agent_for(self, address: str) -> AgentSettings | None:
        """The agent who writes from this address (their own or an alias), or None."""
        address = address.lower()
        for agent in self.agents:
            if agent.owns(address):
                return agent
        return None

    def is_agent(self, address: str) -> bool:
        return self.agent_for(address) is not None

    def queue_for(self, name: str) -> QueueSettings | None:
        for queue in self.queues:
            if queue.name == name:
                return queue
        return None

    @property
    def queue_names(self) -> tuple[str, ...]:
        """Every queue a ticket can be in: the [[queues]] tables, then the mailboxes' queues."""
        names = [q.name for q in self.queues] + [m.queue for m in self.mailboxes]
        return tuple(dict.fromkeys(names))

    @property
    def support_addresses(self) -> frozenset[str]:
        return frozenset(m.address for m in self.mailboxes)


def locate_config(explicit: str | None, env: Mapping[str, str], cwd: Path) -> Path | None:
    """-c/--config, else $MAILTICKET_CONFIG, else ./mailticket.toml if present, else None."""
    if explicit:
        return Path(explicit)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    candidate = cwd / DEFAULT_CONFIG_NAME
    return candidate if candidate.is_file() else None


def load(path: Path | None, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Read and validate settings; ``path=None`` means the embedded default."""
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    if path is None:
        return _build({}, "embedded default", cwd, env, embedded=True)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"config: {path}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"config: {path}: cannot read: {exc.strerror}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"config: {path}: not valid TOML: {exc}"]) from None
    return _build(data, str(path), path.resolve().parent, env, embedded=False)


class _Reader:
    """Collects problems while reading typed values out of TOML tables."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def tables(self, data: Mapping[str, Any], key: str, label: str = "") -> list[tuple[int, Mapping[str, Any]]]:
        """An array of tables ([[key]]) as (index, table); a problem for the array or any entry that is not one."""
        label = label or key
        raw = data.get(key, [])
        if not isinstance(raw, list):
            self.problems.append(f"{label}: must be an array of tables ([[{label}]])")
            return []
        entries: list[tuple[int, Mapping[str, Any]]] = []
        for i, entry in enumerate(raw):
            if isinstance(entry, dict):
                entries.append((i, entry))
            else:
                self.problems.append(f"{label}[{i}]: must be a table")
        return entries

    def named(self, entry: Mapping[str, Any], label: str, i: int) -> tuple[str, str]:
        """(the required, non-empty ``name`` of entry i of [[label]], the prefix its problems carry)."""
        name = str(self.get(entry, "name", str, "", _label(label, i, None),
                            lambda v: None if v.strip() else "must not be empty")).strip()
        where = _label(label, i, name)
        if "name" not in entry:
            self.problems.append(f"{where}name: required")
        return name, where

    def unique(self, label: str, names: Sequence[str]) -> None:
        """A problem for each name that appears more than once in [[label]]."""
        seen: set[str] = set()
        for name in names:
            if name in seen:
                self.problems.append(f'{label}: name "{name}" appears twice')
            seen.add(name)

    def table(self, data: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problems.append(f"{where}{key}: must be a table")
            return {}
        return value

    def get(
        self,
        data: Mapping[str, Any],
        key: str,
        kind: type | tuple[type, ...],
        default: Any,
        where: str,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        if key not in data:
            return default
        value = data[key]
        if isinstance(value, bool) and kind is int:
            self.problems.append(f"{where}{key}: must be an integer, not {value!r}")
            return default
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.problems.append(f"{where}{key}: must be {names}, not {value!r}")
            return default
        if check:
            message = check(value)
            if message:
                self.problems.append(f"{where}{key}: {message}")
                return default
        return value

    def unknown(self, data: Mapping[str, Any], known: set[str], where: str) -> None:
        for key in sorted(set(data) - known):
            self.problems.append(f"{where}{key}: unknown key (known: {', '.join(sorted(known))})")


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _address(value: Any) -> str | None:
    return None if _ADDRESS_RE.match(value) else f"{value!r} is not an email address"


def _secret(r: _Reader, data: Mapping[str, Any], where: str, env: Mapping[str, str],
            kind: str = "password") -> str | None:
    """A secret from <kind>_env, <kind>_file or <kind>_credential; never inline."""
    if kind in data:
        r.problems.append(
            f"{where}{kind}: inline {kind}s are not accepted; use {kind}_env, "
            f"{kind}_file or {kind}_credential (systemd LoadCredential)"
        )
    name = r.get(data, f"{kind}_env", str, None, where)
    file = r.get(data, f"{kind}_file", str, None, where)
    credential = r.get(data, f"{kind}_credential", str, None, where)
    if sum(x is not None for x in (name, file, credential)) > 1:
        r.problems.append(f"{where}{kind}_env: give only one of {kind}_env, {kind}_file, {kind}_credential")
        return None
    if name is not None:
        if name not in env:
            r.problems.append(f"{where}{kind}_env: environment variable {name} is not set")
            return None
        return env[name]
    if credential is not None:
        directory = env.get("CREDENTIALS_DIRECTORY")
        if not directory:
            r.problems.append(
                f"{where}{kind}_credential: $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)"
            )
            return None
        file = str(Path(directory) / credential)
    if file is not None:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            r.problems.append(f"{where}{kind}_file: cannot read {file}: {exc.strerror}")
    return None


MIN_SECRET_CHARS = 16


@dataclass(frozen=True)
class IdentitySettings:
    """The install's secret, which signs our Message-IDs (and later reply tokens).

    ``secret`` is set when the config names one; otherwise the secret lives in
    ``generated_file``, made on first use by the composition root.
    """

    secret: str | None
    generated_file: Path
    # What earns an agent's mail its identity: "token" (always), and "dmarc" when asked.
    agent_checks: tuple[str, ...] = ("token",)
    # authserv-ids whose Authentication-Results headers we believe (our own MTA's), lower-cased.
    trusted_authserv_ids: tuple[str, ...] = ()


AGENT_CHECKS = ("token", "dmarc")  # what earns an agent's mail its identity; "token" is always asked
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?")


def _agent_checks(value: Any) -> str | None:
    bad = [x for x in value if not isinstance(x, str) or x not in AGENT_CHECKS]
    if bad:
        return f"{bad[0]!r} is not a check (one of {', '.join(AGENT_CHECKS)})"
    return None if "token" in value else 'must contain "token" (the reply token is always checked)'


def _hosts(value: Any) -> str | None:
    bad = [x for x in value if not isinstance(x, str) or not _HOST_RE.fullmatch(x.strip())]
    return f"{bad[0]!r} is not a host name (the authserv-id your MTA writes, e.g. \"mx.example.com\")" if bad else None


def _identity(r: _Reader, data: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> IdentitySettings:
    where = "identity."
    table = r.table(data, "identity")
    r.unknown(table, {"secret_env", "secret_file", "secret_credential", "agent_checks", "trusted_authserv_ids"},
              where)
    secret = _secret(r, table, where, env, kind="secret")
    if secret is not None and len(secret) < MIN_SECRET_CHARS:
        r.problems.append(f"{where}secret: at least {MIN_SECRET_CHARS} characters are needed "
                          "(e.g. `openssl rand -hex 32`)")
        secret = None
    checks = tuple(dict.fromkeys(r.get(table, "agent_checks", list, ["token"], where, _agent_checks)))
    before = len(r.problems)
    trusted = tuple(dict.fromkeys(x.strip().rstrip(".").lower()
                                  for x in r.get(table, "trusted_authserv_ids", list, [], where, _hosts)))
    if "dmarc" in checks and not trusted and len(r.problems) == before:
        r.problems.append(f'{where}agent_checks: "dmarc" needs {where}trusted_authserv_ids (the authserv-id your '
                          "MTA writes in Authentication-Results; a sender can write that header too)")
    return IdentitySettings(secret, base / "secret", checks, trusted)


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _state_dir(r: _Reader, data: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> Path:
    """[paths] state_dir, else $STATE_DIRECTORY (systemd's StateDirectory=), else var/ beside the config."""
    table = r.table(data, "paths")
    r.unknown(table, {"state_dir"}, "paths.")
    value = r.get(table, "state_dir", str, None, "paths.",
                  lambda v: None if v.strip() else "must not be empty")
    if value is not None:
        return _resolve(base, value)
    systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    return base / DEFAULT_STATE_DIR


def _database(r: _Reader, data: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> str:
    where = "database."
    table = r.table(data, "database")
    r.unknown(table, {"url", "password_env", "password_file", "password_credential", "auto_upgrade"}, where)
    url = str(r.get(table, "url", str, "sqlite:///mailticket.db", where))
    if url.startswith("sqlite"):
        prefix, _, rest = url.partition(":///")
        if not rest:
            r.problems.append(f"{where}url: {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
            return url
        if rest != ":memory:":
            url = f"{prefix}:///{_resolve(base, rest)}"
        return url
    scheme = urlsplit(url).scheme
    if not scheme.startswith("postgresql"):
        r.problems.append(f"{where}url: {url!r}: supported are sqlite:///PATH and postgresql+psycopg://...")
        return url
    if scheme == "postgresql":
        url = "postgresql+psycopg" + url[len("postgresql"):]
    password = _secret(r, table, where, env)
    if password is not None:
        parts = urlsplit(url)
        if parts.password:
            r.problems.append(f"{where}url: holds a password and password_* is set too; keep one")
        else:
            user = parts.username or ""
            netloc = f"{user}:{quote(password, safe='')}@{parts.hostname or ''}"
            if parts.port:
                netloc += f":{parts.port}"
            url = parts._replace(netloc=netloc).geturl()
    return url


def _outbound(
    r: _Reader, data: Mapping[str, Any], base: Path, env: Mapping[str, str], default_from: str
) -> OutboundSettings:
    where = "outbound."
    table = r.table(data, "outbound")
    r.unknown(
        table,
        {"transport", "from", "username", "password_env", "password_file", "password_credential",
         "timeout", "max_attempts", "retry_base_seconds", "retry_max_seconds"},
        where,
    )
    transport = r.get(table, "transport", str, "maildir:outbox", where)
    from_address = r.get(table, "from", str, default_from, where)
    timeout = float(r.get(table, "timeout", (int, float), 30, where, _positive))
    max_attempts = r.get(table, "max_attempts", int, 12, where, _positive)
    retry_base = float(r.get(table, "retry_base_seconds", (int, float), 30, where, _positive))
    retry_max = float(r.get(table, "retry_max_seconds", (int, float), 3600, where, _positive))
    maildir: Path | None = None
    smtp: SmtpTransportSettings | None = None
    if transport.startswith("maildir:"):
        target = transport[len("maildir:"):]
        if not target:
            r.problems.append(f"{where}transport: maildir: needs a path, e.g. maildir:/var/lib/mailticket/outbox")
        maildir = _resolve(base, target)
    else:
        parts = urlsplit(transport)
        security = SMTP_SCHEMES.get(parts.scheme)
        if security is None or not parts.hostname:
            r.problems.append(
                f"{where}transport: {transport!r}: use maildir:PATH, smtp://host:port, "
                "smtp+starttls://host:port or smtps://host:port"
            )
        elif parts.password:
            r.problems.append(
                f"{where}transport: inline credentials are not accepted; use username and password_env/password_file"
            )
        else:
            try:
                port = parts.port or {"plain": 25, "starttls": 587, "implicit": 465}[security]
            except ValueError:
                r.problems.append(f"{where}transport: {transport!r}: bad port")
                port = 25
            username = r.get(table, "username", str, parts.username, where)
            password = _secret(r, table, where, env)
            if username and password is None:
                r.problems.append(f"{where}username: set, but no password_env/password_file/password_credential")
            smtp = SmtpTransportSettings(parts.hostname, port, security, username, password, timeout)
    return OutboundSettings(transport, maildir, smtp, from_address, max_attempts, retry_base, retry_max)


IMAP_KEYS = {
    "host", "port", "tls", "insecure", "username", "password_env", "password_file", "password_credential",
    "oauth2_token_command", "folder", "after", "quarantine_folder", "idle", "poll_interval", "ca_file", "timeout",
    "max_message_size", "fetch_batch",
}


def _folder(value: Any) -> str | None:
    if not value.strip() or any(c in value for c in "\r\n\0"):
        return "must be a folder name"
    return None


def _imap(r: _Reader, table: Mapping[str, Any], where: str, base: Path, env: Mapping[str, str]) -> ImapSettings | None:
    r.unknown(table, IMAP_KEYS, where)
    before = len(r.problems)
    host = r.get(table, "host", str, "", where)
    if not host:
        r.problems.append(f"{where}host: required")
    tls = r.get(table, "tls", str, "implicit", where,
                lambda v: None if v in IMAP_TLS else f"one of {', '.join(IMAP_TLS)}")
    insecure = r.get(table, "insecure", bool, False, where)
    if tls == "none" and not insecure:
        r.problems.append(f"{where}tls: \"none\" sends the password in clear text; set insecure = true to allow it")
    port = r.get(table, "port", int, 993 if tls == "implicit" else 143, where,
                 lambda v: None if 0 < v < 65536 else "must be 1-65535")
    username = r.get(table, "username", str, "", where)
    if not username:
        r.problems.append(f"{where}username: required")
    password = _secret(r, table, where, env)
    command_value = r.get(table, "oauth2_token_command", (str, list), None, where)
    command: tuple[str, ...] | None = None
    if command_value is not None:
        parts = shlex.split(command_value) if isinstance(command_value, str) else command_value
        if not parts or not all(isinstance(x, str) and x for x in parts):
            r.problems.append(f"{where}oauth2_token_command: a command line (string or list of strings)")
        else:
            command = tuple(parts)
    has_password = any(k in table for k in ("password_env", "password_file", "password_credential"))
    if command is not None and has_password:
        r.problems.append(f"{where}oauth2_token_command: give a password_* or an oauth2_token_command, not both")
    elif command is None and not has_password:
        r.problems.append(f"{where}password_env: required (or password_file, password_credential, "
                          "oauth2_token_command)")
    folder = r.get(table, "folder", str, "INBOX", where, _folder)
    after = r.get(table, "after", str, "seen", where)
    move_to: str | None = None
    if after.startswith("move:") and not _folder(after[5:]):
        move_to = after[5:]
        if move_to == folder:
            r.problems.append(f"{where}after: moving to the polled folder itself would fetch each message forever")
    elif after != "seen":
        r.problems.append(f"{where}after: {after!r}: use \"seen\" or \"move:FOLDER\"")
    quarantine = r.get(table, "quarantine_folder", str, None, where, _folder)
    if quarantine is not None and quarantine == folder:
        r.problems.append(f"{where}quarantine_folder: must differ from folder")
    ca_value = r.get(table, "ca_file", str, None, where)
    ca_file = _resolve(base, ca_value) if ca_value else None
    if ca_file is not None and not ca_file.is_file():
        r.problems.append(f"{where}ca_file: {ca_file} is not a readable file")
    settings = ImapSettings(
        host=host,
        port=port,
        tls=tls,
        insecure=insecure,
        username=username,
        password=password,
        oauth2_token_command=command,
        folder=folder,
        move_to=move_to,
        quarantine_folder=quarantine,
        idle=r.get(table, "idle", bool, True, where),
        poll_interval=float(r.get(table, "poll_interval", (int, float), 60, where, _positive)),
        ca_file=ca_file,
        timeout=float(r.get(table, "timeout", (int, float), 60, where, _positive)),
        max_message_size=r.get(table, "max_message_size", int, 50 * 1024 * 1024, where, _positive),
        fetch_batch=r.get(table, "fetch_batch", int, 200, where, _positive),
    )
    return settings if len(r.problems) == before else None


AGENT_DISPLAY_FIELDS = ("agent", "mailbox")


def _agent_display(value: Any) -> str | None:
    """A format string with only {agent} and {mailbox} in it: the display name of an agent's relayed reply."""
    allowed = "only {agent} and {mailbox} may appear (write {{ and }} for braces)"
    if not value.strip():
        return "must not be empty (e.g. \"{agent} from {mailbox}\")"
    if any(c in value for c in "\r\n\0"):
        return "must be one line"
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as exc:
        return f"{value!r} is not a format string ({exc}); {allowed}"
    for _literal, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if field_name not in AGENT_DISPLAY_FIELDS or spec or conversion:
            shown = "{" + field_name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            return f"{shown} is not allowed; {allowed}"
    return None


def _mailboxes(r: _Reader, data: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> tuple[MailboxSettings, ...]:
    raw = data.get("mailboxes", [{"address": DEFAULT_ADDRESS, "name": "Support", "queue": "support"}])
    if not isinstance(raw, list) or not raw:
        r.problems.append("mailboxes: must be a non-empty array of tables ([[mailboxes]])")
        return ()
    result: list[MailboxSettings] = []
    for i, entry in enumerate(raw):
        where = f"mailboxes[{i}]."
        if not isinstance(entry, dict):
            r.problems.append(f"mailboxes[{i}]: must be a table")
            continue
        r.unknown(entry, {"address", "name", "queue", "imap", "agent_display"}, where)
        if "address" not in entry:
            r.problems.append(f"{where}address: required")
            continue
        address = r.get(entry, "address", str, "", where, _address).lower()
        name = r.get(entry, "name", str, "Support", where)
        queue = r.get(entry, "queue", str, "support", where)
        imap_table = r.table(entry, "imap", where)
        imap = _imap(r, imap_table, f"{where}imap.", base, env) if "imap" in entry else None
        agent_display = r.get(entry, "agent_display", str, "{agent}", where, _agent_display)
        if address:
            result.append(MailboxSettings(address, name, queue, imap, agent_display))
    seen: set[str] = set()
    for mailbox in result:
        if mailbox.address in seen:
            r.problems.append(f"mailboxes: address {mailbox.address} appears twice")
        seen.add(mailbox.address)
    return tuple(result)


def _label(kind: str, i: int, name: str | None) -> str:
    """How a problem names one entry of an array of tables: 'routing[0] "billing": ' or 'routing[2]: '."""
    return f'{kind}[{i}] "{name}": ' if name else f"{kind}[{i}]: "


def _words(r: _Reader, table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """A list of non-empty strings (tags, skills): stripped, lower-cased, each once, in order."""
    value = r.get(table, key, list, [], where,
                  lambda v: None if all(isinstance(x, str) and x.strip() for x in v)
                  else "must be a list of non-empty strings")
    return tuple(dict.fromkeys(str(x).strip().lower() for x in value))


def _one_or_more(r: _Reader, table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """A string or a non-empty list of strings, as a tuple (empty if absent or wrong)."""
    if key not in table:
        return ()
    value = table[key]
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
        return tuple(value)
    r.problems.append(f"{where}{key}: must be a string or a non-empty list of strings, not {value!r}")
    return ()


AGENT_KEYS = {"address", "name", "aliases", "skills", "language"}


def _agents(r: _Reader, data: Mapping[str, Any], support: frozenset[str]) -> tuple[AgentSettings, ...]:
    """[[agents]]: every address and alias belongs to one agent and is none of the support mailboxes."""
    raw = data.get("agents", [])
    if isinstance(raw, dict):
        r.problems.append("agents: [[agents]] is the list of agents; attach_max_bytes lives in [notify]")
        return ()
    result: list[AgentSettings] = []
    owners: dict[str, str] = {}  # address or alias -> the label of the agent it was first seen on
    for i, entry in r.tables(data, "agents"):
        named = entry.get("address") if isinstance(entry.get("address"), str) else None
        where = _label("agents", i, named)
        r.unknown(entry, AGENT_KEYS, where)
        if "address" not in entry:
            r.problems.append(f"{where}address: required")
            continue
        address = r.get(entry, "address", str, "", where, _address).lower()
        name = r.get(entry, "name", str, address, where)
        aliases_value = r.get(entry, "aliases", list, [], where,
                              lambda v: None if all(isinstance(x, str) for x in v) else "must be a list of addresses")
        aliases: list[str] = []
        for alias in aliases_value:
            if _address(alias):
                r.problems.append(f"{where}aliases: \"{alias}\" is not an email address")
            else:
                aliases.append(alias.lower())
        skills = _words(r, entry, "skills", where)
        language = r.get(entry, "language", str, "en", where,
                         lambda v: None if v in LANGUAGES else f"{v!r}: one of {', '.join(LANGUAGES)}")
        own = [("address", address)] if address else []
        for key, value in own + [("aliases", alias) for alias in aliases]:
            if key == "aliases" and value == address:
                r.problems.append(f"{where}aliases: {value} is the agent's own address")
            elif value in support:
                r.problems.append(f"{where}{key}: {value} is a support mailbox address ([[mailboxes]]), "
                                  "not an agent's")
            elif value in owners:
                r.problems.append(f"agents: address {value} appears twice ({owners[value]}, {where[:-2]})")
            else:
                owners[value] = where[:-2]
        if address:
            result.append(AgentSettings(address, name, tuple(dict.fromkeys(aliases)), skills, language))
    return tuple(result)


def _agent_addresses(agents: Sequence[AgentSettings]) -> dict[str, str]:
    """Every address and alias of the agents -> that agent's primary address."""
    primary: dict[str, str] = {}
    for agent in agents:
        for address in (agent.address, *agent.aliases):
            primary.setdefault(address, agent.address)
    return primary


def _queues(r: _Reader, data: Mapping[str, Any], agents: Sequence[AgentSettings]) -> tuple[QueueSettings, ...]:
    """[[queues]]: how tickets of a queue are assigned, to whom, and in which language."""
    primary = _agent_addresses(agents)
    result: list[QueueSettings] = []
    for i, entry in r.tables(data, "queues"):
        name, where = r.named(entry, "queues", i)
        r.unknown(entry, {"name", "assignment", "agents", "language"}, where)
        assignment = r.get(entry, "assignment", str, "none", where,
                           lambda v: None if v in ASSIGNMENTS else f"{v!r}: one of {', '.join(ASSIGNMENTS)}")
        language = r.get(entry, "language", str, "en", where,
                         lambda v: None if v in LANGUAGES else f"{v!r}: one of {', '.join(LANGUAGES)}")
        members = r.get(entry, "agents", list, [], where,
                        lambda v: None if all(isinstance(x, str) for x in v) else "must be a list of agent addresses")
        addresses: list[str] = []
        for member in members:
            if member.lower() in primary:
                addresses.append(primary[member.lower()])
            else:
                r.problems.append(f"{where}agents: \"{member}\" is not a configured agent "
                                  "([[agents]] address or alias)")
        if name:
            result.append(QueueSettings(name, assignment, tuple(dict.fromkeys(addresses)), language))
    r.unique("queues", [queue.name for queue in result])
    return tuple(result)


ROUTING_KEYS = {"name", "when", "then", "stop"}
WHEN_KEYS = {"subject", "body", "sender", "sender_domain", "recipient", "header", "has_attachment", "verdict",
             "known_customer"}
THEN_KEYS = {"queue", "priority", "tags", "assignee", "acknowledge", "hold"}
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9-]+")
_DOMAIN_RE = re.compile(r"[^\s@.]+(\.[^\s@.]+)*")


def _pattern(r: _Reader, table: Mapping[str, Any], key: str, where: str) -> re.Pattern[str] | None:
    """A regular expression (for re.search), compiled now so a bad one fails at load."""
    value = r.get(table, key, str, None, where)
    if value is None:
        return None
    try:
        return re.compile(value)
    except re.error as exc:
        r.problems.append(f"{where}{key}: not a valid regular expression: {exc}")
        return None


def _when(r: _Reader, table: Mapping[str, Any], where: str) -> RoutingWhen:
    r.unknown(table, WHEN_KEYS, where)
    subject, body, sender, recipient = (_pattern(r, table, key, where)
                                        for key in ("subject", "body", "sender", "recipient"))
    domains = tuple(dict.fromkeys(d.strip().lower() for d in _one_or_more(r, table, "sender_domain", where)))
    for domain in domains:
        if not _DOMAIN_RE.fullmatch(domain):
            r.problems.append(f"{where}sender_domain: \"{domain}\" is not a domain name (e.g. \"example.org\")")
    kinds = [k.value for k in VerdictKind]
    verdicts = tuple(dict.fromkeys(_one_or_more(r, table, "verdict", where)))
    for verdict in verdicts:
        if verdict not in kinds:
            r.problems.append(f"{where}verdict: unknown verdict \"{verdict}\" (one of {', '.join(kinds)})")
    headers: dict[str, re.Pattern[str]] = {}
    header_table = r.table(table, "header", where)
    for header in header_table:
        if not _HEADER_NAME_RE.fullmatch(header):
            r.problems.append(f"{where}header.{header}: not a header name (letters, digits and '-' only)")
            continue
        pattern = _pattern(r, header_table, header, f"{where}header.")
        if header.lower() in headers:
            r.problems.append(f"{where}header.{header}: header {header.lower()} appears twice")
        elif pattern is not None:
            headers[header.lower()] = pattern
    return RoutingWhen(
        subject=subject,
        body=body,
        sender=sender,
        sender_domain=domains,
        recipient=recipient,
        headers=tuple(headers.items()),
        has_attachment=r.get(table, "has_attachment", bool, None, where),
        verdict=verdicts,
        known_customer=r.get(table, "known_customer", bool, None, where),
    )


def _then(r: _Reader, table: Mapping[str, Any], where: str, queue_names: Sequence[str],
          primary: Mapping[str, str]) -> RoutingThen:
    r.unknown(table, THEN_KEYS, where)
    queue = r.get(table, "queue", str, None, where,
                  lambda v: None if v in queue_names
                  else f"unknown queue \"{v}\" (queues: {', '.join(queue_names)})")
    priority = r.get(table, "priority", str, None, where,
                     lambda v: None if v in PRIORITIES
                     else f"unknown priority \"{v}\" (one of {', '.join(PRIORITIES)})")
    assignee = r.get(table, "assignee", str, None, where,
                     lambda v: None if v.lower() in primary
                     else f"\"{v}\" is not a configured agent ([[agents]] address or alias)")
    return RoutingThen(
        queue=queue,
        priority=priority,
        tags=_words(r, table, "tags", where),
        assignee=primary[assignee.lower()] if assignee is not None else None,
        acknowledge=r.get(table, "acknowledge", bool, None, where),
        hold=r.get(table, "hold", bool, False, where),
    )


def _routing(r: _Reader, data: Mapping[str, Any], queue_names: Sequence[str],
             agents: Sequence[AgentSettings]) -> tuple[RoutingSettings, ...]:
    """[[routing]], in order: each rule's when (all asked conditions hold) and then (what it does)."""
    primary = _agent_addresses(agents)
    result: list[RoutingSettings] = []
    for i, entry in r.tables(data, "routing"):
        name, where = r.named(entry, "routing", i)
        r.unknown(entry, ROUTING_KEYS, where)
        when = _when(r, r.table(entry, "when", where), f"{where}when.")
        then_table = r.table(entry, "then", where)
        then = _then(r, then_table, f"{where}then.", queue_names, primary)
        stop = r.get(entry, "stop", bool, False, where)
        if not then_table and not stop and isinstance(entry.get("then", {}), dict):
            r.problems.append(f"{where}does nothing: give then.queue, then.priority, then.tags, then.assignee, "
                              "then.acknowledge or then.hold, or stop = true")
        if name:
            result.append(RoutingSettings(name, when, then, stop))
    r.unique("routing", [rule.name for rule in result])
    return tuple(result)


def parse_listener(item: str) -> Listener | None:
    """"host:port", "[::1]:port", or with an "lmtp:" prefix for LMTP."""
    lmtp = item.startswith("lmtp:")
    rest = item[len("lmtp:"):] if lmtp else item
    host, sep, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return None  # bare IPv6 needs brackets
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return Listener(host, int(port), lmtp)


def _listen(value: Any) -> str | None:
    if not isinstance(value, list):
        return "must be a list of \"host:port\" strings (empty: no listener)"
    for item in value:
        if not isinstance(item, str) or parse_listener(item) is None:
            return f"{item!r} is not host:port (IPv6 as \"[::1]:2525\"; LMTP as \"lmtp:127.0.0.1:24\")"
    return None


def _smtp(r: _Reader, data: Mapping[str, Any], base: Path) -> SmtpListenSettings:
    where = "smtp."
    table = r.table(data, "smtp")
    r.unknown(table, {"listen", "max_message_size", "hostname", "tls_cert", "tls_key", "max_connections",
                      "max_connections_per_ip", "timeout"}, where)
    listen = r.get(table, "listen", list, [DEFAULT_LISTEN], where, _listen)
    listeners = tuple(x for x in (parse_listener(item) for item in listen) if x is not None)
    cert = r.get(table, "tls_cert", str, None, where)
    key = r.get(table, "tls_key", str, None, where)
    if (cert is None) != (key is None):
        r.problems.append(f"{where}tls_cert: STARTTLS needs both tls_cert and tls_key")
    cert_path = _resolve(base, cert) if cert else None
    key_path = _resolve(base, key) if key else None
    for name, path in (("tls_cert", cert_path), ("tls_key", key_path)):
        if path is not None and not path.is_file():
            r.problems.append(f"{where}{name}: {path} is not a readable file")
    return SmtpListenSettings(
        listen=listeners,
        max_message_size=r.get(table, "max_message_size", int, 35 * 1024 * 1024, where, _positive),
        hostname=r.get(table, "hostname", str, socket.gethostname() or "localhost", where),
        tls_cert=cert_path,
        tls_key=key_path,
        max_connections=r.get(table, "max_connections", int, 200, where, _positive),
        max_connections_per_ip=r.get(table, "max_connections_per_ip", int, 20, where, _positive),
        timeout=float(r.get(table, "timeout", (int, float), 300, where, _positive)),
    )


# --- [sla]: service-level targets counted in business time (mailticket.sla.business does the counting) ---

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
SLA_KEYS = {"timezone", "business_hours", "holidays", "extra_holidays", "notify_in_business_hours", "policies"}
SLA_POLICY_KEYS = {"name", "match", "first_response", "next_response", "resolution", "remind_at", "escalate"}
SLA_MATCH_KEYS = {"priority", "queue"}
SLA_TARGETS = ("first_response", "next_response", "resolution")
_DURATION_RE = re.compile(r"\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*")
_CLOCK_RE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*")
DURATION_EXAMPLES = '(e.g. "30m", "4h", "2d", "1d4h")'


@dataclass(frozen=True)
class Duration:
    """A span written as ``1d4h30m``: whole days, then minutes (hours are kept as minutes).

    In business time (``Calendar.add``) a day is one business day and minutes are open minutes;
    ``calendar`` is the same span in plain clock time (a day = 24 hours), for calendar-time settings.
    """

    days: int = 0
    minutes: int = 0

    @property
    def calendar(self) -> dt.timedelta:
        return dt.timedelta(days=self.days, minutes=self.minutes)

    @property
    def is_zero(self) -> bool:
        return self.days == 0 and self.minutes == 0

    def __str__(self) -> str:
        hours, minutes = divmod(self.minutes, 60)
        text = (f"{self.days}d" if self.days else "") + (f"{hours}h" if hours else "") + (
            f"{minutes}m" if minutes else "")
        return text or "0m"


def parse_duration(text: str) -> Duration | None:
    """"30m", "4h", "2d", "1d4h", "90m" (parts in the order d, h, m; each at most once); None when invalid."""
    match = _DURATION_RE.fullmatch(text) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        return None
    days, hours, minutes = (int(x) if x else 0 for x in match.groups())
    return Duration(days, hours * 60 + minutes)


Ranges = tuple[tuple[dt.time, dt.time], ...]


def parse_clock_ranges(text: str) -> Ranges | None:
    """"09:00-17:00" or "09:00-12:00,13:00-17:00": increasing, not overlapping; an end of "24:00" is
    midnight at the end of the day and is kept as ``time(0)``. None when invalid."""
    result: list[tuple[dt.time, dt.time]] = []
    last = -1
    for part in text.split(","):
        start_text, sep, end_text = part.partition("-")
        start_match, end_match = _CLOCK_RE.fullmatch(start_text), _CLOCK_RE.fullmatch(end_text)
        if not sep or not start_match or not end_match:
            return None
        start = int(start_match.group(1)) * 60 + int(start_match.group(2))
        end = int(end_match.group(1)) * 60 + int(end_match.group(2))
        if int(start_match.group(2)) > 59 or int(end_match.group(2)) > 59 or start >= 24 * 60 or end > 24 * 60:
            return None
        if end == 0:
            end = 24 * 60  # "22:00-00:00" reads as up to midnight
        if start >= end or start < last:
            return None
        last = end
        result.append((dt.time(start // 60, start % 60), dt.time(end // 60 % 24, end % 60)))
    return tuple(result)


def parse_day_range(text: str) -> tuple[int, ...] | None:
    """"mon-fri" -> (0, 1, 2, 3, 4); "sat" -> (5,); None when invalid (also for a backwards range)."""
    first, sep, last = text.strip().lower().partition("-")
    first, last = first.strip(), last.strip() if sep else first.strip()
    if first not in WEEKDAYS or last not in WEEKDAYS or WEEKDAYS.index(first) > WEEKDAYS.index(last):
        return None
    return tuple(range(WEEKDAYS.index(first), WEEKDAYS.index(last) + 1))


@dataclass(frozen=True)
class Escalation:
    after: Duration  # business time after the breach; "0m" is at the breach
    to: tuple[str, ...]  # addresses, lower-cased


@dataclass(frozen=True)
class SlaPolicy:
    name: str
    match_priority: tuple[str, ...] = ()  # any of these priorities; () matches every priority
    match_queue: tuple[str, ...] = ()  # any of these queues; () matches every queue
    first_response: Duration | None = None
    next_response: Duration | None = None  # after a customer reply
    resolution: Duration | None = None
    remind_at: float | None = None  # share of each target (0 < x < 1) at which the assignee is reminded
    escalate: tuple[Escalation, ...] = ()  # levels, in config order

    def matches(self, priority: str, queue: str) -> bool:
        return (not self.match_priority or priority in self.match_priority) and (
            not self.match_queue or queue in self.match_queue)


@dataclass(frozen=True)
class SlaSettings:
    """``[sla]``; build its business-time calendar with ``mailticket.sla.business.calendar_of``."""

    timezone: str = "UTC"  # an IANA zone name, checked at load
    business_hours: dict[int, Ranges] | None = None  # weekday (0 = Monday) -> open ranges; None = 24x7
    holidays: str | None = None  # "DE" or "DE-BY" (canonical spelling of the `holidays` package)
    extra_holidays: tuple[dt.date, ...] = ()
    notify_in_business_hours: bool = True  # reminders and escalations wait for the next business minute
    policies: tuple[SlaPolicy, ...] = ()

    def policy_for(self, priority: str, queue: str) -> SlaPolicy | None:
        """The first policy whose match holds, or None."""
        return next((p for p in self.policies if p.matches(priority, queue)), None)


@dataclass(frozen=True)
class LifecycleSettings:
    """``[lifecycle]`` timers, in calendar time (a day = 24 hours); None = never (the key set to false)."""

    pending_reminder_after: Duration | None = Duration(3)  # a pending ticket's reminder to the customer
    pending_close_after: Duration | None = Duration(7)  # a pending ticket is closed, with a notice
    solved_close_after: Duration | None = Duration(4)  # a solved ticket is closed


LIFECYCLE_TIMERS = ("pending_reminder_after", "pending_close_after", "solved_close_after")


def _lifecycle_timer(r: _Reader, table: Mapping[str, Any], key: str, default: Duration) -> Duration | None:
    value = table.get(key, default)
    if value is default or value is False:
        return None if value is False else default
    duration = parse_duration(value) if isinstance(value, str) else None
    if duration is None or duration.is_zero:
        r.problems.append(f"lifecycle.{key}: {value!r} is not a duration {DURATION_EXAMPLES} (or false for never)")
        return default
    return duration


def _zone(value: Any) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f'unknown timezone "{value}" (an IANA name such as "Europe/Berlin" or "UTC")'
    return None


def _holiday_region(r: _Reader, table: Mapping[str, Any]) -> str | None:
    """"DE" or "DE-BY", checked against the `holidays` package; returned in its spelling."""
    value = r.get(table, "holidays", str, None, "sla.",
                  lambda v: None if v.strip() else 'must not be empty (a country such as "DE", or omit it)')
    if value is None:
        return None
    country, _, subdiv = str(value).strip().partition("-")
    import holidays  # only for a config with [sla] holidays: the library costs ~40 ms to import

    supported = holidays.list_supported_countries()
    if country.upper() not in supported:
        r.problems.append(f'sla.holidays: unknown country "{country}" for the holidays package '
                          '(an ISO 3166 code such as "DE", "US", "FR")')
        return None
    country = country.upper()
    if not subdiv:
        return country
    known = {s.lower(): s for s in supported[country]}
    if subdiv.lower() not in known:
        listed = ", ".join(supported[country]) or "none"
        r.problems.append(f'sla.holidays: unknown subdivision "{subdiv}" of {country} (known: {listed})')
        return None
    return f"{country}-{known[subdiv.lower()]}"


def _business_hours(r: _Reader, table: Mapping[str, Any]) -> dict[int, Ranges] | None:
    if "business_hours" not in table:
        return None
    raw = r.table(table, "business_hours", "sla.")
    where = "sla.business_hours."
    hours: dict[int, Ranges] = {day: () for day in range(7)}
    named: dict[int, str] = {}
    for key, value in raw.items():
        days = parse_day_range(key)
        if days is None:
            r.problems.append(f'{where}{key}: not a day or day range (mon..sun, e.g. "mon-fri" or "sat")')
            continue
        ranges = parse_clock_ranges(value) if isinstance(value, str) else None
        if ranges is None:
            r.problems.append(f'{where}{key}: {value!r} is not a time range (e.g. "09:00-17:00", '
                              'or "09:00-12:00,13:00-17:00")')
            continue
        for day in days:
            if day in named:
                r.problems.append(f"{where}{key}: {WEEKDAYS[day]} is already given by {named[day]}")
                break
            named[day] = key
            hours[day] = ranges
    if not raw and isinstance(table.get("business_hours"), dict):
        r.problems.append("sla.business_hours: empty (omit business_hours for 24x7)")
    return hours


def _extra_holidays(r: _Reader, table: Mapping[str, Any]) -> tuple[dt.date, ...]:
    result: list[dt.date] = []
    for item in r.get(table, "extra_holidays", list, [], "sla."):
        if isinstance(item, dt.date) and not isinstance(item, dt.datetime):
            result.append(item)
            continue
        if isinstance(item, str):
            try:
                result.append(dt.date.fromisoformat(item.strip()))
                continue
            except ValueError:
                pass
        r.problems.append(f'sla.extra_holidays: {item!r} is not a date (ISO, e.g. "2026-12-24")')
    return tuple(sorted(set(result)))


def _sla_duration(r: _Reader, table: Mapping[str, Any], key: str, where: str, zero: bool) -> Duration | None:
    value = r.get(table, key, str, None, where)
    if value is None:
        return None
    duration = parse_duration(value)
    if duration is None:
        r.problems.append(f"{where}{key}: {value!r} is not a duration {DURATION_EXAMPLES}")
    elif duration.is_zero and not zero:
        r.problems.append(f"{where}{key}: must be longer than 0")
        return None
    return duration


def _escalate(r: _Reader, entry: Mapping[str, Any], where: str) -> tuple[Escalation, ...]:
    raw = entry.get("escalate", [])
    if not isinstance(raw, list):
        r.problems.append(f'{where}escalate: must be a list of {{ after = "4h", to = ["lead@example.com"] }}')
        return ()
    result: list[Escalation] = []
    for i, level in enumerate(raw):
        at = f"{where}escalate[{i}]."
        if not isinstance(level, dict):
            r.problems.append(f'{where}escalate[{i}]: must be a table {{ after = "4h", to = [...] }}')
            continue
        r.unknown(level, {"after", "to"}, at)
        for key in ("after", "to"):
            if key not in level:
                r.problems.append(f"{at}{key}: required")
        after = _sla_duration(r, level, "after", at, zero=True)
        to = _one_or_more(r, level, "to", at)
        bad = [x for x in to if not _ADDRESS_RE.match(x.strip())]
        if bad:
            r.problems.append(f"{at}to: {bad[0]!r} is not an email address")
        elif after is not None and to:
            result.append(Escalation(after, tuple(dict.fromkeys(x.strip().lower() for x in to))))
    return tuple(result)


def _sla_policy(r: _Reader, entry: Mapping[str, Any], i: int, queue_names: Sequence[str]) -> SlaPolicy | None:
    name, where = r.named(entry, "sla.policies", i)
    r.unknown(entry, SLA_POLICY_KEYS, where)
    match = r.table(entry, "match", where)
    r.unknown(match, SLA_MATCH_KEYS, f"{where}match.")
    priorities = _one_or_more(r, match, "priority", f"{where}match.")
    for priority in priorities:
        if priority not in PRIORITIES:
            r.problems.append(f'{where}match.priority: unknown priority "{priority}" (one of {", ".join(PRIORITIES)})')
    queues = _one_or_more(r, match, "queue", f"{where}match.")
    for queue in queues:
        if queue not in queue_names:
            r.problems.append(f'{where}match.queue: unknown queue "{queue}" (queues: {", ".join(queue_names)})')
    targets = {key: _sla_duration(r, entry, key, where, zero=False) for key in SLA_TARGETS}
    if not any(key in entry for key in SLA_TARGETS):
        r.problems.append(f"{where}has no target: give first_response, next_response or resolution")
    remind_at = r.get(entry, "remind_at", (int, float), None, where,
                      lambda v: None if not isinstance(v, bool) and 0 < v < 1
                      else f"{v!r} must be a share between 0 and 1 (e.g. 0.75)")
    escalate = _escalate(r, entry, where)
    if not name:
        return None
    return SlaPolicy(
        name=name,
        match_priority=tuple(dict.fromkeys(priorities)),
        match_queue=tuple(dict.fromkeys(queues)),
        first_response=targets["first_response"],
        next_response=targets["next_response"],
        resolution=targets["resolution"],
        remind_at=float(remind_at) if remind_at is not None else None,
        escalate=escalate,
    )


def _sla(r: _Reader, data: Mapping[str, Any], queue_names: Sequence[str]) -> SlaSettings | None:
    """[sla] and its [[sla.policies]]; None when there is no [sla] table."""
    if "sla" not in data:
        return None
    table = r.table(data, "sla")
    r.unknown(table, SLA_KEYS, "sla.")
    timezone = r.get(table, "timezone", str, "UTC", "sla.", _zone)
    business_hours = _business_hours(r, table)
    region = _holiday_region(r, table)
    extra = _extra_holidays(r, table)
    notify = r.get(table, "notify_in_business_hours", bool, True, "sla.")
    policies: list[SlaPolicy] = []
    for i, entry in r.tables(table, "policies", "sla.policies"):
        policy = _sla_policy(r, entry, i, queue_names)
        if policy is not None:
            policies.append(policy)
    r.unique("sla.policies", [policy.name for policy in policies])
    return SlaSettings(timezone, business_hours, region, extra, notify, tuple(policies))


def _build(data: Mapping[str, Any], source: str, base: Path, env: Mapping[str, str], embedded: bool) -> Settings:
    r = _Reader()
    r.unknown(data, {"database", "mailboxes", "agents", "outbound", "smtp", "mail", "templates", "log", "limits",
                     "identity", "paths", "queues", "routing", "lifecycle", "notify", "commands", "sla",
                     "csat"}, "")
    state_dir = _state_dir(r, data, base, env)
    database_url = _database(r, data, state_dir, env)
    auto_upgrade_default = embedded
    auto_upgrade = r.get(r.table(data, "database"), "auto_upgrade", bool, auto_upgrade_default, "database.")
    mailboxes = _mailboxes(r, data, base, env)
    agents = _agents(r, data, frozenset(m.address for m in mailboxes))
    queues = _queues(r, data, agents)
    queue_names = tuple(dict.fromkeys([q.name for q in queues] + [m.queue for m in mailboxes]))  # as Settings
    routing = _routing(r, data, queue_names, agents)
    sla = _sla(r, data, queue_names)
    first = mailboxes[0] if mailboxes else MailboxSettings(DEFAULT_ADDRESS, "Support", "support")
    outbound = _outbound(r, data, state_dir, env, f"{first.name} <{first.address}>")

    smtp = _smtp(r, data, base)

    mail = r.table(data, "mail")
    r.unknown(mail, {"message_id_domain", "subject_tag_prefix", "loop_token", "acknowledge_new", "machine_replies",
                     "priority_from_headers", "cc_participants"}, "mail.")
    priority_from_headers = r.get(mail, "priority_from_headers", bool, False, "mail.")
    cc_participants = r.get(mail, "cc_participants", bool, True, "mail.")

    lifecycle = r.table(data, "lifecycle")
    r.unknown(lifecycle, {"reopen_days", *LIFECYCLE_TIMERS}, "lifecycle.")
    reopen_days = r.get(lifecycle, "reopen_days", int, 14, "lifecycle.", _positive)
    defaults = LifecycleSettings()
    timers = LifecycleSettings(*(_lifecycle_timer(r, lifecycle, key, getattr(defaults, key))
                                 for key in LIFECYCLE_TIMERS))
    csat = r.table(data, "csat")
    r.unknown(csat, {"enabled"}, "csat.")
    csat_enabled = r.get(csat, "enabled", bool, True, "csat.")

    commands = r.table(data, "commands")
    r.unknown(commands, {"receipt"}, "commands.")
    receipt = r.get(commands, "receipt", str, "errors", "commands.",
                    lambda v: None if v in RECEIPTS else f"one of {', '.join(RECEIPTS)}")

    notify = r.table(data, "notify")
    r.unknown(notify, {"attach_max_bytes"}, "notify.")
    attach_max_bytes = r.get(notify, "attach_max_bytes", int, 10 * 1024 * 1024, "notify.", _positive)
    machine_replies = r.get(mail, "machine_replies", str, "attach", "mail.",
                            lambda v: None if v in ("attach", "review_ticket") else '"attach" or "review_ticket"')
    limits = _limits(r, data)
    identity = _identity(r, data, state_dir, env)
    default_domain = first.address.rpartition("@")[2] or "localhost"
    mid_domain = r.get(mail, "message_id_domain", str, default_domain, "mail.",
                       lambda v: None if re.fullmatch(r"[A-Za-z0-9.-]+", v) else "must be a domain name")
    prefix = r.get(mail, "subject_tag_prefix", str, "", "mail.",
                   lambda v: None if re.fullmatch(r"[\w .-]{0,40}", v) else "letters, digits, space, '.', '-' only")
    loop_token = r.get(mail, "loop_token", str, mid_domain, "mail.",
                       lambda v: None if re.fullmatch(r"[\w.@-]{1,100}", v) else "letters, digits, '.', '@', '-' only")
    acknowledge = r.get(mail, "acknowledge_new", bool, True, "mail.")

    templates = r.table(data, "templates")
    r.unknown(templates, {"directory"}, "templates.")
    template_dir_value = r.get(templates, "directory", str, None, "templates.")
    template_dir = _resolve(base, template_dir_value) if template_dir_value else None
    if template_dir is not None and not template_dir.is_dir():
        r.problems.append(f"templates.directory: {template_dir} is not a directory")

    log = r.table(data, "log")
    r.unknown(log, {"level"}, "log.")
    levels = ("debug", "info", "warning", "error")
    level = r.get(log, "level", str, "info", "log.",
                  lambda v: None if v.lower() in levels else f"one of {', '.join(levels)}")

    if r.problems:
        raise ConfigError([f"{source}: {p}" for p in r.problems])
    return Settings(
        source=source,
        base_dir=base,
        state_dir=state_dir,
        database_url=database_url,
        mailboxes=mailboxes,
        agents=agents,
        outbound=outbound,
        smtp=smtp,
        message_id_domain=mid_domain.lower(),
        subject_tag_prefix=prefix.strip(),
        loop_token=loop_token,
        template_dir=template_dir,
        acknowledge_new=acknowledge,
        limits=limits,
        identity=identity,
        machine_replies=machine_replies,
        log_level=level.lower(),
        auto_upgrade=auto_upgrade,
        queues=queues,
        routing=routing,
        priority_from_headers=priority_from_headers,
        cc_participants=cc_participants,
        reopen_days=reopen_days,
        command_receipt=receipt,
        attach_max_bytes=attach_max_bytes,
        sla=sla,
        lifecycle=timers,
        csat_enabled=csat_enabled,
    )
