"""Hypothesis strategies for bad input, shared by the decoder's fuzz tests (unit) and the
pipeline's (integration): raw bytes, and near-valid documents, i.e. a valid event with a few of
its fields made wrong the ways producers get them wrong (wrong types, huge strings and arrays,
deep nesting, unicode edge cases, big integers, NaN, keys written twice, broken framing).

Documents are built as JSON text, not dumped from dicts, so they can hold what no dict can: a key
twice, NaN, a lone surrogate escape, invalid UTF-8.

`make fuzz` sets HYPOTHESIS_PROFILE=fuzz (registered in tests/conftest.py): the fuzz tests then
run the profile's example count instead of their quick count of `make test`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from order_recovery.domain.contract import schemas_dir
from order_recovery.domain.resolutions import ResolutionType
from order_recovery.domain.sample import sample_events

FUZZING = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"


def fuzz_settings(quick: int) -> settings:
    """`quick` examples in `make test`, the fuzz profile's count under `make fuzz`; no deadline
    (a huge document takes its time) and no complaint about large or slow examples."""
    return settings(
        max_examples=int(settings().max_examples) if FUZZING else quick,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


#: Valid events of every type (logistics ones with evidence among them) to start from.
BASE_DOCS = [e for e in sample_events(60, seed=15, duplicate_pct=0)]

_TOKENS = [
    b"null", b"true", b"false", b"0", b"-0", b"-1", b"1.5", b"1e2", b"100.0", b"1E+2",
    b"1e400", b"-1e400", b"0.1e-999", b"NaN", b"-NaN", b"Infinity", b"-Infinity",
    str(2**53 + 1).encode(), str(2**63).encode(), str(2**64).encode(),
    str(-(2**63) - 1).encode(), str(10**30).encode(), b"1" * 400,
    b'""', b"[]", b"{}", b"[null]", b'{"": null}',
    b'"\\u0000"', b'"\\ud800"', b'"\\udfff"', b'"\\udc00\\ud800"', b'"\\ud83d\\ude00"',
    b'"\\ufeff"', b'"\\uffff"', '"\u202e\u0301\U0010ffff"'.encode(), b'"\\"\\\\\\/\\b"',
    b'"\xff"', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"', b'"a\x00b"',
    b'"0001-01-01T00:00:00+14:00"', b'"0001-01-01T00:00:00Z"', b'"9999-12-31T23:59:59-14:00"',
    b'"9999-12-31T23:59:59Z"', b'"2025-02-30T00:00:00Z"', b'"2025-06-30T23:59:60Z"',
    b'"2025-06-02T10:00:00+99:99"', b'"2025-06-02T10:00:00"', b'"2025-06-02T10:00:00.1234567Z"',
    b'"2999-06-02T10:00:00+08:00"', b'"1970-01-01T00:00:00Z"',
    b'"00000000-0000-0000-0000-000000000000"', b'"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"',
    b'"douyin"', b'"jingdong"', b'"CNY"', b'"USD"', b'"standard"', b'"virtual"', b'"lost"',
]  # fmt: skip

#: Valid resolution events of every type: the examples in schemas/.
RESOLUTION_DOCS = [
    orjson.loads(path.read_bytes())
    for t in ResolutionType
    for path in sorted((schemas_dir() / "examples" / t.value).glob("valid-*.json"))
]


def _keys(docs: list[dict[str, object]]) -> list[str]:
    """Keys a mutation may touch: every field the documents have, and a few no schema has."""
    return sorted({k for doc in docs for k in doc} | {"payload", "", "Amount_fen", "\u0000"})


_KEYS = _keys(BASE_DOCS)
RESOLUTION_KEYS = _keys(RESOLUTION_DOCS)

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
).map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))

values = st.one_of(
    st.sampled_from(_TOKENS),
    _json_values,
    st.integers().map(lambda i: str(i).encode()),
    st.text().map(lambda s: json.dumps(s).encode()),  # escaped, surrogates and all
    st.integers(1_000, 200_000).map(lambda n: b'"' + b"a" * n + b'"'),  # huge string
    st.integers(1_000, 50_000).map(lambda n: b"[" + b",".join([b"1"] * n) + b"]"),  # huge array
    st.floats().map(lambda f: json.dumps(f).encode()),  # NaN and Infinity as Python writes them
    st.integers(2, 3_000).map(lambda d: b"[" * d + b"]" * d),  # deep nesting
    st.integers(2, 3_000).map(lambda d: b'{"a":' * d + b"1" + b"}" * d),
    st.lists(st.fixed_dictionaries({"kind": st.just("photo"), "uri": st.text(max_size=3000)})).map(
        orjson.dumps
    ),  # evidence-shaped, any URIs
)


@dataclass(frozen=True)
class Doc:
    """A document as JSON text, and what the strategy knows about it."""

    raw: bytes
    duplicate_key: bool  # some object holds a key twice


def _object(pairs: list[tuple[str, bytes]]) -> bytes:
    return b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in pairs) + b"}"


@st.composite
def near_valid_docs(
    draw: st.DrawFn, bases: list[dict[str, object]] = BASE_DOCS, keys: list[str] = _KEYS
) -> Doc:
    """A valid event (one of `bases`, exception events by default) with one to three of its
    fields (`keys`) replaced, removed or written twice, and sometimes its framing broken."""
    base = draw(st.sampled_from(bases))
    pairs = [(k, orjson.dumps(v)) for k, v in base.items()]
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["set", "set", "drop", "twice"]))
        if action == "drop":
            pairs = [(k, v) for k, v in pairs if k != key]
        elif action == "twice":
            same = [v for k, v in pairs if k == key]  # the key again with its value, or another
            value = draw(st.sampled_from(same) | values) if same else draw(values)
            pairs.append((key, value))
        else:
            replaced = [(k, draw(values)) if k == key else (k, v) for k, v in pairs]
            pairs = replaced if replaced != pairs else [*pairs, (key, draw(values))]
    duplicate = len({k for k, _ in pairs}) < len(pairs)
    raw = _object(pairs)
    framing = draw(st.sampled_from(["none"] * 6 + ["cut", "tail", "array", "bom", "spaces"]))
    if framing == "cut":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif framing == "tail":
        raw += draw(st.sampled_from([b"x", b"}", b",", b"\x00", b"{}", b" \n"]))
    elif framing == "array":
        raw = b"[" + raw + b"]"
    elif framing == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif framing == "spaces":
        raw = raw.replace(b'":', b'" :').replace(b",", b" ,\n\t")
    return Doc(raw, duplicate and framing in ("none", "tail", "spaces"))


raw_bytes = st.one_of(
    st.binary(max_size=2_000),
    st.binary(max_size=200).map(lambda b: b"{" + b + b"}"),
)
