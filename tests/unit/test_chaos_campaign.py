"""The fault campaign's checker, feed and schedule, without services: a store that did everything
right is clean, and each kind of wrong the campaign looks for is counted by its own check."""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from order_recovery.domain.contract import event_from_dict
from order_recovery.domain.decision import ActionType
from order_recovery.domain.history import business_day
from order_recovery.domain.outcome import outcome_event_id
from order_recovery.domain.policy import load_policies
from tests.chaos.checker import (
    CaseRow,
    Findings,
    Letter,
    Published,
    StepRow,
    Stored,
    dead_letter_identity,
    evaluate,
    order_dependent,
)
from tests.chaos.faults import (
    KAFKA_KILL,
    MEMBERS,
    POSTGRES_KILL,
    REBALANCE,
    WORKER_KILL,
    WORKER_PAUSE,
    Counts,
    plan,
)
from tests.chaos.feed import EVENT, POISON_KINDS, build_feed
from tests.support.reference import expected_decisions

PARTITIONS = 3


def _partition(order_id: str) -> int:
    return zlib.crc32(order_id.encode()) % PARTITIONS


class World:
    """A small campaign feed and what a flawless worker would have left: decisions in Postgres,
    one outcome each on the topic in source order, one dead letter per poison record."""

    def __init__(self, seed: int = 4, events: int = 400) -> None:
        feed = build_feed(seed, events, poison_pct=2, oversized=1)
        self.events = [r.event for r in feed.records if r.event is not None]
        offsets: Counter[tuple[str, int]] = Counter()
        addresses: dict[int, tuple[str, int, int]] = {}
        for i, record in enumerate(feed.records):
            topic = f"t.{record.event_type}"
            partition = _partition(record.key.decode() if record.key else "")
            addresses[i] = (topic, partition, offsets[(topic, partition)])
            offsets[(topic, partition)] += 1
        expected = expected_decisions(self.events)
        decisions: dict[str, tuple[Any, ...]] = {}
        actions: dict[str, tuple[str, ...]] = {}
        compensations: dict[str, tuple[str, int]] = {}
        refunds: Counter[tuple[str, date]] = Counter()
        self.outcomes: list[Published] = []
        committed: list[str] = []
        cases: dict[tuple[str, str], CaseRow] = {}
        steps: list[StepRow] = []
        for i, record in enumerate(feed.records):
            if record.kind != EVENT or record.event is None:
                continue
            event, (topic, partition, offset) = record.event, addresses[i]
            decision = expected[event["event_id"]]
            occurred = event_from_dict(event).envelope.occurred_at
            decisions[event["event_id"]] = (
                event["event_id"], event["order_id"], event["event_type"], event["buyer_id"],
                event["platform"], occurred, str(decision.outcome), list(decision.rule_ids),
                topic, partition, offset,
            )  # fmt: skip
            actions[event["event_id"]] = tuple(str(a) for a in decision.actions)
            if decision.compensation is not None:
                kind = str(decision.compensation.kind)
                compensations[event["event_id"]] = (kind, decision.compensation.amount_fen)
                if kind == "refund":
                    refunds[(event["buyer_id"], business_day(occurred))] += 1
            self.outcomes.append(self.published(len(self.outcomes), event["event_id"], decision))
            if event["event_id"] in committed:
                continue  # a redelivery: decided once
            committed.append(event["event_id"])  # one worker: commit order is feed order
            key = (event["order_id"], event["event_type"])
            if str(decision.outcome) != "rejected" and key not in cases:
                cases[key] = CaseRow(*key, event["event_id"], 1)
                keys = tuple(f"{key[0]}/{key[1]}/1/{a}" for a in decision.actions)
                steps.append(StepRow(*key, 1, None, "exception", event["event_id"], keys))
        self.stored = Stored(
            decisions,
            actions,
            compensations,
            refunds,
            Counter(dict.fromkeys(decisions, 1)),
            committed=tuple(committed),
            cases=tuple(cases.values()),
            steps=tuple(steps),
            step_audits=Counter({(s.order_id, s.exception_type, s.seq): 1 for s in steps}),
        )
        self.poison = {
            "/".join(map(str, addresses[i])): r.kind
            for i, r in enumerate(feed.records)
            if r.event is None
        }
        self.letters = [Letter(address, kind) for address, kind in self.poison.items()]

    @staticmethod
    def published(offset: int, event_id: str, decision: Any) -> Published:
        return Published(
            0,
            offset,
            {
                "event_id": outcome_event_id(event_id),
                "source_event_id": event_id,
                "decision": {"outcome": str(decision.outcome), "rules": list(decision.rule_ids)},
            },
        )

    def evaluate(self, **changes: Any) -> Findings:
        args = {
            "stored": self.stored,
            "outcomes": self.outcomes,
            "letters": self.letters,
            "events": self.events,
            "poison": self.poison,
            "regressions": (),
        }
        return evaluate(**{**args, **changes})


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def broken(findings: Findings) -> dict[str, int]:
    return {k: v for k, v in findings.counts.items() if v}


