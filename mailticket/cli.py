"""Thin commands: parse arguments, open the app, print a table or --json.

Every command is ``with _app(args) as app:``: the composition root builds (and
closes) everything; reads come from the read model (``store/readmodel.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mailticket import __version__
from mailticket.app import TEMPLATES, App
from mailticket.domain import Envelope, RawState
from mailticket.errors import CantCreateError, ConfigError, SchemaError, TemporaryError
from mailticket.rules.admin import AdminError, Changes
from mailticket.settings import MailboxSettings, Settings, load, locate_config
from mailticket.store import readmodel, repo
from mailticket.store.paths import user as state_user

EX_OK, EX_USAGE, EX_SOFTWARE, EX_CANTCREAT, EX_IOERR, EX_TEMPFAIL, EX_CONFIG = 0, 64, 70, 73, 74, 75, 78
MAX_PIPE_BYTES = 64 * 1024 * 1024
MAX_RULES_TEST_BYTES = 64 * 1024 * 1024
UNKNOWN_SENDER = "(sender unknown)"


def _settings(args: argparse.Namespace) -> Settings:
    settings = load(locate_config(args.config, os.environ, Path.cwd()))
    if not args.verbose:
        logging.getLogger().setLevel(settings.log_level.upper())
    return settings


def _app(args: argparse.Namespace, upgrade: bool | None = None) -> App:
    return App.open(_settings(args), upgrade=upgrade)


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [min(max(len(r[i]) for r in cells), 60) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c[:60].ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


# -- commands -----------------------------------------------------------------

def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with App(settings) as app:
        app.renderer.check(TEMPLATES)  # every file of every kind, rendered with sample contexts
        app.check_storage()  # looked at, nothing created
        app.db.ping()  # a missing SQLite file is reported below, not created
        revision = app.db.current_revision()
        database = app.db.describe()
    print(f"{settings.source}: configuration is valid")
    print(f"  state: {settings.state_dir}")
    schema = revision or "none yet (`mailticket db upgrade` creates it)"
    print(f"  database: {database} (schema {schema})")
    print(f"  mailboxes: {', '.join(m.address for m in settings.mailboxes)}")
    print(f"  outbound: {settings.outbound.transport}")
    for m in settings.mailboxes:
        if m.imap is not None:
            print(f"  imap: {m.address} <- {m.imap.account}/{m.imap.folder} (tls {m.imap.tls}, after {m.imap.after})")
    if settings.queues:
        print("  queues: " + ", ".join(f"{q.name} ({q.assignment}, {len(q.agents)} agents)" for q in settings.queues))
    if settings.routing:
        print(f"  routing: {len(settings.routing)} rules: " + ", ".join(r.name for r in settings.routing))
    return EX_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    with App(_settings(args)) as app:
        app.ensure_storage()
        before, after = app.db.upgrade()
    print(f"database schema: {before or '(empty)'} -> {after}")
    return EX_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    """For an MTA pipe: exit 0 only after the bytes are committed, 75 when they could not be."""
    try:
        app = _app(args)
    except CantCreateError as exc:  # 73 would make the MTA bounce the mail: the admin fixes this, the MTA waits
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("mailticket ingest: not stored, try again later", file=sys.stderr)
        return EX_TEMPFAIL
    except (ConfigError, SchemaError):
        raise  # 78: EX_CONFIG, which MTAs treat as temporary too
    except Exception as exc:  # anything before the commit is temporary for the sender
        print(f"mailticket ingest: not stored, try again later: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    with app:
        try:
            raw = sys.stdin.buffer.read(MAX_PIPE_BYTES + 1)
            if len(raw) > MAX_PIPE_BYTES:
                print(f"mailticket ingest: message over {MAX_PIPE_BYTES} bytes refused", file=sys.stderr)
                return 73  # EX_CANTCREAT: permanent, the MTA bounces it
            recipients = tuple(args.recipient or ())
            accepted = app.inbox.accept(raw, Envelope("pipe", args.sender or "", recipients))
        except (ConfigError, SchemaError):
            raise
        except Exception as exc:
            print(f"mailticket ingest: not stored, try again later: {exc}", file=sys.stderr)
            return EX_TEMPFAIL
        if accepted.duplicate:
            print(f"duplicate of raw message {accepted.raw_id}; nothing to do", file=sys.stderr)
            return EX_OK
        try:
            outcomes = app.pipeline.process([accepted.raw_id])
        except TemporaryError as exc:
            print(f"stored as raw message {accepted.raw_id}; processing deferred: {exc}", file=sys.stderr)
            return EX_OK
    for outcome in outcomes:
        where = f"ticket #{outcome.ticket_number}" if outcome.ticket_number else "quarantine"
        print(f"raw message {outcome.raw_id}: {outcome.decision} ({where})", file=sys.stderr)
    return EX_OK


def cmd_import(args: argparse.Namespace) -> int:
    from mailticket.ingest.importer import ImportSummary, run_import

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print("\n".join(f"import: {p}: no such file or folder" for p in missing), file=sys.stderr)
        return EX_USAGE
    show = sys.stderr.isatty() and not args.json

    def progress(done: int, total: int, summary: ImportSummary) -> None:
        if not show:
            return
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}  "
                         f"new {summary.tickets_created}  replies {summary.replies_threaded}  "
                         f"dup {summary.duplicates}  quarantined {summary.quarantined}")
        sys.stderr.flush()

    # A bulk command: its progress bar and summary, not an INFO line per message (those at
    # --verbose); a quarantined message still warns. serve and ingest keep their line per message.
    pipeline_log = logging.getLogger("mailticket.pipeline")
    level = pipeline_log.level
    if not args.verbose:
        pipeline_log.setLevel(max(pipeline_log.getEffectiveLevel(), logging.WARNING))
    try:
        with _app(args) as app:
            summary = run_import([Path(p) for p in args.paths], app.inbox, app.pipeline, progress)
    finally:
        pipeline_log.setLevel(level)
    if show:
        sys.stderr.write("\n")
    if args.json:
        _print_json(summary.as_dict())
    else:
        print(f"messages read:     {summary.messages}")
        print(f"tickets created:   {summary.tickets_created}")
        print(f"replies threaded:  {summary.replies_threaded}")
        print(f"duplicates:        {summary.duplicates}")
        print(f"quarantined:       {summary.quarantined}")
        for line in summary.unreadable:
            print(f"unreadable: {line}")
    return EX_OK if not summary.unreadable else EX_SOFTWARE


def cmd_serve(args: argparse.Namespace) -> int:
    with _app(args) as app:
        app.start()
        app.run_until_signal()
    return EX_OK


def cmd_tick(args: argparse.Namespace) -> int:
    """Each job once, then exit: IMAP poll, inbox, due sweep, outbox (for cron-driven installs and checks)."""
    with _app(args) as app:
        report = app.tick()
    if args.json:
        _print_json(report)
    else:
        inbox, sweep, outbox = report["inbox"], report["sweep"], report["outbox"]
        for r in report["imap"]:
            print(f"imap {r['mailbox']} {r['folder']}: " + (f"error: {r['error']}" if r["error"] else
                                                            f"{r.get('new', 0)} new, {r.get('fetched', 0)} fetched"))
        print(f"inbox: {inbox['processed']} processed, {inbox['quarantined']} quarantined")
        done = ", ".join(f"{n} {kind}" for kind, n in sweep["done"].items()) or "nothing due"
        print(f"due sweep: {sweep['tickets']} tickets looked at: {done}"
              + (f"; {sweep['skipped']} skipped" if sweep["skipped"] else "")
              + (f"; {sweep['failed']} failed (see the log)" if sweep["failed"] else ""))
        print(f"outbox: {outbox['sent']} sent, {outbox['retried']} to retry, {outbox['failed']} failed"
              + (f", {outbox['uncertain']} uncertain" if outbox["uncertain"] else ""))
    return EX_OK if report["ok"] else EX_TEMPFAIL


def _imap_mailboxes(app: App, wanted: Sequence[str] | None) -> list[MailboxSettings]:
    mailboxes = app.imap_mailboxes
    if wanted:
        chosen = {w.lower() for w in wanted}
        unknown = chosen - {m.address for m in mailboxes}
        if unknown:
            raise ConfigError([f"--mailbox {a}: no [[mailboxes]] entry with that address has an [mailboxes.imap] "
                               "table" for a in sorted(unknown)])
        mailboxes = [m for m in mailboxes if m.address in chosen]
    if not mailboxes:
        raise ConfigError([f"{app.settings.source}: no mailbox has an [mailboxes.imap] table: nothing to poll"])
    return mailboxes


def cmd_poll(args: argparse.Namespace) -> int:
    """--once: one pass over each IMAP mailbox (for cron); without: poll until SIGTERM."""
    with _app(args) as app:
        mailboxes = _imap_mailboxes(app, args.mailbox)
        if not args.once:
            app.start(listen=False, jobs=False, mailboxes=mailboxes)
            app.run_until_signal()
            return EX_OK
        reports = app.poll_once(mailboxes)
    if args.json:
        _print_json(reports)
    else:
        _table(["mailbox", "folder", "fetched", "new", "dup", "quarantined", "error"],
               [[r["mailbox"], r["folder"], r.get("fetched", ""), r.get("new", ""), r.get("duplicates", ""),
                 r.get("quarantined", ""), r["error"] or ""] for r in reports])
    return EX_OK if all(r["ok"] for r in reports) else EX_TEMPFAIL


def cmd_status(args: argparse.Namespace) -> int:
    from mailticket.schedule.heartbeat import describe as describe_instance

    with _app(args) as app, app.db.transaction() as session:
        now = app.clock.now()
        report = readmodel.status_report(session, app.settings, now)
    if args.json:
        _print_json(report)
        return EX_OK
    print(f"config: {report['config']}")
    for instance in report["instances"]:
        print(describe_instance(instance, now))
    if not any(instance["running"] for instance in report["instances"]):
        print("serve: not running" + ("" if report["instances"] else " (no heartbeat)"))
    print(f"smtp listen: {', '.join(report['smtp']['listen']) or '(none)'}")
    print("inbox: " + (", ".join(f"{k} {v}" for k, v in sorted(report["inbox"].items())) or "empty"))
    print("outbox: " + (", ".join(f"{k} {v}" for k, v in sorted(report["outbox"].items())) or "empty"))
    if report["outbox_uncertain"]:
        print(f"{report['outbox_uncertain']} uncertain: check, then `mailticket outbox retry --uncertain`")
    sweep = report["sweep"]
    print(f"due sweep: {sweep['due']} tickets due now" + (f" (the oldest since {sweep['oldest_due_at'][:16]})"
                                                          if sweep["oldest_due_at"] else "")
          + (f"; next step {sweep['next_at'][:16]}" if sweep["next_at"] else "; nothing planned"))
    rows = []
    for m in report["mailboxes"]:
        imap = m["imap"]
        if imap is None:
            rows.append([m["address"], "-", "smtp/pipe only", "", "", ""])
        else:
            rows.append([m["address"], f"{imap['account']}/{imap['folder']}", imap["state"],
                         imap["last_success_at"] or "never", imap["last_error"] or "", imap["next_retry_at"] or ""])
    _table(["mailbox", "imap", "state", "last success", "last error", "next retry"], rows)
    return EX_OK


def cmd_explain(args: argparse.Namespace) -> int:
    with _app(args) as app, app.db.transaction() as session:
        report = readmodel.explain(session, args.message_id)
        if report is not None and report["ticket"] is not None:
            report["sla"] = readmodel.ticket_sla(session, report["ticket"], app.keeper, app.clock.now())
    if report is None:
        print(f"mailticket: no message with Message-ID <{args.message_id.strip('<>')}> was received or sent",
              file=sys.stderr)
        return 1
    if args.json:
        _print_json(report)
        return EX_OK
    print(f"message <{report['message_id']}> ({report['direction']})")
    received = report["received"]
    if received:
        print(f"  received: {received['received_at'][:19]} by {received['source']} (raw #{received['raw_id']}, "
              f"{received['state']})" + (f": {received['error'].splitlines()[0]}" if received["error"] else ""))
    if report["verdict"]:
        print(f"  from: {report['from']}   subject: {report['subject']}")
        print(f"  verdict: {report['verdict']} ({report['verdict_reason']})")
    if report["ticket"] is not None:
        print(f"  ticket: #{report['ticket']}")
        for line in (report.get("sla") or {}).get("why", []):
            print(f"    sla: {line}")
    for other in report["same_message_id"]:
        ticket = f" (ticket #{other['ticket']})" if other["ticket"] is not None else ""
        print(f"  note: a different message reused this Message-ID: raw #{other['raw_id']}{ticket}; "
              "the steps below include its own")
    if report["rules"]:
        print("  rules that hit:")
        for hit in report["rules"]:
            print(f"    {hit['rule']:<22} {hit['detail'].partition(': ')[2] or hit['detail']}")
    print("  steps:")
    for step in report["steps"]:
        if step["kind"] == "rule":
            continue
        by = f" [{step['rule']}]" if step.get("rule") else ""
        print(f"    {step['at'][:19]}  {step['kind']:<18} {step['detail']}{by}")
    for m in report["mails"]:
        cause = f", by rule {m['rule']}" if m.get("rule") else ""
        print(f"  caused mail #{m['id']} {m['kind']} to {m['to']}: {m['state']}{cause}"
              + (f" ({m['last_error']})" if m["last_error"] else ""))
    if report["outbox"]:
        o = report["outbox"]
        print(f"  our {o['kind']} to {o['to']}: {o['state']} after {o['attempts']} attempt(s)"
              + (f": {o['last_error']}" if o["last_error"] else ""))
    return EX_OK


def cmd_suppressions_list(args: argparse.Namespace) -> int:
    with _app(args) as app, app.db.transaction() as session:
        rows = readmodel.suppressions(session, app.clock.now())
    if args.json:
        _print_json(rows)
    else:
        _table(["address", "status", "until", "active", "reason"],
               [[r["address"], r["status"], r["until"][:16], "yes" if r["active"] else "expired", r["reason"]]
                for r in rows])
    return EX_OK


def cmd_suppressions_remove(args: argparse.Namespace) -> int:
    address = args.address.strip().lower()
    with _app(args) as app, app.db.transaction() as session:
        removed = repo.remove_suppression(session, address)
        if removed:
            repo.add_event(session, app.clock.now(), "unsuppressed", f"{address}: removed by an admin")
    if not removed:
        print(f"mailticket: {address} is not suppressed", file=sys.stderr)
        return 1
    print(f"{address}: automatic mail allowed again")
    return EX_OK


def cmd_tickets_list(args: argparse.Namespace) -> int:
    with _app(args) as app, app.db.transaction() as session:
        tickets = readmodel.tickets(session, status=args.status, queue=args.queue, assignee=args.assignee)
    if args.json:
        _print_json(tickets)
    else:
        _table(["#", "status", "priority", "queue", "assignee", "requester", "subject"],
               [[t["number"], t["status"], t["priority"], t["queue"], t["assignee"] or "-",
                 t["requester"] or UNKNOWN_SENDER, t["subject"]] for t in tickets])
    return EX_OK


def cmd_tickets_show(args: argparse.Namespace) -> int:
    with _app(args) as app, app.db.transaction() as session:
        data = readmodel.ticket(session, args.number, full=args.full)
        if data is not None:
            data["sla"] = readmodel.ticket_sla(session, args.number, app.keeper, app.clock.now())
    if data is None:
        print(f"tickets show: no ticket #{args.number}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(data)
        return EX_OK
    print(f"#{data['number']}  {data['subject']}")
    requester = data["requester"] or UNKNOWN_SENDER
    print(f"status {data['status']}  priority {data['priority']}  queue {data['queue']}  "
          f"assignee {data['assignee'] or '-'}  requester {requester}")
    if data["tags"]:
        print("tags " + ", ".join(data["tags"]))
    if data["linked_to"] is not None:
        print(f"linked to #{data['linked_to']} (its mail referenced that ticket, whose participants do not "
              "include the sender)")
    sla = data["sla"]
    if sla is not None and sla["policy"] is not None:
        breached = f"  BREACHED: {', '.join(sla['breached'])}" if sla["breached"] else ""
        print(f"sla{' (paused)' if sla['paused'] else ''}{breached}")
        for line in sla["why"]:
            print(f"    {line}")
    for m in data["messages"]:
        sender = m["from"] or f"{UNKNOWN_SENDER}, From: {m['from_header']!r}"
        marks = [m["verdict"] or "outbound", m["author_role"]]
        if m["internal"]:
            marks.append("internal")
        if m["verified"] is False:
            marks.append("NOT VERIFIED")
        print(f"\n--- {m['direction']} {m['date'] or ''} from {sender}  [{', '.join(marks)}]")
        if args.full:
            print(m["text"])
        elif m["quote_only"]:
            print("(only a quote of earlier mail; --full shows it)")
        else:
            print(m["visible_text"])
        for a in m["attachments"]:
            print(f"    attachment: {a['filename']} ({a['content_type']}, {a['size']} bytes, "
                  f"sha256 {a['sha256'][:12]})")
    return EX_OK


def cmd_outbox_list(args: argparse.Namespace) -> int:
    with _app(args) as app, app.db.transaction() as session:
        rows = readmodel.outbox_rows(session, args.state)
    if args.json:
        _print_json(rows)
    else:
        _table(["id", "ticket", "kind", "to", "state", "attempts", "last error"],
               [[r["id"], r["ticket"], r["kind"], r["to"], r["state"], r["attempts"], r["last_error"] or ""]
                for r in rows])
    return EX_OK


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    with _app(args) as app:
        if args.uncertain:
            ids = app.sender.retry_uncertain()
            if args.json:
                _print_json({"queued": ids})
            else:
                print(f"outbox: {len(ids)} uncertain mail(s) queued again" + "".join(f" #{i}" for i in ids))
            return EX_OK
        row = app.sender.retry(args.id)
    if row is None:
        print(f"outbox retry: no outbox row {args.id}", file=sys.stderr)
        return 1
    if row.state == "failed" and not row.content:
        print(f"outbox retry: #{row.id} was never rendered ({row.last_error}); it cannot be sent", file=sys.stderr)
        return 1
    if row.state != "queued":
        print(f"outbox retry: #{row.id} is {row.state}; only failed or uncertain mail is queued again",
              file=sys.stderr)
        return 1
    if args.json:
        _print_json({"queued": [row.id]})
    else:
        print(f"outbox #{row.id}: {row.state}")
    return EX_OK


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    with _app(args) as app, app.db.transaction() as session:
        rows = readmodel.quarantined(session)
    if args.json:
        _print_json(rows)
    else:
        _table(["id", "received", "message-id", "error"],
               [[r["id"], r["received_at"][:19], r["message_id"], r["error"].splitlines()[0] if r["error"] else ""]
                for r in rows])
    return EX_OK


def cmd_quarantine_replay(args: argparse.Namespace) -> int:
    with _app(args) as app:
        outcome = app.pipeline.replay(args.id)
    if outcome is None:
        print(f"quarantine replay: raw message {args.id} is not in quarantine", file=sys.stderr)
        return 1
    result = {"id": outcome.raw_id, "state": outcome.state, "decision": outcome.decision,
              "ticket": outcome.ticket_number, "error": outcome.error}
    if args.json:
        _print_json(result)
    else:
        where = f"ticket #{outcome.ticket_number}" if outcome.ticket_number else f"still quarantined: {outcome.error}"
        print(f"raw message {outcome.raw_id}: {outcome.decision} ({where})")
    return EX_OK if outcome.state != RawState.QUARANTINED else 1


def cmd_rules_test(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_RULES_TEST_BYTES + 1)
    except OSError as exc:
        print(f"rules test: {path}: {exc.strerror or exc}", file=sys.stderr)
        return EX_USAGE
    if len(raw) > MAX_RULES_TEST_BYTES:
        print(f"rules test: {path}: over {MAX_RULES_TEST_BYTES} bytes", file=sys.stderr)
        return EX_USAGE
    with _app(args) as app:
        report = app.test_rules(raw)
    if args.json:
        _print_json(report)
        return EX_OK
    print(f"message <{report['message_id']}> from {report['from'] or UNKNOWN_SENDER}: {report['subject']!r}")
    print(f"verdict: {report['verdict']['kind']} ({report['verdict']['reason']})")
    if report["duplicate_of"] is not None:
        earlier = report["duplicate_of"]
        where = f" (ticket #{earlier['ticket']})" if earlier["ticket"] is not None else ""
        print(f"already stored as raw message {earlier['raw_id']}{where}: ingesting it again would change nothing; "
              "below is what the rules decide for it as if it were new")
    thread = report["thread"]
    if thread["ticket"] is not None:
        print(f"would join ticket #{thread['ticket']} ({thread['reason']}); routing runs only for new tickets")
    print()
    if not report["routing"]:
        print("no [[routing]] rules configured")
    width = max([len("routing rule"), *(len(r["name"]) for r in report["routing"])])
    for rule in report["routing"]:
        matched = "skipped (stop)" if rule["skipped"] else ("yes" if rule["matched"] else "no")
        failed = [c for c in rule["conditions"] if not c["held"]]
        why = failed[0]["detail"] if failed else "; ".join(rule["effects"]) or "(no conditions)"
        print(f"{rule['name']:<{width}}  {matched:<14}  {why}")
    result = report["result"]
    print()
    print(f"queue:          {result['queue']}")
    print(f"priority:       {result['priority']}")
    print(f"tags:           {', '.join(result['tags']) or '-'}")
    print(f"assignee:       {result['assignee'] or '-'} ({result['assignment']})")
    print(f"hold:           {'yes' if result['hold'] else 'no'}")
    print(f"acknowledgement: {'yes' if result['acknowledge'] else 'no'} ({result['acknowledgement']})")
    print("other rules that hit: " + (", ".join(h for h in report["hits"] if h not in
                                                 {r["name"] for r in report["routing"]}) or "-"))
    return EX_OK


def _by() -> str:
    return f"{state_user()} (CLI)"


def cmd_tickets_reply(args: argparse.Namespace) -> int:
    text = sys.stdin.buffer.read(MAX_PIPE_BYTES + 1)
    if len(text) > MAX_PIPE_BYTES:
        print(f"tickets reply: over {MAX_PIPE_BYTES} bytes on stdin", file=sys.stderr)
        return EX_USAGE
    with _app(args) as app:
        message_id = app.reply_as(args.number, args.as_agent, text.decode("utf-8", "replace"),
                                  internal=args.internal, by=_by())
    what = "internal note stored" if args.internal else "reply stored and queued to the customer"
    print(f"#{args.number}: {what} (<{message_id}>)")
    return EX_OK


def cmd_tickets_set(args: argparse.Namespace) -> int:
    changes = Changes(status=args.status, priority=args.priority, assignee=args.assignee, queue=args.queue)
    if changes == Changes():
        print("tickets set: give at least one of --status, --priority, --assignee, --queue", file=sys.stderr)
        return EX_USAGE
    with _app(args) as app:
        done = app.set_fields(args.number, changes, by=_by())
    print(f"#{args.number}: " + ("; ".join(done) if done else "nothing to change"))
    return EX_OK


def cmd_agents_list(args: argparse.Namespace) -> int:
    with _app(args) as app, app.db.transaction() as session:
        rows = readmodel.agents(session, app.settings)
    if args.json:
        _print_json(rows)
    else:
        _table(["address", "name", "queues", "skills", "away", "open tickets"],
               [[r["address"], r["name"], ", ".join(r["queues"]) or "-", ", ".join(r["skills"]) or "-",
                 "away" if r["away"] else "", r["open_tickets"]] for r in rows])
    return EX_OK


def cmd_agents_away(args: argparse.Namespace) -> int:
    with _app(args) as app:
        agent = app.settings.agent_for(args.address)
        if agent is None:
            known = ", ".join(a.address for a in app.settings.agents) or "none configured"
            print(f"agents away: {args.address} is not an agent ([[agents]]: {known})", file=sys.stderr)
            return EX_USAGE
        app.set_away(agent.address, args.state == "on", by="admin (CLI)")
    print(f"{agent.address}: " + ("away, gets no new tickets" if args.state == "on" else "back, gets tickets again"))
    return EX_OK


EX_UNAVAILABLE = 69  # `report --plot` without matplotlib


def _span(minutes: float | None) -> str:
    if minutes is None:
        return "-"
    days, rest = divmod(round(minutes), 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}d {hours}h {mins:02d}m" if days else f"{hours}h {mins:02d}m" if hours else f"{mins}m"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.1f}%"


def cmd_report(args: argparse.Namespace) -> int:
    from mailticket import plot
    from mailticket.store.report import first_response_hours, parse_day
    from mailticket.store.report import report as build_report

    try:
        since, until = parse_day("--since", args.since), parse_day("--until", args.until)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EX_USAGE
    if since is not None and until is not None and since > until:
        print(f"report: --since {since} is after --until {until}", file=sys.stderr)
        return EX_USAGE
    if args.plot:
        try:
            plot.require()
        except plot.PlotUnavailable as exc:
            print(exc, file=sys.stderr)
            return EX_UNAVAILABLE
    with _app(args) as app:
        if args.queue is not None and args.queue not in app.settings.queue_names:
            print(f"report: --queue {args.queue}: unknown queue ({', '.join(app.settings.queue_names)})",
                  file=sys.stderr)
            return EX_USAGE
        with app.db.transaction() as session:
            data = build_report(session, app.keeper, app.clock.now(), since=since, until=until, queue=args.queue)
            hours = first_response_hours(session, since=since, until=until, queue=args.queue) if args.plot else []
    if args.plot:
        try:
            plot.draw(data, hours, Path(args.plot))
        except plot.PlotUnavailable as exc:
            print(exc, file=sys.stderr)
            return EX_UNAVAILABLE
    if args.json:
        _print_json(data)
        return EX_OK
    period = data["period"]
    print(f"tickets created {period['since'] or 'since the start'} .. {period['until'] or 'today'} (UTC days), "
          f"{'queue ' + period['queue'] if period['queue'] else 'all queues'}: "
          f"{sum(w['created'] for w in data['weekly'])}")
    for name in ("first_response", "resolution"):
        f = data[name]
        print(f"{name.replace('_', ' ') + ':':<16} {f['count']} tickets; median {_span(f['median_minutes'])} "
              f"(business {_span(f['median_business_minutes'])}), p90 {_span(f['p90_minutes'])} "
              f"(business {_span(f['p90_business_minutes'])})")
    print()
    sla = data["sla"]
    _table(["SLA target", "met", "missed", "compliance", "breached open"],
           [[name.replace("_", " "), sla[name]["met"], sla[name]["missed"], _percent(sla[name]["compliance"]),
             sla[name]["breached_open"]] for name in ("first_response", "next_response", "resolution")])
    print(f"breaches: {sla['breaches']} (missed, and running past due now)")
    print()
    backlog = data["backlog"]
    print("backlog now (not closed): " + (", ".join(f"{k} {v}" for k, v in backlog["by_status"].items()) or "none")
          + ("; by queue: " + ", ".join(f"{k} {v}" for k, v in backlog["by_queue"].items())
             if backlog["by_queue"] else ""))
    reopen = data["reopen_rate"]
    print(f"reopened: {reopen['reopened']} of {reopen['solved']} solved ({_percent(reopen['rate'])})")
    csat = data["csat"]
    print(f"satisfaction: {csat['count']} ratings, average {csat['average'] if csat['average'] is not None else '-'}"
          + ("; " + "  ".join(f"{k}: {v}" for k, v in csat["distribution"].items()) if csat["count"] else ""))
    if args.plot:
        print(f"plot: {args.plot}")
    return EX_OK


# -- argument parsing ---------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailticket", description="Email-to-ticket daemon.")
    parser.add_argument("-c", "--config", help="TOML config file (else $MAILTICKET_CONFIG, ./mailticket.toml, "
                                               "or the embedded default)")
    parser.add_argument("--version", action="version", version=f"mailticket {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error, not just its line")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str,
            parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    add("serve", cmd_serve, "run the daemon: process the inbox, send the outbox")
    p = add("tick", cmd_tick, "run each job once and exit: IMAP poll, inbox, due sweep (reminders, escalations, "
            "auto-close, surveys), outbox")
    p.add_argument("--json", action="store_true")
    p = add("ingest", cmd_ingest, "read one message on stdin (MTA pipe); exit 0 once stored, 75 if not")
    p.add_argument("--recipient", action="append", help="envelope recipient (repeatable)")
    p.add_argument("--sender", help="envelope sender")
    p = add("import", cmd_import, "import RFC 5322 files, maildir folders and mbox files")
    p.add_argument("paths", nargs="+")
    p.add_argument("--json", action="store_true")
    db = add("db", lambda a: EX_USAGE, "database schema").add_subparsers(dest="db_command", required=True)
    add("upgrade", cmd_db_upgrade, "create or upgrade the schema", db)
    add("check-config", cmd_check_config, "validate the configuration without starting")
    p = add("poll", cmd_poll, "fetch mail from the IMAP mailboxes (--once: one pass, for cron)")
    p.add_argument("--once", action="store_true", help="one pass over each mailbox, then exit (75 if one failed)")
    p.add_argument("--mailbox", action="append", help="only this support address (repeatable)")
    p.add_argument("--json", action="store_true")
    supp = add("suppressions", lambda a: EX_USAGE, "addresses that get no automatic mail after a hard bounce")
    ssub = supp.add_subparsers(dest="s", required=True)
    p = add("list", cmd_suppressions_list, "list suppressed addresses", ssub)
    p.add_argument("--json", action="store_true")
    p = add("remove", cmd_suppressions_remove, "allow automatic mail to an address again", ssub)
    p.add_argument("address")
    p = add("explain", cmd_explain, "why a message got the ticket, verdict and mails it got")
    p.add_argument("message_id", metavar="MESSAGE-ID")
    p.add_argument("--json", action="store_true")
    p = add("status", cmd_status, "whether serve runs, each mail source's state, what waits in inbox and outbox")
    p.add_argument("--json", action="store_true")
    p = add("report", cmd_report, "response and resolution times, SLA compliance, backlog, reopens, satisfaction")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="tickets created on this day (UTC) or later")
    p.add_argument("--until", metavar="YYYY-MM-DD", help="tickets created on this day (UTC) or earlier")
    p.add_argument("--queue", help="only tickets in this queue (the backlog too)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", metavar="FILE.png", help="also draw weekly volume, first-response times and SLA "
                                                      "compliance into this PNG (needs matplotlib)")

    tickets = add("tickets", lambda a: EX_USAGE, "list and show tickets").add_subparsers(dest="t", required=True)
    p = add("list", cmd_tickets_list, "list tickets", tickets)
    p.add_argument("--status", choices=["new", "open", "pending", "solved", "closed"])
    p.add_argument("--queue", help="only tickets in this queue")
    p.add_argument("--assignee", metavar="ADDR", help="only tickets assigned to this agent (none: unassigned)")
    p.add_argument("--json", action="store_true")
    p = add("reply", cmd_tickets_reply, "reply to the customer as an agent (the text on stdin), or add a note",
            tickets)
    p.add_argument("number", type=int)
    p.add_argument("--as", dest="as_agent", required=True, metavar="AGENT_ADDRESS")
    p.add_argument("--internal", action="store_true", help="an internal note: nothing is sent")
    p = add("set", cmd_tickets_set, "change a ticket's status, priority, assignee or queue", tickets)
    p.add_argument("number", type=int)
    p.add_argument("--status", choices=["new", "open", "pending", "solved", "closed"])
    p.add_argument("--priority", choices=["low", "normal", "high", "urgent"])
    p.add_argument("--assignee", metavar="ADDR|none")
    p.add_argument("--queue")
    p = add("show", cmd_tickets_show, "show one ticket with its messages", tickets)
    p.add_argument("number", type=int)
    p.add_argument("--full", action="store_true", help="each message's whole text (quotes and all), not only "
                                                       "what its author wrote")
    p.add_argument("--json", action="store_true")

    outbox = add("outbox", lambda a: EX_USAGE, "outbound mail").add_subparsers(dest="o", required=True)
    p = add("list", cmd_outbox_list, "list outbound mail", outbox)
    p.add_argument("--state", choices=["queued", "sending", "delivering", "sent", "failed", "uncertain"])
    p.add_argument("--json", action="store_true")
    p = add("retry", cmd_outbox_retry, "queue a failed or uncertain mail again (after checking)", outbox)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", help="one outbox row")
    which.add_argument("--uncertain", action="store_true", help="every uncertain row")
    p.add_argument("--json", action="store_true")

    rules = add("rules", lambda a: EX_USAGE, "routing rules").add_subparsers(dest="r", required=True)
    p = add("test", cmd_rules_test, "show which rules a message would hit and where it would go; stores nothing",
            rules)
    p.add_argument("file", metavar="FILE.eml")
    p.add_argument("--json", action="store_true")

    agents = add("agents", lambda a: EX_USAGE, "agents and their away flag").add_subparsers(dest="a", required=True)
    p = add("list", cmd_agents_list, "list agents: queues, skills, away, open tickets", agents)
    p.add_argument("--json", action="store_true")
    p = add("away", cmd_agents_away, "mark an agent away (no new tickets) or back", agents)
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("state", choices=["on", "off"])

    quarantine = add("quarantine", lambda a: EX_USAGE, "messages that could not be processed")
    qsub = quarantine.add_subparsers(dest="q", required=True)
    p = add("list", cmd_quarantine_list, "list quarantined messages", qsub)
    p.add_argument("--json", action="store_true")
    p = add("replay", cmd_quarantine_replay, "process a quarantined message again", qsub)
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # "skipped: maximum number of running instances" is how a wake-up meets a running sweep: normal.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # `mailticket tickets list | head`: the reader is gone, which is not an error of ours.
        _silence_stdout()
        return EX_OK
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        return _report(exc)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _report(exc: Exception) -> int:
    """One line (or one per problem) for what an admin can fix, and the exit code that says which."""
    if isinstance(exc, ConfigError):
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CANTCREAT if isinstance(exc, CantCreateError) else EX_CONFIG
    if isinstance(exc, AdminError):
        print(f"mailticket: {exc}", file=sys.stderr)
        return EX_USAGE
    if isinstance(exc, SchemaError):
        print(f"mailticket: {exc}", file=sys.stderr)
        return EX_CONFIG
    if isinstance(exc, TemporaryError):
        print(f"mailticket: {exc}; try again", file=sys.stderr)
        return EX_TEMPFAIL
    if isinstance(exc, PermissionError):
        where = f" {exc.filename}" if exc.filename else ""
        print(f"mailticket: permission denied{where} (running as user {state_user()}): {exc.strerror}",
              file=sys.stderr)
        return EX_CANTCREAT
    if isinstance(exc, OSError):
        where = f" {exc.filename}:" if exc.filename else ""
        print(f"mailticket:{where} {exc.strerror or exc}", file=sys.stderr)
        return EX_IOERR
    print(f"mailticket: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback, "
          "and please report it)", file=sys.stderr)
    return EX_SOFTWARE
