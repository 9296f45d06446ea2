"""Chained batches (stream/worker/chained_batch.py): where the worker cuts them, what their header
promises, and that recovery rebuilds the same state from them as from bare records."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from authtrail.errors import FormatError, InvalidArgumentError
from authtrail.schemas import CHAINED_BATCH, CHAINED_RECORD, CHAINED_REJECTION, CHECKPOINT, CLAIM
from authtrail.stream.core.note import make_keyring
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.worker import recovery
from authtrail.stream.worker.app import codec
from authtrail.stream.worker.chained_batch import (
    ENCODED_SCHEMA,
    BatchBuilder,
    _encode,
    _python_records_array,
    _records_array,
    batch_records,
    chained_records,
    decode_batch,
    is_batch,
    utc_month,
)
from tests.unit.test_worker import SIGNER, Harness, _event

BATCHES, RECORDS = codec(CHAINED_BATCH), codec(CHAINED_RECORD)
FINGERPRINT = RECORDS.reader_fingerprint
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("moment", "month"),
    [
        (datetime(2025, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC), 202501),
        (datetime(2025, 2, 1, tzinfo=UTC), 202502),
        (datetime(2024, 2, 29, 12, tzinfo=UTC), 202402),
        (datetime(2000, 3, 1, tzinfo=UTC), 200003),
        (datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), 196912),
        (datetime(2299, 12, 31, tzinfo=UTC), 229912),
    ],
)
def test_utc_month_known_answers(moment: datetime, month: int) -> None:
    assert utc_month(_micros(moment)) == month


def test_utc_month_agrees_with_the_calendar() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        moment = EPOCH + timedelta(microseconds=rng.randint(-(10**16), 10**16))
        assert utc_month(_micros(moment)) == moment.year * 100 + moment.month


def _builder(max_bytes: int = 1000) -> BatchBuilder:
    return BatchBuilder(BATCHES, FINGERPRINT, max_bytes)


def _header(value: bytes) -> tuple[int, int, list[tuple[str, int, int]], list[bytes]]:
    batch = decode_batch(value, BATCHES)
    ranges = [(r["tenant_id"], r["first_seq"], r["last_seq"]) for r in batch["tenants"]]
    return batch["epoch"], batch["month"], ranges, batch["records"]


JANUARY = _micros(datetime(2026, 1, 31, 23, tzinfo=UTC))
FEBRUARY = _micros(datetime(2026, 2, 1, 1, tzinfo=UTC))


def test_a_batch_holds_each_tenants_seq_range_and_the_bodies_in_order() -> None:
    builder = _builder()
    adds = [("a", 1), ("b", 7), ("a", 2), ("a", 3), ("b", 8)]
    for n, (tenant, seq) in enumerate(adds):
        body = f"{tenant}{seq}".encode()
        assert builder.add(epoch=4, tenant_id=tenant, seq=seq, occurred_at=JANUARY + n,
                           body=body) is None  # fmt: skip
    value = builder.take()
    assert value is not None and is_batch(value, BATCHES)
    assert _header(value) == (4, 202601, [("a", 1, 3), ("b", 7, 8)],
                              [b"a1", b"b7", b"a2", b"a3", b"b8"])  # fmt: skip
    assert decode_batch(value, BATCHES)["newest_occurred_at"] == JANUARY + 4
    assert builder.take() is None  # nothing open any more


def test_batches_are_cut_at_a_month_an_epoch_and_the_size_bound() -> None:
    builder = _builder(max_bytes=10)
    finished = [
        builder.add(epoch=1, tenant_id="a", seq=1, occurred_at=JANUARY, body=b"1234"),
        builder.add(epoch=1, tenant_id="a", seq=2, occurred_at=JANUARY, body=b"5678"),
        builder.add(epoch=1, tenant_id="a", seq=3, occurred_at=FEBRUARY, body=b"x"),  # month
        builder.add(epoch=2, tenant_id="a", seq=4, occurred_at=FEBRUARY, body=b"y"),  # epoch
        builder.add(epoch=2, tenant_id="a", seq=5, occurred_at=FEBRUARY, body=b"z" * 10),  # size
        builder.add(epoch=2, tenant_id="a", seq=6, occurred_at=JANUARY, body=b"w" * 50),
    ]
    last = builder.take()
    values = [value for value in [*finished, last] if value is not None]
    assert [(_header(v)[0], _header(v)[1], _header(v)[2]) for v in values] == [
        (1, 202601, [("a", 1, 2)]),
        (1, 202602, [("a", 3, 3)]),
        (2, 202602, [("a", 4, 4)]),
        (2, 202602, [("a", 5, 5)]),
        (2, 202601, [("a", 6, 6)]),  # a body over the bound goes alone, never dropped
    ]
    assert finished[:2] == [None, None]


@pytest.mark.parametrize(
    ("tenants", "records"),
    [
        ([("a", 1, 3)], [b"1", b"2"]),  # promises more records than it holds
        ([("a", 1, 1)], [b"1", b"2"]),  # holds a record no range accounts for
        ([("a", 0, 1)], [b"1", b"2"]),  # seq 0 does not exist
        ([("a", 3, 2)], []),  # a backwards range
        ([], []),  # an empty batch
    ],
)
def test_a_batch_whose_header_does_not_match_its_records_is_refused(
    tenants: list[tuple[str, int, int]], records: list[bytes]
) -> None:
    value = BATCHES.encode({
        "epoch": 1, "record_schema": FINGERPRINT, "month": 202601, "records": records,
        "newest_occurred_at": JANUARY,
        "tenants": [{"tenant_id": t, "first_seq": first, "last_seq": last}
                    for t, first, last in tenants],
    })  # fmt: skip
    with pytest.raises(FormatError, match="chained batch"):
        decode_batch(value, BATCHES)


def test_a_truncated_batch_is_refused() -> None:
    builder = _builder()
    builder.add(epoch=1, tenant_id="a", seq=1, occurred_at=JANUARY, body=b"body")
    value = builder.take()
    assert value is not None
    with pytest.raises(FormatError):
        decode_batch(value[:-3], BATCHES)


def _topics() -> recovery.Topics:
    return recovery.Topics(
        chained="chained", checkpoints="checkpoints", snapshots=None,
        chained_codec=RECORDS, checkpoint_codec=codec(CHECKPOINT), claim_codec=codec(CLAIM),
        rejection_codec=codec(CHAINED_REJECTION),
    )  # fmt: skip


def _replayed(values: list[bytes]) -> Sequencer:
    sequencer = Sequencer(SIGNER, "authtrail.test", batch_size=3, batch_interval=60)
    replay = recovery._Replay(sequencer, _topics(), make_keyring([SIGNER.verifier_key()]),
                              "authtrail.test", None)  # fmt: skip
    replay.records(iter([(n, None, value, None) for n, value in enumerate(values)]))
    return sequencer


def test_recovery_reads_the_batches_the_worker_wrote_like_bare_records() -> None:
    """The worker's real output (batches and a rejection between them) replays to the
    state the same records replayed one by one give, and to the worker's own."""
    inputs = [_event(n, tenant="acme" if n % 3 else "globex") for n in range(12)]
    inputs[5] = b"\x00not avro"
    harness = Harness(inputs)
    harness.run(list(range(12)))
    assert len(harness.batches) == 2  # cut by the rejection, which stays between them
    written = [value for role, _, value, _ in harness.raw if role == "chained"]
    assert [is_batch(value, BATCHES) for value in written] == [True, False, True]
    from_batches = _replayed(written)
    one_by_one = _replayed([value for role, _, value, _ in harness.published if role == "chained"])
    worker = harness.worker._sequencers[2]
    for sequencer in (from_batches, one_by_one):
        assert (sequencer.source_offset, sequencer.source_index) == (11, None)
        heads = {tenant: log.head for tenant, log in sequencer.tenants.items()}
        assert heads == {tenant: log.head for tenant, log in worker.tenants.items()}


