"""How each command's result looks in a terminal. Pure presentation: the same values go out as
JSON with `--json`, so nothing here is the only place a figure exists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from order_recovery.ops.cases import CaseShow, Entry
from order_recovery.ops.dlq import Letter, TopicSummary
from order_recovery.ops.output import escape_bytes, fen, minutes, percent, when
from order_recovery.ops.reconcile import Line, Reconciliation
from order_recovery.ops.replay import ReplayResult
from order_recovery.ops.reviews import Waiting
from order_recovery.ops.simulate import Side, Simulation
from order_recovery.ops.stats import TARGET_MEAN_TTR_S, TARGET_RECOVERY_RATE, Figures
from order_recovery.ops.unsendable import Unsendable


def _mark(ok: bool | None) -> str:
    return "-" if ok is None else ("[green]met[/]" if ok else "[red]missed[/]")


def dlq_list(out: Console, summaries: Sequence[TopicSummary]) -> None:
    table = Table(
        "DLQ topic", "records", "oldest failure", "newest failure", "by error class", "unsendable"
    )
    for s in summaries:
        classes = ", ".join(f"{k}={n}" for k, n in s.by_error_class.items()) or "-"
        style = "red" if s.unsendable else ("yellow" if s.count else None)
        table.add_row(
            s.topic,
            str(s.count),
            when(s.oldest_failure),
            when(s.newest_failure),
            classes,
            "?" if s.unsendable is None else str(s.unsendable),
            style=style,
        )
    out.print(table)
    kept = sum(s.unsendable or 0 for s in summaries)
    if kept:
        out.print(
            f"{kept} dead letter(s) refused by the broker are kept in Postgres: "
            "`recoveryctl dlq unsendable`",
            markup=False,
        )


def _record(
    out: Console,
    key: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    doc: object | None,
    raw_line: str,
) -> None:
    """A dead letter's key, headers and value: decoded when it is JSON, else `raw_line`."""
    out.print(f"key        {'-' if key is None else escape_bytes(key)}", markup=False)
    for k, v in headers:
        out.print(f"  {k}: {v.decode('utf-8', 'backslashreplace')}", markup=False)
    if doc is not None:
        out.print_json(data=doc)
    else:
        out.print(raw_line, markup=False)


def dlq_show(out: Console, letters: Sequence[Letter], matched: int) -> None:
    for x in letters:
        out.rule(f"{x.topic}[{x.partition}]@{x.offset}  [bold]{x.error_class}[/]", align="left")
        out.print(f"failed at  {when(x.failed_at)}   order {x.order_id or '-'}", markup=False)
        raw = "null" if x.value is None else escape_bytes(x.value)
        _record(out, x.key, x.headers, x.decoded(), f"value (raw, does not decode as JSON): {raw}")
    out.print(f"{len(letters)} shown of {matched} matching")


def unsendable(out: Console, rows: Sequence[Unsendable], matched: int) -> None:
    for x in rows:
        out.rule(
            f"{x.source_topic}[{x.source_partition}]@{x.source_offset}  [bold]{x.error_class}[/]",
            align="left",
        )
        out.print(f"failed at  {when(x.failed_at)}   worker {x.worker_id}", markup=False)
        out.print(f"refused    {x.refusal}", markup=False)
        out.print(f"error      {x.error_message}", markup=False)
        raw = "null" if x.value_prefix is None else escape_bytes(x.value_prefix)
        kept = 0 if x.value_prefix is None else len(x.value_prefix)
        _record(
            out,
            x.key,
            x.headers,
            x.decoded(),
            f"value ({kept} of {x.value_bytes} bytes, raw): {raw}",
        )
    out.print(f"{len(rows)} shown of {matched} kept in Postgres")