def test_a_flawless_run_is_clean_and_exercises_the_limits(world: World) -> None:
    findings = world.evaluate()
    assert broken(findings) == {}
    assert findings.info["refunds intercepted at the cap"] > 0
    assert findings.info["order-dependent decisions (held to invariants)"] > 0
    rules = Counter(r for row in world.stored.decisions.values() for r in row[7])
    assert rules["compensation.already_granted"] > 0
    assert rules["risk.payment_attempts_freeze"] > 0


def test_a_missing_decision_is_lost_and_its_outcome_gone(world: World) -> None:
    # One that opened no case (a lost opening decision would be missing its case as well).
    openers = {c.opened_by for c in world.stored.cases}
    gone = next(e for e in world.stored.decisions if e not in openers)
    decisions = {k: v for k, v in world.stored.decisions.items() if k != gone}
    findings = world.evaluate(stored=replace(world.stored, decisions=decisions))
    assert broken(findings) == {"lost": 1}


def test_a_decision_written_twice_or_published_differently_is_decided_twice(world: World) -> None:
    event_id = next(iter(world.stored.decisions))
    audit = Counter(world.stored.audit_rows)
    audit[event_id] += 1
    assert broken(world.evaluate(stored=replace(world.stored, audit_rows=audit))) == {
        "decided_twice": 1
    }
    first = world.outcomes[0]
    decision = {**first.outcome["decision"], "outcome": "escalated"}
    other = Published(0, 10**6, {**first.outcome, "decision": decision})
    findings = world.evaluate(outcomes=[*world.outcomes, other])
    assert findings.counts["decided_twice"] == 1


def test_a_second_compensation_for_one_order_is_counted(world: World) -> None:
    rows = world.stored.decisions
    refused = next(e for e, r in rows.items() if "compensation.already_granted" in r[7])
    order = rows[refused][1]
    assert any(
        rows[e][1] == order and str(ActionType.ISSUE_COUPON) in a
        for e, a in world.stored.actions.items()
    )
    actions = {**world.stored.actions, refused: (*world.stored.actions[refused], "issue_coupon")}
    findings = world.evaluate(stored=replace(world.stored, actions=actions))
    assert findings.counts["compensated_twice"] == 1


def test_refunds_above_the_cap_and_intercepts_below_it_are_counted(world: World) -> None:
    rows, actions = world.stored.decisions, world.stored.actions
    intercepted = [e for e, r in rows.items() if "risk.refund_abuse_intercept" in r[7]]
    granted = dict(actions)
    granted[intercepted[0]] = ("auto_refund",)  # the cap ignored once: a sixth refund
    findings = world.evaluate(stored=replace(world.stored, actions=granted))
    assert findings.counts["refunds_over_cap"] == 1
    # An intercept while the buyer had fewer refunds than the cap: one of theirs taken away.
    buyer, day = rows[intercepted[0]][3], business_day(rows[intercepted[0]][5])
    refund = next(
        e
        for e, r in rows.items()
        if (r[3], business_day(r[5])) == (buyer, day) and "auto_refund" in actions.get(e, ())
    )
    fewer = {**actions, refund: ()}
    refunds = Counter(world.stored.refunds_by_buyer_day)
    refunds[(buyer, day)] -= 1
    findings = world.evaluate(
        stored=replace(world.stored, actions=fewer, refunds_by_buyer_day=refunds)
    )
    assert findings.counts["intercepts_under_cap"] == 1


def test_a_decision_other_than_the_rules_is_counted_only_where_order_cannot_matter(
    world: World,
) -> None:
    dependent = order_dependent(world.events, load_policies())
    rows = dict(world.stored.decisions)
    free = next(e for e in rows if e not in dependent)
    rows[free] = (*rows[free][:6], "escalated", *rows[free][7:])
    assert broken(world.evaluate(stored=replace(world.stored, decisions=rows))) == {
        "differ_from_rules": 1
    }
    rows = dict(world.stored.decisions)
    bound = next(e for e in rows if e in dependent)
    rows[bound] = (*rows[bound][:6], "escalated", *rows[bound][7:])
    assert (
        world.evaluate(stored=replace(world.stored, decisions=rows)).counts["differ_from_rules"]
        == 0
    )


