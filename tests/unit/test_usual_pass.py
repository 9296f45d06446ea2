"""The usual events of an envelope in one C loop (stream/worker/usual_pass.py) against the
worker handling every event in Python: the same publishes, byte for byte and in order.

Random envelopes mix the usual event with everything the loop must leave to Python or stop
after: duplicates and conflicts, undecodable bytes, another schema's fingerprint, reserved
services and event ids, an oversized event, values holding the sealed prefix, tenants seen
for the first time (a tenant log to make), batches that fill inside an envelope, lockouts that
make the guard decide, bare messages and the decisions fed back as input. Runs of bare
messages (the consumer's, stream/worker/record_runs.py) go through the same loop, each with
its own offset and timestamp.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from authtrail._speedups import UsualPass
from authtrail.producers.sdk.sealed_values import SEALED_PREFIX
from authtrail.schemas import EVENT_ENVELOPE
from authtrail.stream.core import native_hashes
from authtrail.stream.core.canonical import MAGIC, SEALED_MARK, canonical_leaf
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.worker import sequencing
from authtrail.stream.worker.admission import Limits, admission_core, check_event
from authtrail.stream.worker.app import codec
from authtrail.stream.worker.sequencing import EVENTS as EVENTS_ROLE
from authtrail.stream.worker.sequencing import InputRecord
from authtrail.stream.worker.usual_pass import (
    DECIDED,
    FILLED,
    STOPPED,
    UNSPLICED,
)
from tests.unit.test_worker import EVENTS, SIGNER, Harness

ENVELOPES = codec(EVENT_ENVELOPE)
BASE_TIME = 1_700_000_000_000_000
LIMITS = Limits(max_record_bytes=2_000)


class _Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def sequenced(self, partition: int, tenant_id: str, occurred_at: list[int]) -> None:
        self.calls.append(("sequenced", partition, tenant_id, list(occurred_at)))

    def signed(self, partition: int, tenant_id: str, batch_records: int) -> None:
        self.calls.append(("signed", partition, tenant_id, batch_records))

    def forget(self, partitions: Any) -> None:
        self.calls.append(("forget", list(partitions)))


class _Counted:
    """The worker's UsualPass, counting the events it sequenced and why it stopped."""

    def __init__(self, usual: UsualPass) -> None:
        self.usual, self.sequenced = usual, 0
        self.stops: dict[int, int] = {}

    def run(self, *args: Any) -> tuple[int, int, Any]:
        result = self.usual.run(*args)
        self.sequenced += len(args[-1]) // 4
        self.stops[result[1]] = self.stops.get(result[1], 0) + 1
        return result


def _event(rng: random.Random, n: int, tenants: list[str]) -> dict[str, Any]:
    failed = rng.random() < 0.3
    event: dict[str, Any] = {
        "event_id": f"e{n}",
        "tenant_id": rng.choice(tenants),
        "event_type": "LOGIN_FAILED" if failed else "LOGIN",
        "outcome": "FAILURE" if failed else "SUCCESS",
        "occurred_at": BASE_TIME + n * 1_000_000,
        "user_id": rng.choice(["u1", "u2", "u3"]),
        "client_ip": rng.choice(["192.0.2.1", "192.0.2.2"]),
    }
    if rng.random() < 0.3:
        event["attributes"] = {"k": rng.choice(["v", "w" * 40])}
    return event


def _unusual(rng: random.Random, n: int, event: dict[str, Any], sent: list[dict]) -> bytes:
    """One of the values the loop must leave to Python."""
    choice = rng.randrange(9)
    if choice == 0 and sent:
        return EVENTS.encode(rng.choice(sent))  # a duplicate
    if choice == 1 and sent:
        return EVENTS.encode(rng.choice(sent) | {"user_id": "other"})  # a conflict
    if choice == 2:
        return b"\xc3\x01" + bytes(8) + b"x"  # another schema's fingerprint
    if choice == 3:
        value = EVENTS.encode(event)
        return rng.choice([value[:-1], value + b"\x00"])  # truncated, or a byte after it
    if choice == 4:
        return EVENTS.encode(event | {"service": rng.choice(["AuthTrail-x", "authtrail"])})
    if choice == 5:
        return EVENTS.encode(event | {"event_id": rng.choice([" e", "authtrail-lockout:1"])})
    if choice == 6:
        return EVENTS.encode(event | {"attributes": {"big": "x" * 3_000}})  # oversized
    if choice == 7:
        return EVENTS.encode(event | {"user_name": SEALED_PREFIX + "AAAA"})
    return EVENTS.encode(event | {"tenant_id": f"new{n}"})  # a tenant log to make


