"""After the feed drained: Postgres (decisions, actions, compensations, audit log) and the outcome
and dead-letter topics held to the exactly-once invariants. Each check counts violations; a clean
run has every count at 0.

Which decisions are compared with the pure rules: the reference (tests/support/reference.py)
decides each order's events in their partition's order, which Kafka guarantees. A decision that
reads state written from another partition (a buyer's refunds that day, decided from two topics
and by two workers at once) has no single right answer: it depends on which partition's event
was decided first. Those decisions are "order-dependent" and are held to invariants instead:
granted refunds per buyer per business day never above the policy's cap, and a refund intercepted
for abuse only when the cap was reached. An event is order-dependent when
- its verdict would refund (decided on an empty history) and its buyer has more such events that
  business day, across the whole feed, than the cap: only then can the order matter; or
- it is not a logistics exception and its order has a forged logistics exception (which revokes
  the order's recovery right from another topic); or
- an earlier event of the same order and exception type is order-dependent (the compensation and
  payment-attempt history it leaves depends on that one's decision).
Every other decision must equal the reference's: outcome, rule ids, actions and compensation.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

import orjson
import psycopg

from order_recovery.config import Settings
from order_recovery.core.headers import DLQ_ERROR_CLASS, DLQ_ID, dead_letter_id
from order_recovery.domain.contract import event_from_dict
from order_recovery.domain.decision import ActionType, CompensationKind, Decision, Outcome
from order_recovery.domain.history import OrderHistory, business_day
from order_recovery.domain.outcome import outcome_event_id
from order_recovery.domain.policy import Policy, load_policies
from order_recovery.domain.rules import decide
from tests.chaos.feed import Feed
from tests.support.commit_order import DECISIONS_IN_COMMIT_ORDER
from tests.support.kafka_io import read_topic
from tests.support.reference import expected_decisions

REFUND_ABUSE_RULE = "risk.refund_abuse_intercept"
COMPENSATING_ACTIONS = (str(ActionType.ISSUE_COUPON), str(ActionType.AUTO_REFUND))

#: The table's rows, in order: (key, label). Every count must be 0.
CHECKS = (
    ("lost", "lost: valid events without a decision"),
    ("decided_twice", "decided twice"),
    ("compensated_twice", "compensation twice for one order and exception type"),
    ("refunds_over_cap", "refunds per buyer per day above the policy's cap"),
    ("intercepts_under_cap", "refunds intercepted while the buyer was under the cap"),
    ("differ_from_rules", "decisions that differ from the pure rules (order-independent ones)"),
    ("outcomes_missing", "outcomes missing from the topic"),
    ("offsets_backwards", "committed offsets that went backwards (a zombie's commit)"),
    ("outcomes_out_of_order", "orders whose outcomes appeared out of order"),
    ("poison_missing", "poison records missing from the DLQ"),
    ("poison_twice", "poison records dead-lettered twice (two different letters)"),
    ("unexpected", "valid events dead-lettered, or poison decided"),
    ("cases_opened_not_once", "cases not opened exactly once (no case, or not one opening step)"),
    ("cases_opened_by_another", "cases not opened by their first non-rejected decision"),
    ("case_step_gaps", "cases whose step numbers are not 1..seq"),
    ("action_keys_twice", "action keys released by two case steps"),
    ("step_audits_not_one", "case steps without exactly one audit row"),
)


@dataclass
class Findings:
    counts: dict[str, int]
    examples: dict[str, list[str]]
    info: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not any(self.counts.values())


# ---------------------------------------------------------------------------- what is stored
class CaseRow(NamedTuple):
    order_id: str
    exception_type: str
    opened_by: str
    seq: int  # the case's last step


class StepRow(NamedTuple):
    order_id: str
    exception_type: str
    seq: int
    from_state: str | None  # None: the step opened the case
    cause_kind: str
    cause_ref: str
    action_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Stored:
    decisions: dict[str, tuple[Any, ...]]  # event id -> row (see _DECISIONS)
    actions: dict[str, tuple[str, ...]]
    compensations: dict[str, tuple[str, int]]  # event id -> (kind, amount)
    refunds_by_buyer_day: Counter[tuple[str, date]]
    audit_rows: Counter[str]
    #: Dead letters the broker refused even truncated, kept in Postgres instead (migration
    #: 0009): (identity, error class).
    kept_letters: tuple[tuple[str, str], ...] = ()
    #: Decision event ids in commit order (tests/support/commit_order.py).
    committed: tuple[str, ...] = ()
    cases: tuple[CaseRow, ...] = ()
    steps: tuple[StepRow, ...] = ()
    #: Audit rows of case steps (`detail ? 'step'`) per (order, exception type, step).
    step_audits: Counter[tuple[str, str, int]] = field(default_factory=Counter)


_DECISIONS = """SELECT event_id::text, order_id, exception_type, buyer_id, platform, occurred_at,
    outcome, rule_ids, source_topic, source_partition, source_offset FROM decisions"""


def read_stored(dsn: str) -> Stored:
    with psycopg.connect(dsn) as conn:
        decisions = {r[0]: r for r in conn.execute(_DECISIONS)}
        actions: dict[str, list[str]] = defaultdict(list)
        for event_id, action in conn.execute(
            "SELECT event_id::text, action FROM actions ORDER BY event_id, seq"
        ):
            actions[event_id].append(action)
        compensations = {}
        refunds: Counter[tuple[str, date]] = Counter()
        for event_id, kind, amount, buyer, day in conn.execute(
            "SELECT event_id::text, kind, amount_fen, buyer_id, event_day FROM compensations"
        ):
            compensations[event_id] = (kind, amount)
            if kind == str(CompensationKind.REFUND):
                refunds[(buyer, day)] += 1
        audit = Counter(
            {
                e: n
                for e, n in conn.execute(
                    # a decision's audit rows (a case's steps are audited too: `step`)
                    "SELECT event_id::text, count(*) FROM audit_log"
                    " WHERE NOT detail ? 'step' GROUP BY 1"
                )
            }
        )
        kept = tuple(
            (dead_letter_id(topic, partition, offset), error_class)
            for topic, partition, offset, error_class in conn.execute(
                """SELECT source_topic, source_partition, source_offset, error_class
                   FROM unsendable_dead_letters"""
            )
        )
        lifecycle = _read_cases(conn)
    return Stored(
        decisions,
        {k: tuple(v) for k, v in actions.items()},
        compensations,
        refunds,
        audit,
        kept,
        *lifecycle,
    )


def _read_cases(
    conn: psycopg.Connection[Any],
) -> tuple[
    tuple[str, ...], tuple[CaseRow, ...], tuple[StepRow, ...], Counter[tuple[str, str, int]]
]:
    """Decisions in commit order, cases, their steps and the steps' audit rows."""
    (tracked,) = conn.execute("SELECT current_setting('track_commit_timestamp')").fetchone() or (
        None,
    )
    assert tracked == "on", "commit order needs track_commit_timestamp (the local stack sets it)"
    committed = tuple(r[0] for r in conn.execute(DECISIONS_IN_COMMIT_ORDER))
    cases = tuple(
        CaseRow(*r)
        for r in conn.execute("SELECT order_id, exception_type, opened_by::text, seq FROM cases")
    )
    steps = tuple(
        StepRow(*r[:6], tuple(r[6]))
        for r in conn.execute(
            """SELECT order_id, exception_type, seq, from_state, cause_kind, cause_ref,
                      action_keys FROM case_steps"""
        )
    )
    audits: Counter[tuple[str, str, int]] = Counter(
        {
            (o, t, step): n
            for o, t, step, n in conn.execute(
                """SELECT order_id, exception_type, (detail->>'step')::int, count(*)
                   FROM audit_log WHERE detail ? 'step' GROUP BY 1, 2, 3"""
            )
        }
    )
    return committed, cases, steps, audits


