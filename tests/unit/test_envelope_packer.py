"""authtrail.producers.sdk.envelope: what goes together, bounded by bytes and linger, in order."""

from __future__ import annotations

import pytest

from authtrail.errors import InvalidArgumentError
from authtrail.producers.sdk.envelope import EnvelopePacker, Packed, varint_size
from authtrail.schemas import EVENT_ENVELOPE
from authtrail.stream.worker.app import codec
from tests.unit.test_worker import _event

ENVELOPES = codec(EVENT_ENVELOPE)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _events_of(packed: Packed) -> list[bytes]:
    if packed.value[2:10] == ENVELOPES.reader_fingerprint:
        events: list[bytes] = ENVELOPES.decode(packed.value)["events"]
        return events
    return [packed.value]  # a bare event


@pytest.mark.parametrize(("value", "size"), [(0, 1), (63, 1), (64, 2), (8191, 2), (8192, 3)])
def test_varint_size_matches_the_avro_encoding(value: int, size: int) -> None:
    assert varint_size(value) == size


def test_varint_size_at_every_byte_boundary() -> None:
    def encoded_size(value: int) -> int:  # Avro's long: zig-zag, then 7 bits a byte
        zigzag, size = value << 1, 1
        while zigzag >= 0x80:
            zigzag >>= 7
            size += 1
        return size

    for bits in range(63):
        for value in {max(0, 2**bits - 1), 2**bits, 2**bits + 1}:
            assert varint_size(value) == encoded_size(value), value


def test_events_of_one_partition_share_an_envelope_in_send_order() -> None:
    packer = EnvelopePacker(ENVELOPES, 10_000, 0.005, Clock())
    values = [_event(n, tenant="a" if n % 2 else "b") for n in range(5)]
    for token, value in enumerate(values):
        assert packer.add(7, b"a" if token % 2 else b"b", value, token) == []
    (packed,) = packer.drain()
    assert packed.partition == 7 and packed.key == b"b"  # the first event's tenant
    assert _events_of(packed) == values and packed.tokens == (0, 1, 2, 3, 4)
    assert packed.sizes == tuple(len(value) for value in values)


def test_partitions_never_share_an_envelope() -> None:
    packer = EnvelopePacker(ENVELOPES, 10_000, 0.005, Clock())
    for token in range(6):
        packer.add(token % 2, b"k", _event(token), token)
    sealed = {packed.partition: packed for packed in packer.drain()}
    assert [len(_events_of(sealed[p])) for p in (0, 1)] == [3, 3]
    assert sealed[0].tokens == (0, 2, 4) and sealed[1].tokens == (1, 3, 5)


def test_an_envelope_is_sealed_before_it_would_exceed_max_bytes() -> None:
    max_bytes = 400
    packer = EnvelopePacker(ENVELOPES, max_bytes, 10.0, Clock())
    sealed: list[Packed] = []
    for token in range(40):
        sealed += packer.add(0, b"k", _event(token), token)
    sealed += packer.drain()
    assert len(sealed) > 3
    assert all(len(packed.value) <= max_bytes for packed in sealed)
    assert [t for packed in sealed for t in packed.tokens] == list(range(40))
    assert [e for packed in sealed for e in _events_of(packed)] == [_event(n) for n in range(40)]
    # Full envelopes are nearly full: the bound is not wildly conservative.
    assert all(len(packed.value) > max_bytes - 2 * len(_event(0)) for packed in sealed[:-1])


def test_an_event_too_large_for_any_envelope_goes_bare_after_the_open_one() -> None:
    packer = EnvelopePacker(ENVELOPES, 300, 10.0, Clock())
    small, large = _event(0), _event(1, event_id="x" * 400)
    assert packer.add(0, b"k", small, 0) == []
    first, second = packer.add(0, b"k", large, 1)
    assert (first.value, first.tokens) == (small, (0,))  # one event: sent bare
    assert (second.value, second.tokens) == (large, (1,))
    assert packer.pending == 0


def test_linger_seals_only_envelopes_that_waited_long_enough() -> None:
    clock = Clock()
    packer = EnvelopePacker(ENVELOPES, 10_000, 0.25, clock)  # binary fractions: exact
    packer.add(0, b"k", _event(0), 0)
    clock.now += 0.125
    packer.add(1, b"k", _event(1), 1)
    packer.add(0, b"k", _event(2), 2)
    assert packer.due() == []
    clock.now += 0.125
    (due,) = packer.due()
    assert due.partition == 0 and due.tokens == (0, 2)
    assert packer.pending == 1
    clock.now += 0.125
    assert [packed.tokens for packed in packer.due()] == [(1,)]


def test_a_packer_refuses_bounds_that_cannot_hold_an_event() -> None:
    with pytest.raises(InvalidArgumentError):
        EnvelopePacker(ENVELOPES, 12, 0.005)
    with pytest.raises(InvalidArgumentError):
        EnvelopePacker(ENVELOPES, 1000, -1)
