"""One line of `case show`'s timeline, shared by the readers of decisions (`ops.cases`) and of the
case lifecycle (`ops.case_life`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

#: Within one instant (and one cause), the cause before its effects: an event before its
#: decision, a resolution or a fired deadline before the step it caused, a step before the
#: deadline it set.
KIND_ORDER = {
    "event": 0,
    "decision": 1,
    "action": 2,
    "compensation": 3,
    "audit": 4,
    "resolution": 5,
    "deadline_fired": 6,
    "step": 7,
    "deadline_set": 8,
}


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    kind: str  # one of KIND_ORDER
    exception_type: str
    event_id: str
    summary: str
    detail: dict[str, Any]
    seq: int = 0  # action order within a decision, audit row id: the tie-break at one instant
    #: The event time that orders entries of one instant (one transaction): a step's cause, a
    #: resolution's occurrence. None: the event time of `event_id`'s event, if any.
    tie: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """Every field but the tie-breaks."""
        out = asdict(self)
        del out["seq"], out["tie"]
        return out
