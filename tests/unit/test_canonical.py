"""Canonical leaf: known bytes spelled out from docs/INTEGRITY.md, order independence, rejects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authtrail.errors import InvalidArgumentError
from stream.canonical import MAGIC, canonical_leaf


def test_known_bytes_spelled_out_from_the_spec() -> None:
    event = {
        "tenant_id": "acme",
        "occurred_at": 1700000000000000,
        "attributes": {"b": "2", "a": "é"},
        "user_id": None,
        "seq_hint": -5,
    }
    expected = (
        b"authtrail-event-v1\n"
        # "attributes" (sorted first), map of 2 entries sorted by key bytes: a, b
        + b"\x00\x00\x00\x0aattributes" + b"m" + b"\x00\x00\x00\x02"
        + b"\x00\x00\x00\x01a" + b"\x00\x00\x00\x02\xc3\xa9"
        + b"\x00\x00\x00\x01b" + b"\x00\x00\x00\x012"
        + b"\x00\x00\x00\x0boccurred_at" + b"i" + b"\x00\x00\x00\x101700000000000000"
        + b"\x00\x00\x00\x08seq_hint" + b"i" + b"\x00\x00\x00\x02-5"
        + b"\x00\x00\x00\x09tenant_id" + b"s" + b"\x00\x00\x00\x04acme"
        # user_id is None: omitted
    )  # fmt: skip
    assert canonical_leaf(event) == expected


def test_empty_event_is_just_the_magic() -> None:
    assert canonical_leaf({}) == MAGIC
    assert canonical_leaf({"a": None, "attributes": {}}) == MAGIC


def test_field_order_in_producer_code_does_not_matter() -> None:
    forward = {
        "event_id": "e1",
        "tenant_id": "t",
        "occurred_at": 1,
        "attributes": {"x": "1", "y": "2"},
    }
    backward = dict(reversed(list(forward.items())))
    backward["attributes"] = {"y": "2", "x": "1"}
    assert canonical_leaf(forward) == canonical_leaf(backward)


def test_adding_a_null_field_keeps_old_leaves() -> None:
    old = {"event_id": "e1", "tenant_id": "t"}
    assert canonical_leaf(old) == canonical_leaf({**old, "new_field": None, "new_map": {}})


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"a": "1"}, {"a": 1}),  # a string is not the number it spells
        ({"a": "bc"}, {"ab": "c"}),  # length prefixes keep name/value boundaries
        ({"a": {"k": "v"}}, {"a": "kv"}),
        ({"a": ""}, {}),  # empty string is present, None is absent
        ({"a": {"k": ""}}, {"a": {"k": "", "l": ""}}),
    ],
)
def test_distinct_events_have_distinct_leaves(left: dict, right: dict) -> None:
    assert canonical_leaf(left) != canonical_leaf(right)


@pytest.mark.parametrize(
    "event",
    [
        {"Bad": "x"},
        {"1a": "x"},
        {"a-b": "x"},
        {"flag": True},
        {"ratio": 1.5},
        {"blob": b"bytes"},
        {"attributes": {"k": 1}},
        {"text": "\ud800"},
    ],
)
def test_unencodable_events_are_refused(event: dict) -> None:
    with pytest.raises(InvalidArgumentError):
        canonical_leaf(event)


names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
values = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=4),
)


@given(st.dictionaries(names, values, max_size=8), st.randoms())
def test_leaf_is_deterministic_under_any_field_order(event: dict, random) -> None:
    items = list(event.items())
    random.shuffle(items)
    assert canonical_leaf(dict(items)) == canonical_leaf(event)


@given(st.dictionaries(names, values, max_size=8), names, st.text(min_size=1, max_size=5))
def test_changing_any_present_field_changes_the_leaf(event: dict, name: str, text: str) -> None:
    changed = {
        **event,
        name: (event.get(name) or "") + text if isinstance(event.get(name), str | None) else text,
    }
    assert canonical_leaf(changed) != canonical_leaf(event)