# ---------------------------------------------------------------------------- order dependence
def _refunds(decision: Decision) -> bool:
    comp = decision.compensation
    return (
        comp is not None and comp.kind is CompensationKind.REFUND
    ) or ActionType.AUTO_REFUND in (
        *decision.actions,
        *decision.held_actions,
    )


def order_dependent(events: Iterable[dict[str, Any]], policies: dict[str, Policy]) -> set[str]:
    """The event ids whose decision may depend on the order in which partitions are decided (see
    the module docstring). `events`: unique, in an order every partition agrees with."""
    parsed = [event_from_dict(e) for e in events]
    would_refund: Counter[tuple[str, date]] = Counter()
    forged: set[str] = set()
    refunding: set[str] = set()
    for event in parsed:
        env = event.envelope
        if _refunds(decide(event, OrderHistory(), policies[env.platform])):
            refunding.add(env.event_id)
            would_refund[(env.buyer_id, business_day(env.occurred_at))] += 1
        if str(env.event_type) == "logistics-exception" and getattr(
            event, "tracking_forged", False
        ):
            forged.add(env.order_id)
    dependent: set[str] = set()
    tainted: set[tuple[str, str]] = set()
    for event in parsed:
        env = event.envelope
        key = (env.order_id, str(env.event_type))
        cap = policies[env.platform].risk.max_buyer_refunds_per_day
        if (
            key in tainted
            or (
                env.event_id in refunding
                and would_refund[(env.buyer_id, business_day(env.occurred_at))] > cap
            )
            or (str(env.event_type) != "logistics-exception" and env.order_id in forged)
        ):
            dependent.add(env.event_id)
            tainted.add(key)
    return dependent


