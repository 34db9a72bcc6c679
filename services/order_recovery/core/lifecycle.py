"""The case lifecycle's service layer: the pure state machine (`domain.case`) applied under the
case store's transactions (`core.ports.CaseStore`), typed on the port only.

Each call is one unit of work: lock the cases it touches, work out their steps with the pure
functions, store them, commit. Locking first is what makes each cause take effect once whatever
the interleaving: two workers handed the same resolution (a redelivery, a rebalance) find it
recorded by whichever locked the case first; a deadline fired by two runners is either skipped by
the second (`SKIP LOCKED`) or found stale after the first's commit; two reviewers find the case
moved on. What a lock cannot cover (a resolution for a case that does not exist yet, recorded by
two workers at once) the store refuses as a WriteConflict, and the caller does the work again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from order_recovery.config import Settings
from order_recovery.core.faults import WriteConflict
from order_recovery.core.intake import check_event_time, check_size
from order_recovery.core.ports import CaseKey, CaseStore
from order_recovery.core.records import DeadLetter, SourceRecord
from order_recovery.domain.case import (
    Case,
    Review,
    ReviewRefused,
    Step,
    Transition,
    catch_up,
    on_resolution,
    on_review,
    open_case,
)
from order_recovery.domain.contract import decode_resolution
from order_recovery.domain.decision import Decision
from order_recovery.domain.errors import InvalidEvent
from order_recovery.domain.events import Event
from order_recovery.domain.policy import Policy, policy_for
from order_recovery.domain.resolutions import Resolution, case_type_of

#: How many conflicts in a row a unit of work redoes before it gives up (each redo reads afresh,
#: so only a writer that keeps winning the same rows can exhaust it).
MAX_REDOS = 10


def decode_resolutions(
    records: Sequence[SourceRecord], policies: Mapping[str, Policy], settings: Settings
) -> tuple[list[Resolution], list[DeadLetter]]:
    """Each record checked and decoded like an exception event (size, schema, platform, event
    time within the skew of the record's timestamp), or dead-lettered with the reason."""
    good: list[Resolution] = []
    dead: list[DeadLetter] = []
    for record in records:
        try:
            check_size(record, settings.max_record_bytes)
            resolution = decode_resolution(
                record.value if record.value is not None else b"", platforms=policies
            )
            check_event_time(resolution, record, settings.max_event_skew_s)
        except InvalidEvent as exc:
            dead.append(DeadLetter(record, exc.error_class, str(exc)))
            continue
        good.append(resolution)
    return good, dead


def case_key(resolution: Resolution) -> CaseKey:
    return resolution.envelope.order_id, str(case_type_of(resolution))


class Lifecycle:
    def __init__(self, store: CaseStore, policies: Mapping[str, Policy]) -> None:
        self._store, self._policies = store, policies

    def _policy(self, case_or_platform: Case | str) -> Policy:
        platform = (
            case_or_platform if isinstance(case_or_platform, str) else case_or_platform.platform
        )
        return policy_for(self._policies, platform)

    def open(self, event: Event, decision: Decision) -> Step:
        """Open the case of a decided exception; nothing is stored for a rejection, nor when the
        case exists (a later exception moves nothing)."""
        step = open_case(event, decision, self._policy(event.envelope.platform))
        if isinstance(step, Transition):
            with self._store.work() as work:
                if work.lock([step.case.key]):
                    return step  # opened before: the later exception changes nothing
                work.save([step])
        return step

    def resolve(self, resolutions: Sequence[Resolution]) -> list[Step]:
        """Apply resolution events in the order given (their partition's), each once: a
        resolution seen before changes nothing. Before each, the deadlines its event time has
        passed fire, so the case is as the deadlines left it."""
        return _redo(lambda: self._resolve_once(resolutions))

    def _resolve_once(self, resolutions: Sequence[Resolution]) -> list[Step]:
        with self._store.work() as work:
            cases = work.lock({case_key(r) for r in resolutions})
            seen = work.known({r.envelope.event_id for r in resolutions})
            fresh: list[Resolution] = []
            for resolution in resolutions:
                if resolution.envelope.event_id not in seen:
                    seen.add(resolution.envelope.event_id)
                    fresh.append(resolution)
            moved, recorded, steps = self._apply(cases, fresh)
            work.save(moved, recorded)
        return steps

    def adopt_orphans(self, limit: int = 500) -> list[Step]:
        """Apply, in event time, the resolutions that arrived before their case was opened (the
        decisions lagging behind the resolution topics): what they would have done had they
        come after, deadlines their event time passed included."""
        return _redo(lambda: self._adopt_once(limit))

    def _adopt_once(self, limit: int) -> list[Step]:
        with self._store.work() as work:
            orphans = work.orphans(limit)
            cases = work.lock({case_key(r) for r in orphans})
            moved, adopted, steps = self._apply(cases, orphans)
            work.save(moved, adopted=adopted)
        return steps

    def _apply(
        self, cases: dict[CaseKey, Case], resolutions: Sequence[Resolution]
    ) -> tuple[list[Transition], list[tuple[Resolution, Step]], list[Step]]:
        """Each resolution in turn on its case as the ones before left it."""
        moved: list[Transition] = []
        recorded: list[tuple[Resolution, Step]] = []
        steps: list[Step] = []
        for resolution in resolutions:
            key = case_key(resolution)
            case = cases.get(key)
            policy = self._policy(case or resolution.envelope.platform)
            if case is not None:
                for fired in catch_up(case, resolution.envelope.occurred_at, policy):
                    moved.append(fired)
                    steps.append(fired)
                    case = fired.case
            step = on_resolution(case, resolution, policy)
            if isinstance(step, Transition):
                moved.append(step)
                case = step.case
            if case is not None:
                cases[key] = case
            recorded.append((resolution, step))
            steps.append(step)
        return moved, recorded, steps

    def fire_due(self, until: datetime, limit: int = 500) -> list[Step]:
        """Fire the deadlines event time `until` has passed, up to `limit` cases' worth (each
        case all its passed deadlines, in order). Runners on several workers split the cases."""
        return _redo(lambda: self._fire_once(until, limit))

    def _fire_once(self, until: datetime, limit: int) -> list[Step]:
        with self._store.work() as work:
            fired: list[Transition] = []
            for case in work.due(until, limit):
                fired.extend(catch_up(case, until, self._policy(case)))
            work.save(fired)
        return list(fired)

    def review(self, key: CaseKey, review: Review) -> Transition:
        """A reviewer's decision; ReviewRefused unless the case waits for one."""
        with self._store.work() as work:
            case = work.lock([key]).get(key)
            if case is None:
                raise ReviewRefused(f"no case for order {key[0]} and {key[1]}")
            step = on_review(case, review, self._policy(case))
            work.save([step])
        return step


def _redo(work: Callable[[], list[Step]]) -> list[Step]:
    """Run a unit of work again after a WriteConflict (it reads afresh each time)."""
    for _ in range(MAX_REDOS - 1):
        try:
            return work()
        except WriteConflict:
            continue
    return work()