def replay(out: Console, result: ReplayResult) -> None:
    table = Table("DLQ record", "to topic", "error class", "order", "failed at")
    for r in result.selected:
        table.add_row(
            f"{r['dlq_topic']}[{r['partition']}]@{r['offset']}",
            r["target_topic"],
            r["error_class"],
            r["order_id"] or "-",
            when(r["failed_at"]),
        )
    if result.selected:
        out.print(table)
    verb = "would send" if result.dry_run else "sent"
    count = len(result.selected) if result.dry_run else result.sent
    state = "resumed" if result.resumed else "new"
    tail = "finished" if result.done else ("limit reached" if result.limit_reached else "stopped")
    out.print(
        f"replay {result.replay_id} ({state}): {verb} {count} record(s), "
        f"examined {result.examined}; {tail}"
    )
    if result.duplicates:
        out.print(f"skipped {result.duplicates} second copy(ies) of a dead letter (same dlq.id)")
    if result.truncated:
        out.print(
            f"skipped {result.truncated} truncated dead letter(s): their value is only the "
            "record's head (the whole record is at dlq.original.topic/partition/offset)"
        )


def _case_headers(out: Console, show: CaseShow) -> None:
    """One row per case of the order, then every action its steps released and its report."""
    table = Table(
        "exception",
        "state",
        "steps",
        "opened",
        "closed",
        "pending deadline",
        "held",
        "review",
        title=f"cases of order {escape(show.order_id)}",
    )
    for c in show.cases:
        deadline = (
            "-"
            if c.deadline is None
            else f"{c.deadline['kind']} due {when(c.deadline['due_at'])} "
            f"(step {c.deadline['set_by_step']})"
        )
        table.add_row(
            c.exception_type,
            f"[bold]{c.state}[/]",
            str(c.steps),
            when(c.opened_at),
            when(c.closed_at),
            deadline,
            ", ".join(c.held_actions) or "-",
            "[red]overdue[/]" if c.review_overdue else "-",
        )
    out.print(table)
    released = [(c.exception_type, a) for c in show.cases for a in c.actions]
    if not released:
        return
    actions = Table(
        "exception", "step", "action key", "status", "reported", title="actions released"
    )
    styles = {"completed": "green", "failed": "red", "retrying": "yellow"}
    for etype, a in released:
        actions.add_row(
            etype,
            str(a.released_by),
            escape(a.key),
            a.status,
            when(a.reported_at),
            style=styles.get(a.status),
        )
    out.print(actions)


def _entry_note(e: Entry) -> str | None:
    """The dim line under an entry: why, by whom, with what effect."""
    d = e.detail
    if e.kind == "decision":
        flags = f" flags: {', '.join(d['risk_flags'])}" if d["risk_flags"] else ""
        return f"{d['reason']} ({d['policy_version']}){flags}"
    if e.kind == "step":
        cause = d["cause"]
        by = f"by {d['actor']}: " if d["actor"] else ""
        note = f"{cause['kind']} {cause['ref']} at {when(cause['at'])}; {by}{d['reason']}"
        if d["released"]:
            keys = ", ".join(f"{r['key']} ({r['status']})" for r in d["released"])
            note += f"; released {keys}"
        return note
    if e.kind == "resolution":
        note = f"event time {when(d['occurred_at'])}"
        return note + (f"; changed nothing: {d['why']}" if d["ignored"] else "")
    return None


def case(out: Console, show: CaseShow) -> None:
    if show.cases:
        _case_headers(out, show)
    table = Table("at", "what", "exception", "summary", title=f"order {escape(show.order_id)}")
    styles = {
        "event": "cyan",
        "decision": "bold",
        "compensation": "magenta",
        "resolution": "cyan",
        "step": "bold",
        "deadline_fired": "yellow",
    }
    for e in show.timeline:
        table.add_row(
            when(e.at),
            e.kind.replace("_", " "),
            e.exception_type,
            escape(e.summary),
            style=styles.get(e.kind),
        )
        note = _entry_note(e)
        if note:
            table.add_row("", "", "", f"[dim]{escape(note)}[/]")
    out.print(table)