# ---------------------------------------------------------------------------- the checks
class Published(NamedTuple):
    """An outcome record as read from the topic."""

    partition: int
    offset: int
    outcome: dict[str, Any]


class Letter(NamedTuple):
    """A dead letter as read from a DLQ topic."""

    identity: str  # see dead_letter_identity
    error_class: str


def dead_letter_identity(headers: Iterable[tuple[str, bytes | None]]) -> str:
    """`dlq.id` when the worker sets it, else the original topic/partition/offset headers."""
    found = {k: (v or b"").decode(errors="replace") for k, v in headers}
    if DLQ_ID in found:
        return found[DLQ_ID]
    return "/".join(found.get(f"dlq.original.{h}", "?") for h in ("topic", "partition", "offset"))


def check(settings: Settings, feed: Feed, regressions: Iterable[str] = ()) -> Findings:
    """Read Postgres and the topics, then `evaluate`. `regressions`: committed offsets seen going
    backwards (GroupMonitor.regressions)."""
    bootstrap = settings.kafka_bootstrap_servers
    outcomes = [
        Published(m.partition() or 0, m.offset() or 0, orjson.loads(m.value()))
        for m in read_topic(bootstrap, settings.outcome_topic, timeout_s=120)
    ]
    letters = [
        Letter(
            dead_letter_identity(m.headers() or ()),
            dict(m.headers() or ()).get(DLQ_ERROR_CLASS, b"?").decode(),
        )
        for topic in settings.source_topics
        for m in read_topic(bootstrap, settings.dlq_topic(topic), timeout_s=60)
    ]
    poison = {
        f"{settings.source_topic(r.event_type)}/{r.partition}/{r.offset}": r.kind
        for r in feed.poison
    }
    events = [r.event for r in feed.valid if r.event is not None]
    stored = read_stored(settings.database_reader_url)
    letters += [Letter(identity, error_class) for identity, error_class in stored.kept_letters]
    return evaluate(stored, outcomes, letters, events, poison, regressions)


def evaluate(
    stored: Stored,
    outcomes: list[Published],
    letters: list[Letter],
    events: list[dict[str, Any]],
    poison: dict[str, str],
    regressions: Iterable[str] = (),
    policies: dict[str, Policy] | None = None,
) -> Findings:
    """Every check. `events`: the valid events as produced (duplicates included), in an order
    each partition agrees with; `poison`: each poison record's address (topic/partition/offset,
    partition and offset -1 when the broker never acknowledged it) and kind."""
    policies = policies or load_policies()
    found: dict[str, list[str]] = defaultdict(list)
    found["offsets_backwards"] = list(regressions)
    info: dict[str, int] = {}

    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        unique.setdefault(event["event_id"], event)
    decided = set(stored.decisions)
    found["lost"] = sorted(set(unique) - decided)
    found["unexpected"] = [
        f"decided, not a valid event: {e}" for e in sorted(decided - set(unique))
    ]

    expected = expected_decisions(list(unique.values()))
    dependent = order_dependent(unique.values(), policies)
    info["decisions compared with the rules"] = len(decided & set(unique) - dependent)
    info["order-dependent decisions (held to invariants)"] = len(decided & dependent)
    for event_id in sorted(decided & set(unique) - dependent):
        difference = _differs(stored, event_id, expected[event_id])
        if difference:
            found["differ_from_rules"].append(f"{event_id}: {difference}")

    found["decided_twice"] = [e for e, n in stored.audit_rows.items() if n > 1]
    _check_compensations(stored, found)
    _check_refund_cap(stored, policies, found, info)
    _check_outcomes(stored, outcomes, found, info)
    _check_dead_letters(poison, letters, found, info)
    _check_cases(stored, found, info)
    return Findings(
        {key: len(found.get(key, [])) for key, _ in CHECKS},
        {key: found[key][:5] for key, _ in CHECKS if found.get(key)},
        info,
    )


