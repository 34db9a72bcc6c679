"""Layout of schemas/: every event type (exception, resolution, outcome) has its schema and
named examples."""

from __future__ import annotations

from pathlib import Path

import orjson

from order_recovery.domain.contract import schemas_dir
from order_recovery.domain.resolutions import ResolutionType

ROOT = schemas_dir()
RESOLUTION_TYPES = [t.value for t in ResolutionType]
EVENT_TYPES = [
    "payment-timeout",
    "shipping-delay",
    "logistics-exception",
    "recovery-outcome",
    "action-command",
    *RESOLUTION_TYPES,
]
ENVELOPES = ["envelope.schema.json", "resolution-envelope.schema.json"]


def test_schema_files_exist_and_declare_draft_2020_12():
    for name in [*ENVELOPES, *(f"{t}.v1.schema.json" for t in EVENT_TYPES)]:
        schema = orjson.loads((ROOT / name).read_bytes())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith("/" + name)
        assert schema.get("description")


def test_each_event_type_has_valid_and_several_invalid_examples():
    for event_type in EVENT_TYPES:
        names = [p.name for p in (ROOT / "examples" / event_type).glob("*.json")]
        assert sum(n.startswith("valid-") for n in names) >= 1, event_type
        assert sum(n.startswith("invalid-") for n in names) >= 4, event_type


def test_examples_are_named_valid_or_invalid_what_is_wrong():
    for path in (ROOT / "examples").glob("*/*.json"):
        stem = Path(path).stem
        assert stem.startswith(("valid-", "invalid-")) and len(stem.split("-", 1)[1]) > 2


def test_every_schema_file_is_an_envelope_or_a_known_type():
    """A schema file no type names would be dead weight the decoder never uses."""
    names = {p.name for p in ROOT.glob("*.schema.json")}
    assert names == {*ENVELOPES, *(f"{t}.v1.schema.json" for t in EVENT_TYPES)}