def stats(out: Console, total: Figures, groups: Sequence[Figures], by: str | None) -> None:
    """Cases first (what came of the decisions), then the decisions, then today's open cases."""
    rows = [*groups, total]

    def name(f: Figures) -> str:
        return "[bold]all[/]" if f is total else str(f.group)

    cases = Table(
        by or "",
        "closed",
        "recovered",
        "rate",
        "mean TTR",
        "p90 TTR",
        "closed as",
        title="cases closed",
    )
    for f in rows:
        cases.add_row(
            name(f),
            str(f.closed),
            str(f.recovered),
            percent(f.recovery_rate),
            minutes(f.mean_ttr_s),
            minutes(f.p90_ttr_s),
            ", ".join(f"{k}={n}" for k, n in sorted(f.closed_states.items())),
        )
    out.print(cases)
    decisions = Table(by or "", "decided", "coupons", "refunds", "outcomes", title="decisions")
    for f in rows:
        decisions.add_row(
            name(f),
            str(f.decided),
            f"{f.coupons} / {fen(f.coupon_fen)}",
            f"{f.refunds} / {fen(f.refund_fen)}",
            ", ".join(f"{k}={n}" for k, n in sorted(f.outcomes.items())),
        )
    out.print(decisions)
    open_cases = Table(
        by or "",
        "open",
        "by state",
        "by age",
        "awaiting review",
        "overdue",
        title="open cases (now)",
    )
    for f in rows:
        open_cases.add_row(
            name(f),
            str(f.open),
            ", ".join(f"{k}={n}" for k, n in sorted(f.open_states.items())),
            ", ".join(f"{k}={n}" for k, n in f.open_ages.items()),
            f"{f.held_for_review} / {fen(f.held_for_review_fen)}",
            str(f.reviews_overdue),
        )
    out.print(open_cases)
    out.print(
        f"recovery rate {percent(total.recovery_rate)} (target {TARGET_RECOVERY_RATE:.0%}): "
        f"{_mark(total.rate_ok)};  mean time to recovery {minutes(total.mean_ttr_s)} "
        f"(target {TARGET_MEAN_TTR_S // 60} min): {_mark(total.ttr_ok)}"
    )


def _lines(out: Console, title: str, lines: Sequence[Line]) -> None:
    table = Table("order", "exception", "kind", "amount", "where", title=title)
    for x in lines:
        table.add_row(x.order_id, x.exception_type, x.kind, fen(x.amount_fen), x.where)
    out.print(table)


def reconciliation(out: Console, r: Reconciliation) -> None:
    def totals(t: dict[str, dict[str, int]]) -> str:
        return ", ".join(f"{k} {v['count']} / {fen(v['amount_fen'])}" for k, v in t.items())

    out.print(f"day {r.day} (Asia/Shanghai); decided: {totals(r.totals(r.decided))}")
    if r.ledger is None:
        _lines(out, "compensations decided", r.decided)
        out.print("no ledger given: nothing compared")
        return
    out.print(f"ledger: {totals(r.totals(r.ledger))}")
    if r.missing:
        _lines(out, "[red]missing from the ledger[/]", r.missing)
    if r.extra:
        _lines(out, "[red]in the ledger, not decided that day[/]", r.extra)
    if r.mismatched:
        table = Table(
            "order",
            "exception",
            "kind",
            "decided",
            "ledger",
            "ledger line",
            title="[red]amounts differ[/]",
        )
        for d, g in r.mismatched:
            table.add_row(
                d.order_id,
                d.exception_type,
                d.kind,
                fen(d.amount_fen),
                fen(g.amount_fen),
                g.where,
            )
        out.print(table)
    if r.booked_though_failed:
        table = Table(
            "order", "exception", "kind", "decided", "ledger", "ledger line",
            title="[red]booked though the executor reported the action failed[/]",
        )  # fmt: skip
        for d, g in r.booked_though_failed:
            table.add_row(
                d.order_id, d.exception_type, d.kind, fen(d.amount_fen), fen(g.amount_fen), g.where
            )
        out.print(table)
    reported = r.reported()
    out.print(
        f"executor reports: {reported['completed']} completed, {reported['failed']} failed "
        f"(owed nothing), {reported['unreported']} not reported yet"
    )
    if r.clean:
        out.print("[green]ledger matches[/]")
    else:
        failed = f", {len(r.booked_though_failed)} booked though failed"
        out.print(
            f"[red]{len(r.missing)} missing, {len(r.extra)} extra, "
            f"{len(r.mismatched)} mismatched{failed if r.booked_though_failed else ''}[/]"
        )