def test_outcomes_first_seen_out_of_source_order_count_and_resends_do_not(world: World) -> None:
    rows = world.stored.decisions
    by_order: dict[str, list[str]] = {}
    for event_id, row in rows.items():
        by_order.setdefault(row[1], []).append(event_id)
    order = next(ids for ids in by_order.values() if len(ids) >= 2)  # a coupon or freeze order
    first = min(order, key=lambda e: rows[e][10])
    outcomes = list(world.outcomes)
    index = {o.outcome["source_event_id"]: i for i, o in enumerate(outcomes)}
    # A resend of the first after the second: allowed.
    resend = outcomes[index[first]]._replace(offset=10**6)
    findings = world.evaluate(outcomes=[*outcomes, resend])
    assert broken(findings) == {}
    assert findings.info["outcome resends (allowed)"] == 1
    # The first published only after the second (an outbox batch republished late): not allowed.
    late = outcomes.pop(index[first])._replace(offset=10**6)
    assert broken(world.evaluate(outcomes=[*outcomes, late])) == {"outcomes_out_of_order": 1}
    assert broken(world.evaluate(outcomes=outcomes)) == {"outcomes_missing": 1}


def test_poison_missing_from_the_dlq_or_judged_twice_is_counted_and_a_copy_is_a_resend(
    world: World,
) -> None:
    assert set(world.poison.values()) == set(POISON_KINDS)
    letters = world.letters
    assert broken(world.evaluate(letters=letters[1:])) == {"poison_missing": 1}
    resent = world.evaluate(letters=[*letters, letters[0]])  # a copy under the same dlq.id
    assert broken(resent) == {}
    assert resent.info["dead-letter resends (same dlq.id, allowed)"] == 1
    judged_again = letters[0]._replace(error_class="rule_error")
    assert broken(world.evaluate(letters=[*letters, judged_again])) == {"poison_twice": 1}
    valid = Letter("t.shipping-delay/0/0", "schema_violation")
    assert broken(world.evaluate(letters=[*letters, valid])) == {"unexpected": 1}


def test_a_committed_offset_going_backwards_is_counted(world: World) -> None:
    findings = world.evaluate(regressions=["t.shipping-delay[0]: 40 -> 12"])
    assert broken(findings) == {"offsets_backwards": 1}


def test_dead_letters_are_identified_by_dlq_id_else_their_origin() -> None:
    origin = [
        ("dlq.original.topic", b"t.shipping-delay"),
        ("dlq.original.partition", b"2"),
        ("dlq.original.offset", b"17"),
    ]
    assert dead_letter_identity(origin) == "t.shipping-delay/2/17"
    assert dead_letter_identity([*origin, ("dlq.id", b"x/1/2")]) == "x/1/2"


def test_the_feed_is_seeded_and_binds_every_limit_it_is_meant_to() -> None:
    feed = build_feed(9, 3000)
    assert [r.value for r in feed.records] == [r.value for r in build_feed(9, 3000).records]
    assert [r.value for r in feed.records] != [r.value for r in build_feed(10, 3000).records]
    counts = feed.summary()
    assert counts["valid events"] == 3000
    assert 0.01 < counts["exact duplicates"] / 3000 < 0.03
    assert all(counts[f"poison: {k}"] >= 1 for k in POISON_KINDS)
    # Refund clusters: buyers with more refunds on one business day than the cap, on two topics.
    by_buyer: dict[str, set[str]] = {}
    for r in feed.valid:
        if r.scenario == "refund cluster" and r.kind == EVENT and r.event is not None:
            by_buyer.setdefault(r.event["buyer_id"], set()).add(r.event["event_type"])
    assert len(by_buyer) >= 50
    assert sum(1 for types in by_buyer.values() if len(types) == 2) > len(by_buyer) / 2


def test_the_schedule_is_seeded_and_has_every_fault_asked_for() -> None:
    counts = Counts(kills=20, pauses=2, postgres_kills=2, kafka_kills=1, rebalances=10)
    faults = plan(5, counts, session_timeout_s=10.0, gap_s=(2.0, 6.0))
    assert faults == plan(5, counts, session_timeout_s=10.0, gap_s=(2.0, 6.0))
    assert faults != plan(6, counts, session_timeout_s=10.0, gap_s=(2.0, 6.0))
    kinds = Counter(f.kind for f in faults)
    assert kinds == {
        WORKER_KILL: 20,
        WORKER_PAUSE: 2,
        POSTGRES_KILL: 2,
        KAFKA_KILL: 1,
        REBALANCE: 10,
    }
    assert all(1 <= f.hold_s <= 3 and f.target in MEMBERS for f in faults if f.kind == WORKER_KILL)
    assert all(f.hold_s > 10 for f in faults if f.kind == WORKER_PAUSE)
    assert all(2 <= f.gap_s <= 6 for f in faults)