def _differs(stored: Stored, event_id: str, want: Decision) -> str:
    row = stored.decisions[event_id]
    got = (
        row[6],
        tuple(row[7]),
        stored.actions.get(event_id, ()),
        stored.compensations.get(event_id),
    )
    comp = want.compensation
    expected = (
        str(want.outcome),
        tuple(want.rule_ids),
        tuple(str(a) for a in want.actions),
        None if comp is None else (str(comp.kind), comp.amount_fen),
    )
    return "" if got == expected else f"stored {got}, the rules say {expected}"


def _check_compensations(stored: Stored, found: dict[str, list[str]]) -> None:
    """A compensation granted twice for one order and exception type: two decisions whose
    actions grant one, whatever the compensations table kept (its key refuses the second row,
    but the decision and its outcome have told the buyer already)."""
    granting: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event_id, actions in stored.actions.items():
        row = stored.decisions.get(event_id)
        if row is not None and any(a in COMPENSATING_ACTIONS for a in actions):
            granting[(row[1], row[2])].append(event_id)
    for (order_id, exception_type), events in sorted(granting.items()):
        if len(events) > 1:
            found["compensated_twice"].append(f"{order_id} {exception_type}: {sorted(events)}")


def _check_refund_cap(
    stored: Stored,
    policies: dict[str, Policy],
    found: dict[str, list[str]],
    info: dict[str, int],
) -> None:
    granted: Counter[tuple[str, date]] = Counter()
    intercepted: Counter[tuple[str, date]] = Counter()
    caps: dict[tuple[str, date], int] = {}
    for event_id, row in stored.decisions.items():
        _, _, _, buyer, platform, occurred_at, _, rule_ids, *_ = row
        day = (buyer, business_day(occurred_at))
        cap = policies[platform].risk.max_buyer_refunds_per_day
        caps[day] = min(cap, caps.get(day, cap))
        if str(ActionType.AUTO_REFUND) in stored.actions.get(event_id, ()):
            granted[day] += 1
        if REFUND_ABUSE_RULE in rule_ids:
            intercepted[day] += 1
    for day, cap in sorted(caps.items()):
        n = max(granted[day], stored.refunds_by_buyer_day[day])
        if n > cap:
            found["refunds_over_cap"] += [
                f"{day[0]} {day[1]}: refund {i} > cap {cap}" for i in range(cap + 1, n + 1)
            ]
        if intercepted[day] and n < cap:
            found["intercepts_under_cap"].append(
                f"{day[0]} {day[1]}: {intercepted[day]} intercepted with {n} of {cap} granted"
            )
    info["buyer-days where the refund cap bound"] = sum(1 for d in intercepted if intercepted[d])
    info["refunds intercepted at the cap"] = sum(intercepted.values())


def _check_outcomes(
    stored: Stored, outcomes: list[Published], found: dict[str, list[str]], info: dict[str, int]
) -> None:
    """Every decision's outcome on the topic; per order and source topic, the FIRST appearance of
    each outcome (consumers dedupe on its event_id) in the order of the source offsets. A later
    copy of an outcome already seen is a resend: allowed, counted."""
    first: dict[str, tuple[int, int]] = {}
    copies: dict[str, set[bytes]] = defaultdict(set)
    for published in outcomes:
        outcome = published.outcome
        position = (published.partition, published.offset)
        outcome_id = outcome["event_id"]
        if outcome_id not in first or position < first[outcome_id]:
            first[outcome_id] = position
        decision = orjson.dumps(outcome["decision"], option=orjson.OPT_SORT_KEYS)
        copies[outcome["source_event_id"]].add(decision)
    info["outcome records"] = len(outcomes)
    info["outcome resends (allowed)"] = len(outcomes) - len(first)
    found["decided_twice"] += [
        f"{e}: {len(c)} different decisions published" for e, c in copies.items() if len(c) > 1
    ]
    by_order: dict[tuple[str, str], list[tuple[tuple[int, int], int]]] = defaultdict(list)
    for event_id, row in stored.decisions.items():
        outcome_id = outcome_event_id(event_id)
        if outcome_id not in first:
            found["outcomes_missing"].append(event_id)
            continue
        by_order[(row[1], row[8])].append((first[outcome_id], row[10]))
    for (order_id, topic), seen in sorted(by_order.items()):
        offsets = [source_offset for _, source_offset in sorted(seen)]
        if offsets != sorted(offsets):
            found["outcomes_out_of_order"].append(
                f"{order_id} ({topic}): outcomes first seen for source offsets {offsets}"
            )


