"""Exception 3: transit timeout or lost parcel reported by the carrier."""

from __future__ import annotations

from datetime import timedelta

from order_recovery.domain.decision import ActionType, Outcome, RiskFlag
from order_recovery.domain.events import LogisticsException
from order_recovery.domain.policy import LogisticsHandling, Policy
from order_recovery.domain.rules.common import (
    NOTHING_TO_REFUND,
    Verdict,
    full_refund,
    rejected,
    yuan,
)

_APPEAL = {
    LogisticsHandling.APPEAL_SYSTEM_REVIEW: (
        "logistics.appeal_system_review",
        ActionType.FILE_APPEAL,
        "merchant appeal with evidence, system review",
    ),
    LogisticsHandling.PLATFORM_ARBITRATION: (
        "logistics.platform_arbitration",
        ActionType.REQUEST_PLATFORM_ARBITRATION,
        "evidence uploaded, platform arbitration requested",
    ),
}


def decide_logistics_exception(event: LogisticsException, policy: Policy) -> Verdict:
    env = event.envelope
    now = env.occurred_at
    created = env.order_created_at
    signed = event.signed_at
    if not created <= event.exception_reported_at <= now or (
        signed is not None and not created <= signed <= now
    ):
        return rejected(
            "event.inconsistent_timestamps",
            "order_created_at <= exception_reported_at / signed_at <= occurred_at does not hold",
        )
    # Checked before the window: a forged order loses its right whatever the dates say.
    if event.tracking_forged:
        return Verdict(
            Outcome.CLOSED_NO_RECOVERY,
            ("logistics.forged_revokes_recovery",),
            ("logistics information forged: the order loses its right to recovery",),
            actions=(ActionType.REVOKE_RECOVERY_RIGHT,),
            risk_flags=(RiskFlag.FORGED_LOGISTICS,),
            final=True,
        )
    anchor, what = (
        (event.signed_at, "sign-off")
        if event.signed_at is not None
        else (event.exception_reported_at, "the exception report")
    )
    window = timedelta(seconds=policy.logistics.recovery_window_s)
    if now - anchor > window:
        return Verdict(
            Outcome.EXPIRED,
            ("logistics.outside_window",),
            (f"{now - anchor} after {what}, outside the {window} window",),
        )

    has_evidence = bool(event.evidence)
    handling = policy.logistics.handling
    if handling is LogisticsHandling.REFUND_FIRST:
        follow_up = (
            (ActionType.UPLOAD_EVIDENCE, ActionType.FILE_APPEAL)
            if has_evidence
            else (ActionType.REQUEST_EVIDENCE,)
        )
        refund = full_refund(env.amount_fen)
        if refund is None:
            verdict = Verdict(
                Outcome.PENDING,
                ("logistics.refund_first",),
                (f"{policy.platform} refunds first", NOTHING_TO_REFUND),
                actions=follow_up,
            )
        else:
            verdict = Verdict(
                Outcome.PENDING,
                ("logistics.refund_first",),
                (f"{policy.platform} refunds first: full refund of {yuan(env.amount_fen)}",),
                actions=(ActionType.AUTO_REFUND, *follow_up),
                compensation=refund,
            )
        if not has_evidence:
            verdict = verdict.note(
                "logistics.request_evidence", "no evidence attached: ask the merchant for it"
            )
        return verdict
    if not has_evidence:
        return Verdict(
            Outcome.PENDING,
            ("logistics.request_evidence",),
            ("no evidence attached: ask the merchant for it; the case stays open",),
            actions=(ActionType.REQUEST_EVIDENCE,),
        )
    rule_id, action, reason = _APPEAL[handling]
    return Verdict(
        Outcome.PENDING,
        (rule_id,),
        (f"{event.exception_kind}: {reason}",),
        actions=(ActionType.UPLOAD_EVIDENCE, action),
    )
