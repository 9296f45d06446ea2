"""The partition's window of recent event ids (stream/core/id_window.py)."""

import hashlib

import pytest

from authtrail.errors import FormatError
from authtrail.stream.core.id_window import IdWindow, id_key


def _leaf(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_remembers_ids_with_their_content() -> None:
    window = IdWindow(10)
    window.add("acme", "e1", _leaf("one"))
    assert window.same_content("acme", "e1", _leaf("one")) is True
    assert window.same_content("acme", "e1", _leaf("other")) is False
    assert window.same_content("acme", "e2", _leaf("one")) is None


def test_ids_of_different_tenants_are_different_entries() -> None:
    window = IdWindow(10)
    window.add("acme", "e1", _leaf("one"))
    assert window.same_content("globex", "e1", _leaf("one")) is None
    # Joining tenant and id must not make ("a", "bc") the same as ("ab", "c").
    window.add("a", "bc", _leaf("x"))
    assert window.same_content("ab", "c", _leaf("x")) is None


def test_always_keeps_the_newest_half_and_never_more_than_size() -> None:
    size = 100
    window = IdWindow(size)
    for n in range(1_000):
        window.add("acme", f"e{n}", _leaf(str(n)))
        assert len(window) <= size
        newest = range(max(0, n - size // 2 + 1), n + 1)
        assert all(window.same_content("acme", f"e{k}", _leaf(str(k))) for k in newest)
    assert window.same_content("acme", "e0", _leaf("0")) is None


def test_refuses_a_window_that_cannot_hold_anything() -> None:
    with pytest.raises(ValueError):
        IdWindow(1)


def test_round_trips_through_bytes_with_the_same_memory_of_ids() -> None:
    window = IdWindow(6)
    for n in range(5):  # two generations: 3 older, 2 newer
        window.add("acme", f"e{n}", _leaf(str(n)))
    copy = IdWindow(6)
    copy.load(window.to_bytes())
    assert copy.to_bytes() == window.to_bytes()
    for n in range(5):
        assert copy.same_content("acme", f"e{n}", _leaf(str(n))) is True
    for n in (5, 6):  # e6 rotates the generations, exactly as in the original
        copy.add("acme", f"e{n}", _leaf(str(n)))
        window.add("acme", f"e{n}", _leaf(str(n)))
    assert copy.to_bytes() == window.to_bytes()
    assert copy.same_content("acme", "e0", _leaf("0")) is None


@pytest.mark.parametrize(
    "data", [b"", b"\0" * 7, b"\0" * 8 + b"x" * 31, (5).to_bytes(8) + b"x" * 64]
)
def test_refuses_malformed_bytes(data: bytes) -> None:
    with pytest.raises(FormatError):
        IdWindow(4).load(data)


def test_keyed_calls_are_the_named_ones_with_the_key_worked_out_once() -> None:
    by_name, by_key = IdWindow(8), IdWindow(8)
    for number in range(12):
        by_name.add("acme", f"e{number}", bytes([number]) * 32)
        by_key.add_at(id_key("acme", f"e{number}"), bytes([number]) * 32)
    assert by_name.to_bytes() == by_key.to_bytes()
    assert by_key.same_content_at(id_key("acme", "e11"), bytes([11]) * 32) is True
    assert by_key.same_content_at(id_key("acme", "e11"), bytes(32)) is False
    assert by_key.same_content_at(id_key("other", "e11"), bytes([11]) * 32) is None