def _inputs(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    tenants = ["acme", "globex", "initech"]
    inputs: list[bytes] = []
    sent: list[dict[str, Any]] = []
    n = 0
    for _ in range(40):
        values = []
        for _ in range(rng.randrange(1, 30)):
            n += 1
            event = _event(rng, n, tenants)
            if rng.random() < 0.15:
                values.append(_unusual(rng, n, event, sent))
            else:
                sent.append(event)
                values.append(EVENTS.encode(event))
        inputs.append(ENVELOPES.encode({"events": values}) if rng.random() < 0.9 else values[0])
    return inputs


def _sequencer() -> Sequencer:
    """The harness's sequencer with a fixed clock: both runs stamp the same checkpoints."""
    return Sequencer(SIGNER, "authtrail.test", batch_size=3, batch_interval=60,
                     monotonic=lambda: 0.0, wall_clock_micros=lambda: BASE_TIME)  # fmt: skip


@pytest.fixture(autouse=True)
def _fixed_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rejections say when they were made: the same in both runs."""
    monkeypatch.setattr(sequencing.time, "time_ns", lambda: BASE_TIME * 1_000)


def _harness(inputs: list[bytes], native: bool) -> tuple[Harness, _Counted | None]:
    harness = Harness(inputs, limits=LIMITS, sequencer=_sequencer)
    harness.worker.observer = _Observer()
    counted = None
    if native:
        assert harness.worker._usual is not None
        counted = harness.worker._usual = _Counted(harness.worker._usual)  # type: ignore[assignment]
    else:
        harness.worker._usual = None
    return harness, counted


def _run(harness: Harness) -> None:
    harness.run(list(range(len(harness.inputs))))
    # The decisions come back through the events topic, as from the app.
    decisions = [value for role, _, value, _ in harness.raw if role == EVENTS_ROLE]
    if decisions:
        start = len(harness.inputs)
        harness.inputs += [ENVELOPES.encode({"events": decisions})]
        harness.run([start])


@pytest.mark.parametrize("seed", range(12))
def test_the_loop_publishes_what_the_worker_publishes_one_event_at_a_time(seed: int) -> None:
    python, _ = _harness(_inputs(seed), native=False)
    native, counted = _harness(_inputs(seed), native=True)
    _run(python)
    _run(native)
    assert native.raw == python.raw
    assert native.worker.counters == python.worker.counters
    assert native.worker.rejected_by_kind == python.worker.rejected_by_kind
    assert native.worker.observer.calls == python.worker.observer.calls  # type: ignore[union-attr]
    assert counted is not None
    # Most events went through the loop, and it stopped for each reason it has.
    assert counted.sequenced > python.worker.counters.sequenced // 2
    assert {STOPPED, FILLED} <= set(counted.stops)


def _bare_inputs(seed: int) -> tuple[list[bytes], list[int]]:
    """Bare messages (every 20th input an envelope) and each one's timestamp: a tenth of
    them stamped two days before their event, which admission then rejects as from the
    future, so a timestamp read for the wrong record changes what is published."""
    rng = random.Random(seed)
    tenants = ["acme", "globex", "initech"]
    inputs: list[bytes] = []
    times: list[int] = []
    sent: list[dict[str, Any]] = []
    for n in range(1, 400):
        event = _event(rng, n, tenants)
        if rng.random() < 0.1:
            value = _unusual(rng, n, event, sent)
        else:
            sent.append(event)
            value = EVENTS.encode(event)
        if n % 20 == 0:
            value = ENVELOPES.encode({"events": [value, EVENTS.encode(_event(rng, -n, tenants))]})
        inputs.append(value)
        skew = 2 * 86_400_000_000 if rng.random() < 0.1 else 0
        times.append(event["occurred_at"] - skew)
    return inputs, times


def _run_stamped(harness: Harness, times: list[int]) -> None:
    """The inputs as one take of partition 2, each with its timestamp, then the decisions."""
    records = [InputRecord(2, offset, b"acme", value, times[offset])
               for offset, value in enumerate(harness.inputs)]  # fmt: skip
    asyncio.run(harness.worker.process(records))
    decisions = [value for role, _, value, _ in harness.raw if role == EVENTS_ROLE]
    if decisions:
        harness.inputs += [ENVELOPES.encode({"events": decisions})]
        harness.run([len(harness.inputs) - 1])


@pytest.mark.parametrize("seed", range(6))
def test_a_run_of_bare_messages_publishes_what_the_worker_publishes_one_at_a_time(
    seed: int,
) -> None:
    inputs, times = _bare_inputs(seed)
    python, _ = _harness(list(inputs), native=False)
    native, counted = _harness(list(inputs), native=True)
    _run_stamped(python, times)
    _run_stamped(native, times)
    assert native.raw == python.raw
    assert native.worker.counters == python.worker.counters
    assert native.worker.rejected_by_kind == python.worker.rejected_by_kind
    assert python.worker.rejected_by_kind["absurd_timestamp"] > 0  # the skewed timestamps
    assert native.worker.observer.calls == python.worker.observer.calls  # type: ignore[union-attr]
    assert counted is not None
    assert counted.sequenced > python.worker.counters.sequenced // 2


def test_the_loop_stops_for_the_guards_decisions() -> None:
    failures = [
        EVENTS.encode(
            {
                "event_id": f"f{n}",
                "tenant_id": "acme",
                "event_type": "LOGIN_FAILED",
                "outcome": "FAILURE",
                "occurred_at": BASE_TIME + n * 5_000_000,
                "user_id": "alice",
            }
        )
        for n in range(8)
    ]
    inputs = [ENVELOPES.encode({"events": failures})]
    python, _ = _harness(list(inputs), native=False)
    native, counted = _harness(list(inputs), native=True)
    _run(python)
    _run(native)
    assert native.raw == python.raw
    assert python.worker.counters.decisions > 0
    assert counted is not None and counted.stops.get(DECIDED)


def _usual_value(**fields: Any) -> bytes:
    """A usual event of tenant acme, admitted and its leaf laid out once, as the worker's
    first such event leaves them (for partition 2)."""
    event = {"event_id": "e1", "tenant_id": "acme", "event_type": "LOGIN", "outcome": "SUCCESS",
             "occurred_at": BASE_TIME, **fields}  # fmt: skip
    value = EVENTS.encode(event)
    check_event(EVENTS.decode(value), record_bytes=len(value), record_timestamp_micros=None,
                limits=LIMITS, partition=2, partitions=None)  # fmt: skip
    canonical_leaf(EVENTS.decode(value))
    return value


def _run_alone(values: list[Any], epoch: int = 7) -> tuple[tuple[int, int, Any], list[Any]]:
    """run() over ``values`` (offset 1 of partition 2) on a sequencer whose tenant acme has
    an open batch, so each offer is the plain append: its result and ``out``."""
    usual = Harness([], limits=LIMITS).worker._usual
    assert usual is not None
    sequencer = Sequencer(SIGNER, "authtrail.test", batch_size=100, batch_interval=60)
    sequencer.offer("acme", "e0", b"leaf", 0, 0)
    out: list[Any] = []
    result = usual.run(
        sequencer, values, 0, 1, None, 2, None, epoch, None, sequencer.filled, None, out,
    )  # fmt: skip
    assert sequencer.tenants["acme"].head.seq == 1 + len(out) // 4 + (result[1] == UNSPLICED)
    return result, out


def test_a_body_the_loop_cannot_write_is_handed_back_sequenced() -> None:
    """An epoch beyond 64 bits: the offer sequenced the event, the chained body is left to
    the codec (UNSPLICED), nothing of it in ``out``."""
    value = _usual_value()
    (at, stopped, rest), out = _run_alone([value], epoch=2**63)
    assert (at, stopped, out) == (1, UNSPLICED, [])
    decoded, link = rest
    assert decoded == EVENTS.decode(value) and link.seq == 2


def test_the_loop_leaves_a_value_holding_the_sealed_prefix_to_python() -> None:
    """Its leaf holds the prefix too (a worker with a sealer, or canonical.py's v2 leaf)."""
    values = [_usual_value(event_id=f"e{n}", user_id=user) for n, user in
              enumerate(["x", "y", "x" + SEALED_PREFIX, "z"], start=1)]  # fmt: skip
    (at, stopped, _), out = _run_alone(values)
    assert (at, stopped, out[::4]) == (2, STOPPED, ["acme", "acme"])


def test_the_loop_stops_at_a_value_that_is_not_bytes() -> None:
    values: list[Any] = [_usual_value(event_id=f"e{n}") for n in (1, 2, 3)]
    values[1] = bytearray(values[1])
    (at, stopped, _), out = _run_alone(values)
    assert (at, stopped, len(out)) == (1, STOPPED, 4)


def test_usual_pass_refuses_arguments_it_cannot_use() -> None:
    admission = admission_core(LIMITS)
    reader = EVENTS.flat_reader
    with pytest.raises(TypeError):
        UsualPass(lambda data, pos: None, admission, b"h", MAGIC, SEALED_MARK,
                  native_hashes.sequencer_offer)  # fmt: skip
    usual = UsualPass(reader, admission, b"h", MAGIC, SEALED_MARK, native_hashes.sequencer_offer)
    with pytest.raises(TypeError):
        usual.run(None, (), 0, 0, None, 0, None, 0, None, [], None, [])
    with pytest.raises(TypeError):
        usual.run(None, [], 0, 0, None, 0, None, 0, None, [], [], [])
    with pytest.raises(TypeError):
        usual.run(None, [], 0, 0, None, 0, None, 0, None, [], None)