def test_chained_records_of_a_batch_and_of_a_bare_record() -> None:
    harness = Harness([_event(n) for n in range(4)])
    harness.run([0, 1, 2, 3])
    ((value, _),) = harness.batches
    records = chained_records(value, RECORDS, BATCHES)
    assert [r["event"]["event_id"] for r in records] == ["e0", "e1", "e2", "e3"]
    assert records == list(batch_records(decode_batch(value, BATCHES), RECORDS))
    bare = RECORDS.encode(records[0])
    assert chained_records(bare, RECORDS, BATCHES) == records[:1]


# --- the batch's own encoder ------------------------------------------------------------


def test_the_direct_encoder_is_for_todays_batch_schema() -> None:
    # A changed chained_batch.avsc must come with a changed encoder (or none): BatchBuilder
    # encodes directly only for this fingerprint.
    assert BATCHES.reader_fingerprint == ENCODED_SCHEMA


def _filled(rng: random.Random, builder: BatchBuilder) -> None:
    seqs: dict[str, int] = {}
    epoch = rng.choice([1, 0, 64, 2**62])
    moments = [1, -1, 2**62, 1_760_000_000_000_000]
    for _ in range(rng.choice([1, 2, 5, 300])):
        tenant = rng.choice(["acme", "globex", "é-tenant", "t" * 200, ""])
        seqs[tenant] = seqs.get(tenant, rng.choice([0, 62, 2**40])) + 1
        size = rng.choice([0, 1, 63, 64, 8191, 8192, 70_000])
        finished = builder.add(epoch=epoch, tenant_id=tenant, seq=seqs[tenant],
                               occurred_at=rng.choice(moments[:1] * 20 + moments),
                               body=rng.randbytes(size))  # fmt: skip
        assert finished is None or BATCHES.decode(finished)


def test_batches_are_encoded_as_the_codec_encodes_them() -> None:
    rng = random.Random(12)
    for _ in range(200):
        builder = _builder(10**9)
        _filled(rng, builder)
        state = builder._open
        assert state is not None and _encode(state, FINGERPRINT) is not None  # no fallback
        through_codec = _builder(10**9)
        through_codec._direct, through_codec._open = False, state
        assert builder.take() == through_codec.take()


def test_the_records_array_in_c_is_the_python_one() -> None:
    assert _records_array is not _python_records_array  # the C one is built
    rng = random.Random(7)
    sizes = [0, 1, 63, 64, 8191, 8192, 70_000]
    for count in [0, 1, 2, 63, 64, 65, 300]:
        bodies = [rng.randbytes(rng.choice(sizes)) for _ in range(count)]
        assert _records_array(bodies) == _python_records_array(bodies)
    for odd in (bytearray(b"x"), "x", memoryview(b"x"), None):
        assert _records_array([b"a", odd]) is None  # type: ignore[list-item]
        assert _python_records_array([b"a", odd]) is None  # type: ignore[list-item]
    assert _records_array((b"a",)) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tenant_id", "seq"), [("bad \ud800", 1), ("acme", 2**63), ("acme", -(2**63) - 1)]
)
def test_what_the_codec_refuses_is_left_to_it(tenant_id: str, seq: int) -> None:
    builder = _builder()
    builder.add(epoch=1, tenant_id=tenant_id, seq=seq, occurred_at=1, body=b"x")
    with pytest.raises(InvalidArgumentError):
        builder.take()