def _side(s: Side, key: str) -> Any:
    return s.to_json()[key]


def simulation(out: Console, sim: Simulation, show: int) -> None:
    outcomes = sorted(set(sim.decided.outcomes) | set(sim.simulated.outcomes))
    table = Table("", "decided", "simulated", "change")
    for o in outcomes:
        a, b = sim.decided.outcomes[o], sim.simulated.outcomes[o]
        table.add_row(o, str(a), str(b), f"{b - a:+d}")
    a_rate, b_rate = sim.decided.recovery_rate, sim.simulated.recovery_rate
    delta = "-" if a_rate is None or b_rate is None else f"{(b_rate - a_rate) * 100:+.1f} pt"
    table.add_row("[bold]recovery rate[/]", percent(a_rate), percent(b_rate), delta)
    for kind in ("coupon", "refund"):
        a_n, b_n = _side(sim.decided, kind), _side(sim.simulated, kind)
        table.add_row(
            f"{kind}s",
            f"{a_n['count']} / {fen(a_n['amount_fen'])}",
            f"{b_n['count']} / {fen(b_n['amount_fen'])}",
            fen(b_n["amount_fen"] - a_n["amount_fen"]),
        )
    spend_a = sim.decided.coupon_fen + sim.decided.refund_fen
    spend_b = sim.simulated.coupon_fen + sim.simulated.refund_fen
    table.add_row("[bold]compensation spend[/]", fen(spend_a), fen(spend_b), fen(spend_b - spend_a))
    out.print(table)
    if sim.not_decidable:
        out.print(f"not decidable with these policies: {dict(sim.not_decidable)}")
    out.print(f"{sim.events} event(s), {len(sim.changes)} decision(s) would change")
    if sim.changes and show:
        changes = Table("event", "order", "platform", "decided", "simulated")
        for s, v in sim.changes[:show]:
            changes.add_row(
                s.event_id,
                s.order_id,
                s.platform,
                f"{s.decided.outcome} {fen(s.decided.compensation_fen)}\n"
                f"[dim]{escape(', '.join(s.decided.rule_ids))}[/]",
                f"{v.outcome} {fen(v.compensation_fen)}\n[dim]{escape(', '.join(v.rule_ids))}[/]",
            )
        out.print(changes)
        if len(sim.changes) > show:
            out.print(f"... {len(sim.changes) - show} more (--json lists all)")


def reviews(out: Console, waiting: Sequence[Waiting]) -> None:
    table = Table("waiting since", "order", "exception", "platform", "amount", "held", "flags")
    for w in waiting:
        since = when(w.waiting_since) + (" [red](overdue)[/]" if w.overdue else "")
        table.add_row(
            since,
            escape(w.order_id),
            w.exception_type,
            w.platform,
            fen(w.amount_fen),
            ", ".join(w.held_actions) or "-",
            ", ".join(w.risk_flags) or "-",
        )
        if w.reason:
            table.add_row("", "", "", "", "", f"[dim]{escape(w.reason)}[/]", "")
    out.print(table)
    out.print(f"{len(waiting)} case(s) waiting for a review")