def _check_dead_letters(
    poison: dict[str, str], letters: list[Letter], found: dict[str, list[str]], info: dict[str, int]
) -> None:
    """Each poison record has a dead letter; copies of one dead letter (one `dlq.id`: written
    again by a worker that died before committing the record's offset) are resends, which
    `recoveryctl dlq` counts and replays once. Dead-lettered twice: two different dead letters
    for one record (it was judged twice, differently)."""
    by_identity: dict[str, list[str]] = defaultdict(list)
    for letter in letters:
        by_identity[letter.identity].append(letter.error_class)
    classes = Counter(letter.error_class for letter in letters)
    info.update({f"dead letters: {c}": n for c, n in sorted(classes.items())})
    info["dead-letter resends (same dlq.id, allowed)"] = len(letters) - len(by_identity)
    for identity, kind in sorted(poison.items()):
        judged = by_identity.get(identity, [])
        if identity.endswith("/-1/-1"):
            found["poison_missing"].append(f"{kind}: never acknowledged by the broker")
        elif not judged:
            found["poison_missing"].append(f"{kind} at {identity}")
        elif len(set(judged)) > 1:
            found["poison_twice"].append(f"{kind} at {identity}: {sorted(set(judged))}")
    found["unexpected"] += [
        f"dead letter for {i} (not poison)" for i in sorted(by_identity) if i not in poison
    ]


def _check_cases(stored: Stored, found: dict[str, list[str]], info: dict[str, int]) -> None:
    """The cases the decisions opened (migration 0010, OPEN_CASES): each (order, exception type)
    with a decision that is not a rejection has one case, opened by one step (step 1, caused by
    that exception) and by the first such decision in commit order, whichever worker or batch
    wrote it; its steps are numbered 1..seq; an action key (what an executor applies once) is
    released by one step only; each step has one audit row."""
    first: dict[tuple[str, str], str] = {}
    for event_id in stored.committed:
        row = stored.decisions.get(event_id)
        if row is not None and row[6] != str(Outcome.REJECTED):
            first.setdefault((row[1], row[2]), event_id)
    cases = {(c.order_id, c.exception_type): c for c in stored.cases}
    steps: dict[tuple[str, str], list[StepRow]] = defaultdict(list)
    for step in stored.steps:
        steps[(step.order_id, step.exception_type)].append(step)
    info["cases"] = len(cases)
    info["case steps"] = len(stored.steps)

    for key in sorted(set(first) | set(cases) | set(steps)):
        name = f"{key[0]} {key[1]}"
        case = cases.get(key)
        if case is None:
            why = "no case" if key in first else "steps without a case"
            found["cases_opened_not_once"].append(f"{name}: {why}")
            continue
        openings = [s for s in steps.get(key, []) if s.from_state is None]
        if [(s.seq, s.cause_kind, s.cause_ref) for s in openings] != [
            (1, "exception", case.opened_by)
        ]:
            found["cases_opened_not_once"].append(
                f"{name}: opening steps {[(s.seq, s.cause_ref) for s in openings]}, "
                f"opened by {case.opened_by}"
            )
        if key not in first:
            found["cases_opened_by_another"].append(
                f"{name}: opened by {case.opened_by}, no decision that is not a rejection"
            )
        elif case.opened_by != first[key]:
            found["cases_opened_by_another"].append(
                f"{name}: opened by {case.opened_by}, first committed {first[key]}"
            )
        numbers = sorted(s.seq for s in steps.get(key, []))
        if numbers != list(range(1, case.seq + 1)):
            found["case_step_gaps"].append(f"{name}: steps {numbers}, case at step {case.seq}")

    released: dict[str, list[str]] = defaultdict(list)
    for step in stored.steps:
        for action_key in step.action_keys:
            released[action_key].append(f"{step.order_id} {step.exception_type} {step.seq}")
    found["action_keys_twice"] = [
        f"{k}: steps {where}" for k, where in sorted(released.items()) if len(where) > 1
    ]

    numbered = Counter((s.order_id, s.exception_type, s.seq) for s in stored.steps)
    for key3 in sorted(set(numbered) | set(stored.step_audits)):
        if (numbered[key3], stored.step_audits[key3]) != (1, 1):
            found["step_audits_not_one"].append(
                f"{key3}: {numbered[key3]} step(s), {stored.step_audits[key3]} audit row(s)"
            )
