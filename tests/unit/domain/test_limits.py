"""The cross-worker limits: what each decision adds to and relies on of the counters, and the fold
of a batch's uses into one checked update per counter."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from order_recovery.domain import OrderHistory
from order_recovery.domain.limits import (
    LimitClaim,
    LimitKind,
    LimitUse,
    buyer_day_subject,
    fold_claims,
    limit_uses,
)
from tests.unit.domain.factories import (
    POLICIES,
    H,
    M,
    decode,
    event_docs,
    histories,
    logistics_exception,
    payment_timeout,
    run,
    shipping_delay,
)

DAY = date(2025, 6, 2)  # T0's Shanghai day
REFUNDS = LimitKind.BUYER_REFUNDS
ATTEMPTS = LimitKind.PAYMENT_ATTEMPTS
REVOKED = LimitKind.RECOVERY_REVOKED


def uses(doc: dict, history: OrderHistory | None = None) -> list[LimitUse]:
    event = decode(doc)
    return limit_uses(event, run(doc, history), POLICIES[event.envelope.platform])


def test_a_granted_refund_counts_and_relies_on_the_platform_cap() -> None:
    found = uses(shipping_delay("pinduoduo", category="fresh", paid_ago=3 * H))
    cap = POLICIES["pinduoduo"].risk.max_buyer_refunds_per_day
    assert LimitUse(REFUNDS, buyer_day_subject("buyer-1", DAY), 1, cap) in found
    # Money moves, so it also relies on the order's payment attempts and on no revocation.
    assert LimitUse(ATTEMPTS, "ord-1", 0, POLICIES["pinduoduo"].risk.max_payment_attempts) in found
    assert LimitUse(REVOKED, "ord-1", 0, 0) in found


def test_an_intercepted_refund_adds_nothing_and_relies_on_nothing() -> None:
    """A stale read only undercounts: an interception on it is right on the true count too."""
    history = OrderHistory(buyer_refunds_today=5)
    assert uses(shipping_delay("douyin", category="fresh", paid_ago=3 * H), history) == []


def test_a_coupon_relies_on_attempts_and_revocation_but_counts_no_refund() -> None:
    found = uses(shipping_delay("taobao"))
    assert [u.kind for u in found] == [ATTEMPTS, REVOKED]
    assert all(u.delta == 0 for u in found)


def test_every_payment_timeout_counts_an_attempt_and_only_an_unfrozen_one_relies_on_it() -> None:
    limit = POLICIES["douyin"].risk.max_payment_attempts
    (free,) = uses(payment_timeout("douyin"))
    assert free == LimitUse(ATTEMPTS, "ord-1", 1, limit + 1)
    (frozen,) = uses(payment_timeout("douyin"), OrderHistory(payment_attempts=limit + 1))
    assert frozen == LimitUse(ATTEMPTS, "ord-1", 1, None)


def test_a_forged_tracking_revokes_and_a_decision_without_money_relies_on_nothing() -> None:
    assert uses(logistics_exception("douyin", forged=True)) == [LimitUse(REVOKED, "ord-1", 1, None)]
    assert uses(logistics_exception("douyin")) == []  # evidence and appeal: no money


def test_claims_fold_per_counter_in_counter_order() -> None:
    claims = fold_claims(
        [
            LimitUse(REFUNDS, "b 2025-06-02", 1, 5),
            LimitUse(REVOKED, "o1", 0, 0),
            LimitUse(REFUNDS, "b 2025-06-02", 1, 5),
            LimitUse(ATTEMPTS, "o1", 1, None),
        ]
    )
    assert claims == [
        LimitClaim(REFUNDS, "b 2025-06-02", 2, 5),
        LimitClaim(ATTEMPTS, "o1", 1, None),
        LimitClaim(REVOKED, "o1", 0, 0),
    ]


def test_the_tightest_use_sets_the_ceiling() -> None:
    """Two refunds under cap 5 then one under a platform's cap 3: the third relied on the count
    reaching at most 3 with it, so the batch's total (3) may be added to a base of at most 0."""
    (claim,) = fold_claims(
        [LimitUse(REFUNDS, "b", 1, 5), LimitUse(REFUNDS, "b", 1, 5), LimitUse(REFUNDS, "b", 1, 3)]
    )
    assert claim == LimitClaim(REFUNDS, "b", 3, 3)


_uses = st.lists(st.tuples(st.integers(0, 2), st.one_of(st.none(), st.integers(0, 8))), max_size=12)


@given(_uses, st.integers(0, 10))
def test_the_folded_check_holds_exactly_when_every_use_holds_in_order(
    batch: list[tuple[int, int | None]], base: int
) -> None:
    """The write checks one thing per counter (base + total <= ceiling); it must accept exactly
    the bases on which every decision's own bound held when applied one by one."""
    folded = fold_claims([LimitUse(REFUNDS, "b", delta, bound) for delta, bound in batch])
    counter, every_use_holds = base, True
    for delta, bound in batch:
        counter += delta
        every_use_holds &= bound is None or counter <= bound
    if not folded:
        assert not batch
        return
    (claim,) = folded
    assert claim.delta == counter - base
    accepted = claim.ceiling is None or base + claim.delta <= claim.ceiling
    assert accepted == every_use_holds


def test_a_decision_final_before_the_risk_controls_relies_on_no_attempt_bound() -> None:
    """A rejection (not yet expired) and a payment timeout of a revoked order are what they are
    whatever the count: bound to 4 attempts, the fifth of one order could never be written."""
    early = payment_timeout(created_ago=10 * M, failed_ago=5 * M)
    revoked = payment_timeout()  # inside its window: closed only because the right was revoked
    for doc, history in (
        (early, OrderHistory(payment_attempts=4)),
        (revoked, OrderHistory(recovery_right_revoked=True)),
    ):
        assert uses(doc, history) == [LimitUse(ATTEMPTS, doc["order_id"], 1, None)]
    assert uses(revoked) == [LimitUse(ATTEMPTS, revoked["order_id"], 1, 4)]  # decided on the count


@given(event_docs, histories)
def test_a_decision_on_the_true_count_never_relies_on_more_than_it_allows(
    doc: dict, history: OrderHistory
) -> None:
    """After a conflict the batch is decided again on a fresh read: its claims must then hold,
    or the write is refused for ever and the partition stops. So every bound a decision states
    must hold on the very history it was decided on."""
    event = decode(doc)
    counters = {
        REFUNDS: history.buyer_refunds_today,
        ATTEMPTS: history.payment_attempts,
        REVOKED: int(history.recovery_right_revoked),
    }
    decision = run(doc, history)
    for use in limit_uses(event, decision, POLICIES[event.envelope.platform]):
        if use.bound is not None:
            assert counters[use.kind] + use.delta <= use.bound, (use, decision.rule_ids)