# ---------------------------------------------------------------------------- cases
def _case_with_two_decisions(world: World) -> tuple[CaseRow, str]:
    """A case and the later decision of its order and type that is not a rejection."""
    rows = world.stored.decisions
    for case in world.stored.cases:
        later = [
            e
            for e in world.stored.committed
            if e != case.opened_by
            and rows[e][1:3] == (case.order_id, case.exception_type)
            and rows[e][6] != "rejected"
        ]
        if later:
            return case, later[0]
    raise AssertionError("the feed has no order with two exceptions of one type")


def _steps_of(world: World, case: CaseRow) -> list[StepRow]:
    return [s for s in world.stored.steps if s[:2] == case[:2]]


def _with_step(world: World, case: CaseRow, step: StepRow, audits: int = 1) -> Stored:
    """The store with `step` appended to `case` (the case moved to it), audited `audits` times."""
    stored = world.stored
    cases = tuple(c._replace(seq=step.seq) if c == case else c for c in stored.cases)
    step_audits = Counter(stored.step_audits)
    step_audits[(step.order_id, step.exception_type, step.seq)] += audits
    return replace(stored, cases=cases, steps=(*stored.steps, step), step_audits=step_audits)


def test_a_case_opened_by_a_later_decision_or_by_none_is_counted(world: World) -> None:
    case, later = _case_with_two_decisions(world)
    assert world.evaluate().info["cases"] == len(world.stored.cases) > 0
    # Commit order decides: the same rows, the later decision committed first.
    committed = [later, *(e for e in world.stored.committed if e != later)]
    findings = world.evaluate(stored=replace(world.stored, committed=tuple(committed)))
    assert broken(findings) == {"cases_opened_by_another": 1}
    (example,) = findings.examples["cases_opened_by_another"]
    assert example == (
        f"{case.order_id} {case.exception_type}: opened by {case.opened_by}, "
        f"first committed {later}"
    )
    # A case (with its opening step and audit row) for an order nothing decided.
    stray = CaseRow("ord-nowhere", "payment-timeout", later, 1)
    opening = StepRow("ord-nowhere", "payment-timeout", 1, None, "exception", later, ())
    stored = replace(
        world.stored,
        cases=(*world.stored.cases, stray),
        steps=(*world.stored.steps, opening),
        step_audits=world.stored.step_audits + Counter({("ord-nowhere", "payment-timeout", 1): 1}),
    )
    assert broken(world.evaluate(stored=stored)) == {"cases_opened_by_another": 1}


def test_a_case_missing_or_opened_twice_is_counted(world: World) -> None:
    case, later = _case_with_two_decisions(world)
    stored = world.stored
    missing = replace(
        stored,
        cases=tuple(c for c in stored.cases if c != case),
        steps=tuple(s for s in stored.steps if s[:2] != case[:2]),
        step_audits=Counter({k: n for k, n in stored.step_audits.items() if k[:2] != case[:2]}),
    )
    assert broken(world.evaluate(stored=missing)) == {"cases_opened_not_once": 1}
    # The later exception opened it again, as step 2.
    again = StepRow(case.order_id, case.exception_type, 2, None, "exception", later, ())
    assert broken(world.evaluate(stored=_with_step(world, case, again))) == {
        "cases_opened_not_once": 1
    }


def test_a_gap_in_a_cases_steps_is_counted(world: World) -> None:
    case = world.stored.cases[0]
    step3 = StepRow(*case[:2], 3, "awaiting_payment", "deadline", "payment_window", ())
    assert broken(world.evaluate(stored=_with_step(world, case, step3))) == {"case_step_gaps": 1}
    step2 = step3._replace(seq=2)
    assert broken(world.evaluate(stored=_with_step(world, case, step2))) == {}


def test_an_action_key_released_by_two_steps_is_counted(world: World) -> None:
    case = next(c for c in world.stored.cases if _steps_of(world, c)[0].action_keys)
    (opening,) = _steps_of(world, case)
    step2 = StepRow(*case[:2], 2, "awaiting_review", "review", "r-1", opening.action_keys[:1])
    assert broken(world.evaluate(stored=_with_step(world, case, step2))) == {"action_keys_twice": 1}


def test_a_case_step_audited_never_or_twice_is_counted(world: World) -> None:
    case = world.stored.cases[0]
    step2 = StepRow(*case[:2], 2, "awaiting_review", "review", "r-1", ())
    for audits in (0, 2):
        findings = world.evaluate(stored=_with_step(world, case, step2, audits))
        assert broken(findings) == {"step_audits_not_one": 1}, audits
    orphan = Counter({**world.stored.step_audits, (*case[:2], 7): 1})  # no such step
    findings = world.evaluate(stored=replace(world.stored, step_audits=orphan))
    assert broken(findings) == {"step_audits_not_one": 1}
