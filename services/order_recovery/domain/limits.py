"""Limits that span events decided by different workers, and what a decision relies on of them.

A worker decides a batch on a history read in its own snapshot. Events are keyed by order, so one
buyer's refunds (and, across topics, one order's events) are decided by several workers at once,
and a snapshot can be stale by the time the batch is written. Rather than serialising the reads,
every decision states, per counter, what it adds (`delta`) and the highest value the counter may
have right after it for the decision to stay what it is (`bound`). The write transaction adds the
batch's deltas to one row per counter under a check that the bound holds, in the commit order of
whatever workers write the same counter; a batch whose bound no longer holds is decided again on a
fresh read. So a limit holds whatever the interleaving of partitions and workers, and every
decision matches the rules applied to the history in commit order.

Counters only grow, so a stale read only ever undercounts. A decision made under an undercount that
still triggered a control (refunds intercepted, attempts frozen, right revoked) would trigger it on
the true count too; only decisions that let something through rely on a bound:
- buyer refunds per business day: a granted refund relies on being within the platform's cap;
- payment attempts per order: a payment-timeout decision not frozen relies on the count before it
  being within the maximum, and so does every other decision of the order that moves money; a
  decision final before the risk controls (a rejection, an order whose right to recovery was
  revoked) is what it is whatever the count, and relies on nothing;
- revocations per order (forged logistics): a decision that moves money relies on there being none.
A decision that moves no money and triggers nothing is decided on the history it read: another
event of the same order on another topic may land just before or after it either way.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from enum import StrEnum

from msgspec import Struct

from order_recovery.domain.decision import CompensationKind, Decision, Outcome, RiskFlag
from order_recovery.domain.events import Event, EventType
from order_recovery.domain.history import business_day
from order_recovery.domain.policy import Policy


class LimitKind(StrEnum):
    BUYER_REFUNDS = "buyer_refunds"  # refunds granted to a buyer on one business day
    PAYMENT_ATTEMPTS = "payment_attempts"  # payment-timeout decisions of one order
    RECOVERY_REVOKED = "recovery_revoked"  # forged-logistics revocations of one order


#: Joins a buyer and a business day into one counter subject. Identifiers match the schema's
#: `^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$`, which has no space.
SUBJECT_SEPARATOR = " "


def buyer_day_subject(buyer_id: str, day: date) -> str:
    return f"{buyer_id}{SUBJECT_SEPARATOR}{day.isoformat()}"


class LimitUse(Struct, frozen=True, gc=False):
    """One decision's use of one counter: what it adds, and the highest value the counter may
    have right after it (None: the decision does not depend on the counter's value)."""

    kind: LimitKind
    subject: str
    delta: int
    bound: int | None


class LimitClaim(Struct, frozen=True, gc=False):
    """A batch's uses of one counter folded into one row update: add `delta`, and the result
    must not exceed `ceiling` (None: nothing in the batch depends on it)."""

    kind: LimitKind
    subject: str
    delta: int
    ceiling: int | None


def limit_uses(event: Event, decision: Decision, policy: Policy) -> list[LimitUse]:
    """What this decision adds to the cross-event counters and relies on of them."""
    env = event.envelope
    risk = policy.risk
    flags = decision.risk_flags
    money = decision.moves_money
    uses: list[LimitUse] = []
    comp = decision.compensation
    if comp is not None and comp.kind is CompensationKind.REFUND:
        subject = buyer_day_subject(env.buyer_id, business_day(env.occurred_at))
        uses.append(LimitUse(LimitKind.BUYER_REFUNDS, subject, 1, risk.max_buyer_refunds_per_day))
    frozen = RiskFlag.EXCESSIVE_PAYMENT_ATTEMPTS in flags
    # Final before the risk controls ran (rules.decide): no count would have changed it. Claiming
    # a bound anyway made the fifth rejection of one order unwritable, and retried for ever.
    final = decision.outcome is Outcome.REJECTED or RiskFlag.RECOVERY_RIGHT_REVOKED in flags
    if env.event_type is EventType.PAYMENT_TIMEOUT:
        # Not frozen: at most the maximum before this attempt, so at most one more after it.
        bound = None if frozen or final else risk.max_payment_attempts + 1
        uses.append(LimitUse(LimitKind.PAYMENT_ATTEMPTS, env.order_id, 1, bound))
    elif money and not frozen:
        attempts = risk.max_payment_attempts
        uses.append(LimitUse(LimitKind.PAYMENT_ATTEMPTS, env.order_id, 0, attempts))
    if RiskFlag.FORGED_LOGISTICS in flags:
        uses.append(LimitUse(LimitKind.RECOVERY_REVOKED, env.order_id, 1, None))
    elif money:
        uses.append(LimitUse(LimitKind.RECOVERY_REVOKED, env.order_id, 0, 0))
    return uses


def fold_claims(uses: Iterable[LimitUse]) -> list[LimitClaim]:
    """A batch's uses, in decision order, as one claim per counter, sorted by counter (the order
    the write locks them in, so two writers never wait on each other in a cycle).

    The batch was decided on a base b' and each use i relied on b' + (deltas up to and including
    i) <= bound_i. On the true base b that holds for every i exactly when
    b + total <= total + min_i(bound_i - prefix_i): one check on the counter after the batch."""
    totals: dict[tuple[LimitKind, str], int] = {}
    slack: dict[tuple[LimitKind, str], int] = {}
    for use in uses:
        key = (use.kind, use.subject)
        prefix = totals.get(key, 0) + use.delta
        totals[key] = prefix
        if use.bound is not None:
            room = use.bound - prefix
            slack[key] = min(room, slack.get(key, room))
    claims = []
    for key in sorted(totals):
        total = totals[key]
        ceiling = total + slack[key] if key in slack else None
        claims.append(LimitClaim(key[0], key[1], total, ceiling))
    return claims
