"""What the pipeline takes in and what it turns away, as any consumer runtime can describe them.
Apart from the pipeline so the dead-letter path (`dead_letters`) and the intake checks (`intake`)
can use them without importing the stream processor."""

from __future__ import annotations

from msgspec import Struct


# Structs, not dataclasses, for what is built per event (see domain/events.py).
class SourceRecord(Struct, frozen=True, gc=False):
    """A consumed record, as any runtime can describe it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def size(self) -> int:
        """Bytes of key, value and headers: all of it goes into the record's dead letter."""
        size = len(self.value or b"") + len(self.key or b"")
        for name, value in self.headers:
            size += len(name.encode("utf-8", "surrogatepass")) + len(value or b"")
        return size


class DeadLetter(Struct, frozen=True, gc=False):
    """A record the pipeline cannot decide on, and why."""

    record: SourceRecord
    error_class: str
    message: str
