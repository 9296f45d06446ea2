"""Canonical leaf: known bytes spelled out from docs/INTEGRITY.md, order independence, rejects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authtrail.errors import InvalidArgumentError
from authtrail.stream.core.canonical import MAGIC, canonical_leaf


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


# --- The fast encoder against a plain reference -------------------------------------------
# canonical_leaf caches a per-key-set layout and special-cases exact str/int values; this
# reference is docs/INTEGRITY.md §2 written as plainly as possible, so no speed-up can
# change a byte without failing here.


def _reference_str(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def reference_leaf(event: dict) -> bytes:
    leaf = MAGIC
    for name in sorted(event, key=lambda name: name.encode("utf-8")):
        value = event[name]
        if value is None or value == {}:
            continue
        leaf += _reference_str(name.encode("ascii"))
        if isinstance(value, str):
            leaf += b"s" + _reference_str(value.encode("utf-8"))
        elif isinstance(value, int):
            leaf += b"i" + _reference_str(str(int(value)).encode("ascii"))
        else:
            entries = sorted(
                (key.encode("utf-8"), item.encode("utf-8")) for key, item in value.items()
            )
            leaf += b"m" + len(entries).to_bytes(4, "big")
            for key, item in entries:
                leaf += _reference_str(key) + _reference_str(item)
    return leaf


def test_reference_agrees_with_the_known_answer() -> None:
    # The reference itself is checked against the spelled-out bytes above.
    event = {"tenant_id": "acme", "occurred_at": 1700000000000000,
             "attributes": {"b": "2", "a": "é"}, "user_id": None, "seq_hint": -5}  # fmt: skip
    assert reference_leaf(event) == canonical_leaf(event)
    assert (
        reference_leaf({"seq_hint": -5})
        == MAGIC + b"\x00\x00\x00\x08seq_hint" + b"i" + b"\x00\x00\x00\x02-5"
    )


class _Symbol(str):
    """A str subclass, like an enum symbol some decoders hand out."""


unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
any_values = st.one_of(
    st.none(),
    unicode_text,
    unicode_text.map(_Symbol),
    st.integers(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.dictionaries(unicode_text, unicode_text, max_size=4),
)


@given(st.dictionaries(names, any_values, max_size=12), st.randoms())
def test_fast_encoder_matches_the_reference(event: dict, random) -> None:
    items = list(event.items())
    random.shuffle(items)
    assert canonical_leaf(dict(items)) == reference_leaf(event)


shared_key_set = st.fixed_dictionaries({
    "event_id": unicode_text, "tenant_id": st.none() | unicode_text,
    "occurred_at": st.none() | st.integers(),
    "attributes": st.dictionaries(unicode_text, unicode_text, max_size=3),
    "user_id": st.none() | unicode_text | st.integers()})  # fmt: skip


@given(st.lists(shared_key_set, min_size=2, max_size=6))
def test_events_sharing_a_key_set_do_not_share_values(events: list[dict]) -> None:
    # The layout is cached per key set: every event must still encode its own values.
    assert [canonical_leaf(event) for event in events] == [reference_leaf(e) for e in events]


def test_realistic_decoded_events_match_the_reference() -> None:
    from authtrail.producers.traffic import TrafficConfig, generate_events
    from authtrail.schemas import AUTH_EVENT, load_schema
    from authtrail.schemas.codec import SingleObjectCodec

    codec = SingleObjectCodec(load_schema(AUTH_EVENT))
    generated = generate_events(TrafficConfig(burst_every=50), seed=3)
    events = [codec.decode(codec.encode(next(generated))) for _ in range(300)]
    assert len({tuple(event) for event in events}) == 1  # the decoder's usual key set
    assert any(event["attributes"] for event in events)  # the map path is exercised too
    for event in events:
        assert canonical_leaf(event) == reference_leaf(event)


def test_many_distinct_key_sets_stay_correct() -> None:
    # More key sets than the layout cache holds: evictions must not change any leaf.
    events = [{f"f{index}": "x", "tenant_id": str(index)} for index in range(600)]
    for _ in range(2):
        assert [canonical_leaf(event) for event in events] == [reference_leaf(e) for e in events]


@pytest.mark.parametrize(
    "event",
    [
        {1: "x", "a": "y"},  # a non-str name next to str names: refused, not a TypeError
        {"a": "x", "b": True},  # after a valid field of a cached key set
        {"a": "x", "b": "\udfff"},
        {"a": "x", "b": {"k": "\ud800"}},
        {"a": "x", "b": {"\ud800": "v"}},
    ],
)
def test_bad_values_are_refused_also_with_a_cached_layout(event: dict) -> None:
    good = {name: "ok" for name in event if isinstance(name, str)}
    if len(good) == len(event):
        canonical_leaf(good)  # caches the key set's layout first
    with pytest.raises(InvalidArgumentError):
        canonical_leaf(event)
    with pytest.raises(InvalidArgumentError):
        canonical_leaf(event)  # a refused key set must not have been cached as valid
