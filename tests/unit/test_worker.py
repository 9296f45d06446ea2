"""The sequencer agent's adapter, driven directly: routing, rejects, replay, skipped input.

No broker: publishing is captured, recovery and direct reads are plain functions. The
real Faust/Kafka path is exercised by tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authtrail.schemas import (
    AUTH_EVENT,
    CHAINED_BATCH,
    CHAINED_RECORD,
    CHAINED_REJECTION,
    CHECKPOINT,
    DEAD_LETTER,
    EVENT_ENVELOPE,
    SNAPSHOT,
    load_schema,
)
from authtrail.schemas.codec import SINGLE_OBJECT_MARKER, SingleObjectCodec
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.chain import ChainLink, chain_hash
from authtrail.stream.core.note import Signer, generate_key_strings
from authtrail.stream.core.rejection import rejection_leaf
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.signing_budget import SigningBudget
from authtrail.stream.detection.decisions import DECISION_ID_PREFIX
from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout_policy import LockoutPolicy, PolicySet
from authtrail.stream.worker import sequencing
from authtrail.stream.worker.admission import Limits
from authtrail.stream.worker.app import codec
from authtrail.stream.worker.chained_batch import decode_batch, is_batch
from authtrail.stream.worker.recovery import Recovery
from authtrail.stream.worker.sequencing import CHAINED, CHECKPOINTS, InputRecord, SequencerWorker
from authtrail.stream.worker.sequencing import DEAD_LETTER as DEAD_LETTER_ROLE
from authtrail.stream.worker.sequencing import SNAPSHOTS as SNAPSHOTS_ROLE
from authtrail.stream.worker.shredding import Sealer
from authtrail.stream.worker.snapshot import join, restore_state
from authtrail.stream.worker.snapshotter import Snapshotter

SIGNER = Signer.parse(generate_key_strings("worker-test")[0])
POLICIES = PolicySet(
    lockout=LockoutPolicy(max_login_failures=3, quick_login_check_milliseconds=0),
    allowed_lateness_seconds=0.0,
)
EVENTS = codec(AUTH_EVENT)
REJECTIONS = codec(CHAINED_REJECTION)
BATCHES = codec(CHAINED_BATCH)
SNAPSHOTS = codec(SNAPSHOT)
ROOT = Path(__file__).resolve().parents[2]
VERSIONS = Path(__file__).parent / "schema_versions"


def _event(n: int, tenant: str = "acme", event_id: str | None = None) -> bytes:
    return EVENTS.encode(
        {
            "event_id": f"e{n}" if event_id is None else event_id,
            "tenant_id": tenant,
            "event_type": "LOGIN",
            "outcome": "SUCCESS",
            "occurred_at": 1_700_000_000_000_000 + n,
        }
    )


class Harness:
    """A worker with captured outputs; it is its own
    :class:`~authtrail.stream.worker.sequencing.Publisher`."""

    def __init__(
        self,
        inputs: list[bytes],
        restored: list[tuple[str, str, ChainLink, int]] = (),
        event_codec: SingleObjectCodec = EVENTS,
        limits: Limits | None = None,
        sequencer: Callable[[], Sequencer] | None = None,
        signing: SigningBudget | None = None,
        snapshotter: Snapshotter | None = None,
        snapshots_forked: bool = False,
        sealer: Sealer | None = None,
    ):
        self.inputs = inputs
        self.restored = list(restored)
        self.published: list[tuple[str, bytes | None, bytes, int]] = []
        self.batches: list[tuple[bytes, int]] = []  # chained batches as published
        self.raw: list[tuple[str, bytes | None, bytes, int]] = []  # every publish as made
        self.acknowledged = 0  # how many of ``published`` a flush has confirmed
        self.acknowledged_when_published: list[int] = []
        self.flushes = 0
        self.fetched: list[tuple[int, int | None, int]] = []
        self.unreadable: list[set[int]] = []  # per direct read, the offsets it leaves out
        self.worker = SequencerWorker(
            new_sequencer=sequencer
            or (lambda: Sequencer(SIGNER, "authtrail.test", batch_size=3, batch_interval=60)),
            recover=self.recover,
            fetch=self.fetch,
            publisher=self,
            event_codec=event_codec,
            chained_codec=codec(CHAINED_RECORD),
            checkpoint_codec=codec(CHECKPOINT),
            dead_letter_codec=codec(DEAD_LETTER),
            rejection_codec=REJECTIONS,
            events_topic="events",
            new_guard=lambda: Guard(POLICIES),
            envelope_codec=codec(EVENT_ENVELOPE),
            limits=limits,
            batch_codec=BATCHES,
            signing=signing,
            snapshotter=snapshotter,
            snapshots_forked=snapshots_forked,
            sealer=sealer,
        )

    def recover(self, sequencer: Sequencer, partition: int, guard: Any) -> Recovery:
        for tenant, event_id, link, offset, *index in self.restored:
            sequencer.restore_record(tenant, event_id, link, offset, *index)
        return Recovery(len(self.restored), epoch=7)

    def fetch(self, partition: int, start: int | None, end: int) -> list[InputRecord]:
        self.fetched.append((partition, start, end))
        first = 0 if start is None else start
        left_out = self.unreadable.pop(0) if self.unreadable else set()
        return [InputRecord(partition, o, None, self.inputs[o])
                for o in range(first, end) if o not in left_out]  # fmt: skip

    def publish(self, role: str, key: bytes | None, value: bytes, partition: int) -> None:
        """Record a publish; a chained batch is recorded as its records, each framed as a
        bare ChainedRecord (what the sink and recovery read from it), and kept whole in
        ``batches``."""
        self.raw.append((role, key, value, partition))
        values = [value]
        if role == CHAINED and is_batch(value, BATCHES):
            self.batches.append((value, partition))
            batch = decode_batch(value, BATCHES)
            values = [SINGLE_OBJECT_MARKER + batch["record_schema"] + body
                      for body in batch["records"]]  # fmt: skip
        for item in values:
            self.published.append((role, key, item, partition))
            self.acknowledged_when_published.append(self.acknowledged)

    async def flush(self) -> None:
        await asyncio.sleep(0)  # a real flush yields to the loop while it waits
        self.acknowledged = len(self.published)
        self.flushes += 1

    def take_acknowledged(self) -> dict[tuple[str, int], tuple[int, int]]:
        return {}

    def run(self, offsets: list[int], partition: int = 2) -> None:
        records = [InputRecord(partition, o, b"acme", self.inputs[o]) for o in offsets]
        asyncio.run(self.worker.process(records))

    def decoded(self, role: str) -> list[dict]:
        """What was published for ``role``; for CHAINED, the chained events only."""
        codecs = {CHAINED: CHAINED_RECORD, CHECKPOINTS: CHECKPOINT, DEAD_LETTER_ROLE: DEAD_LETTER}
        return [
            codec(codecs[role]).decode(v)
            for r, _, v, _ in self.published
            if r == role and not _is_rejection(v)
        ]

    def rejections(self) -> list[dict]:
        """The chained rejections published (on the chained topic)."""
        return [REJECTIONS.decode(v) for r, _, v, _ in self.published
                if r == CHAINED and _is_rejection(v)]  # fmt: skip


def _is_rejection(value: bytes) -> bool:
    return value[2:10] == REJECTIONS.reader_fingerprint


def test_outputs_go_to_the_input_partition_with_source_offsets() -> None:
    harness = Harness([_event(n) for n in range(7)])
    harness.run(list(range(7)))
    chained = harness.decoded(CHAINED)
    assert [r["seq"] for r in chained] == list(range(1, 8))
    assert [r["source_offset"] for r in chained] == list(range(7))
    assert {r["epoch"] for r in chained} == {7}  # the epoch its recovery claimed
    assert {p for *_, p in harness.published} == {2}
    checkpoints = harness.decoded(CHECKPOINTS)
    assert [(c["batch_first_seq"], c["size"]) for c in checkpoints] == [(1, 3), (4, 6)]
    # every checkpoint is published after the records it covers
    roles = [role for role, *_ in harness.published]
    assert roles.index(CHECKPOINTS) > roles.index(CHAINED) + 2


class RecordingObserver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str, Any]] = []

    def sequenced(self, partition: int, tenant_id: str, occurred_at_micros: list[int]) -> None:
        self.calls.append(("sequenced", partition, tenant_id, list(occurred_at_micros)))

    def signed(self, partition: int, tenant_id: str, batch_records: int) -> None:
        self.calls.append(("signed", partition, tenant_id, batch_records))

    def forget(self, partitions: Any) -> None:
        pass


def test_the_observer_hears_of_a_steps_events_once_per_tenant_before_their_checkpoint() -> None:
    harness = Harness([_event(0), _event(1, "globex"), _event(2), _event(3)])
    observer = harness.worker.observer = RecordingObserver()
    harness.run([0, 1, 2, 3])
    base = 1_700_000_000_000_000
    assert observer.calls == [
        ("sequenced", 2, "acme", [base, base + 2, base + 3]),
        ("sequenced", 2, "globex", [base + 1]),
        ("signed", 2, "acme", 3),  # the full batch, after its events were reported
    ]


def test_bad_input_goes_to_dead_letters_and_processing_continues() -> None:
    unknown_schema = b"\xc3\x01" + bytes(8) + b"x"
    inputs = [_event(0), b"\x00garbage", unknown_schema, _event(3, tenant="bad tenant"),
              _event(4, event_id="e0"), _event(5, event_id=""), b"", b"\xc3" * 70_000]  # fmt: skip
    harness = Harness(inputs)
    harness.run(list(range(8)))
    dead = harness.decoded(DEAD_LETTER_ROLE)
    assert [d["error_kind"] for d in dead] == [
        "undecodable", "unknown_schema", "invalid_event", "event_id_conflict",
        "missing_field", "undecodable", "oversized",
    ]  # fmt: skip
    assert [d["source_offset"] for d in dead] == [1, 2, 3, 4, 5, 6, 7]
    assert dead[0]["original"] == b"\x00garbage"
    assert [r["seq"] for r in harness.decoded(CHAINED)] == [1]


def test_rejections_are_chained_in_the_partitions_rejection_log_and_signed() -> None:
    inputs = [_event(0), b"\x00garbage", _event(2, event_id="e0"), b"",
              _event(4, tenant="authtrail-rejected-2"), _event(5)]  # fmt: skip
    harness = Harness(inputs)
    harness.run(list(range(6)))
    dead, chained = harness.decoded(DEAD_LETTER_ROLE), harness.rejections()
    # The conflict's offset was not consumed by the refused offer: it is chained too.
    assert [c["rejection"]["error_kind"] for c in chained] == [
        "undecodable", "event_id_conflict", "undecodable", "reserved_identity",
    ]  # fmt: skip
    assert [c["rejection"] for c in chained] == dead
    assert {c["chain_tenant_id"] for c in chained} == {"authtrail-rejected-2"}
    assert [(c["seq"], c["source_offset"]) for c in chained] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    previous = bytes(32)
    for record in chained:  # the link is the rejection's own content, chained
        leaf_hash = hashlib.sha256(b"\x00" + rejection_leaf(record["rejection"])).digest()
        assert record["leaf_hash"] == leaf_hash and record["prev_hash"] == previous
        assert record["hash"] == chain_hash("authtrail-rejected-2", record["seq"], previous,
                                            leaf_hash)  # fmt: skip
        previous = record["hash"]
    assert [r["event"]["event_id"] for r in harness.decoded(CHAINED)] == ["e0", "e5"]
    # Batches of 3 close and are signed like any tenant's: the log can be verified.
    checkpoints = {(c["tenant_id"], c["size"]) for c in harness.decoded(CHECKPOINTS)}
    assert ("authtrail-rejected-2", 3) in checkpoints
    keys = {key for role, key, _, _ in harness.published if role == CHAINED}
    assert b"authtrail-rejected-2" in keys


def test_a_chained_rejection_is_its_schemas_own_encoding_of_the_dead_letter() -> None:
    """The worker splices the dead letter's body into the chained rejection: the bytes are
    what the rejection codec writes for the decoded record, the dead letter's included."""
    envelope = codec(EVENT_ENVELOPE).encode({"events": [_event(0), b"\xc3\x01" + bytes(8)]})
    inputs = [b"\x00garbage", b"", envelope, _event(3, event_id=" bad"), "é".encode() * 40]
    harness = Harness(inputs)
    harness.run(list(range(len(inputs))))
    values = [v for r, _, v, _ in harness.published if r == CHAINED and _is_rejection(v)]
    dead = [v for r, _, v, _ in harness.published if r == DEAD_LETTER_ROLE]
    assert len(values) == len(dead) == 4
    for value, letter in zip(values, dead, strict=True):
        assert REJECTIONS.encode(REJECTIONS.decode(value)) == value
        assert REJECTIONS.decode(value)["rejection"] == codec(DEAD_LETTER).decode(letter)


def test_a_rejection_replayed_after_a_restart_is_not_chained_or_dead_lettered_again() -> None:
    inputs = [_event(0), b"\x00garbage", b"\x00junk", _event(3)]
    first = Harness(inputs)
    first.run([0, 1, 2])
    restored = [("authtrail-rejected-2", None,
                 ChainLink(r["seq"], r["prev_hash"], r["leaf_hash"], r["hash"]), r["source_offset"])
                for r in first.rejections()]  # fmt: skip
    restored += [
        (r["event"]["tenant_id"], r["event"]["event_id"],
         ChainLink(r["seq"], r["prev_hash"], r["leaf_hash"], r["hash"]), r["source_offset"])
        for r in first.decoded(CHAINED)
    ]  # fmt: skip
    second = Harness(inputs, restored)
    second.run([1, 2, 3])  # the bad input comes again from an older committed offset
    assert second.decoded(DEAD_LETTER_ROLE) == [] and second.rejections() == []
    assert second.worker.counters.rejected == 0
    assert [(r["seq"], r["source_offset"]) for r in second.decoded(CHAINED)] == [(2, 3)]
    more = Harness([*inputs, b"\x00late"], restored)
    more.run([4])
    (late,) = more.rejections()
    assert late["seq"] == 3 and late["prev_hash"] == first.rejections()[-1]["hash"]


def test_producer_retry_is_recorded_once() -> None:
    harness = Harness([_event(0), _event(0), _event(1)])
    harness.run([0, 1, 2])
    assert [r["event"]["event_id"] for r in harness.decoded(CHAINED)] == ["e0", "e1"]
    assert harness.worker.counters.duplicates == 1


def test_skipped_input_is_read_directly_and_nothing_is_lost() -> None:
    harness = Harness([_event(n) for n in range(6)])
    harness.run([0, 1, 4, 5])  # the consumer skipped offsets 2 and 3
    assert harness.fetched[-1] == (2, 2, 4)
    assert [r["source_offset"] for r in harness.decoded(CHAINED)] == list(range(6))


@pytest.fixture
def quick_rereads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sequencing, "_REREAD_PAUSES", (0.0, 0.0, 0.0))


@pytest.mark.usefixtures("quick_rereads")
def test_a_short_direct_read_is_read_again_until_it_holds_every_skipped_offset() -> None:
    # The broker served offset 5 while the batch holding 3 was not readable yet.
    harness = Harness([_event(n) for n in range(6)])
    harness.run([0, 1])
    harness.fetched, harness.unreadable = [], [{3}, {2, 3}]
    harness.run([5])
    assert harness.fetched == [(2, 2, 5)] * 3
    assert [r["source_offset"] for r in harness.decoded(CHAINED)] == list(range(6))
    assert harness.worker.counters.unread_input == 0


@pytest.mark.usefixtures("quick_rereads")
def test_offsets_no_read_returns_are_counted_and_logged_not_passed_over_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = Harness([_event(n) for n in range(8)])
    harness.run([0, 1])
    harness.fetched, harness.unreadable = [], [{3, 5, 6}] * 4
    with caplog.at_level(logging.ERROR, logger=sequencing.__name__):
        harness.run([7])
    assert harness.fetched == [(2, 2, 7)] * 4  # the first read and one after each pause
    assert [r["source_offset"] for r in harness.decoded(CHAINED)] == [0, 1, 2, 4, 7]
    assert harness.worker.counters.unread_input == 3
    assert "partition 2: offsets 3, 5..6 are in no read of the input topic" in caplog.text


@pytest.mark.usefixtures("quick_rereads")
def test_a_read_from_the_start_that_returns_nothing_before_the_first_delivered_is_no_hole() -> None:
    harness = Harness([_event(n) for n in range(3)])
    harness.unreadable = [{0, 1}]  # the log starts at 2 (retention): nothing to read before it
    harness.run([2])
    assert harness.fetched == [(2, None, 2)]
    assert harness.worker.counters.unread_input == 0


@pytest.mark.parametrize(
    ("read", "expected", "end", "holes"),
    [
        ([2, 3, 4], 2, 5, []),
        ([2, 4], 2, 5, [(3, 3)]),
        ([], 2, 5, [(2, 4)]),
        ([3, 4], 2, 5, [(2, 2)]),
        ([2, 3], 2, 5, [(4, 4)]),
        ([1, 5, 9], None, 10, [(2, 4), (6, 8)]),
        ([], None, 10, []),
    ],
)
def test_holes_are_the_offset_ranges_a_read_lacks(
    read: list[int], expected: int | None, end: int, holes: list[tuple[int, int]]
) -> None:
    records = [InputRecord(0, offset, None, b"") for offset in read]
    assert sequencing._holes(records, expected, end) == holes


def test_restart_skips_replayed_input_and_continues_the_chain() -> None:
    first = Harness([_event(n) for n in range(6)])
    first.run([0, 1, 2, 3])
    restored = [
        (r["event"]["tenant_id"], r["event"]["event_id"],
         ChainLink(r["seq"], r["prev_hash"], r["leaf_hash"], r["hash"]), r["source_offset"])
        for r in first.decoded(CHAINED)
    ]  # fmt: skip
    second = Harness(first.inputs, restored)
    second.run([2, 3, 4, 5])  # input replayed from an older committed offset
    chained = second.decoded(CHAINED)
    assert [(r["seq"], r["source_offset"]) for r in chained] == [(5, 4), (6, 5)]
    assert chained[0]["prev_hash"] == restored[-1][2].hash


def test_clean_shutdown_signs_every_open_batch() -> None:
    harness = Harness([_event(n, tenant="acme" if n % 2 else "globex") for n in range(5)])
    harness.run(list(range(5)))
    assert [c["size"] for c in harness.decoded(CHECKPOINTS)] == [3]  # globex: 0, 2, 4
    asyncio.run(harness.worker.close_open_batches())
    sizes = {(c["tenant_id"], c["size"]) for c in harness.decoded(CHECKPOINTS)}
    assert sizes == {("globex", 3), ("acme", 2)}


def test_the_signing_budget_defers_overdue_batches_oldest_first_and_loses_none() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    tenants = [f"t{n}" for n in range(8)]
    harness = Harness(
        [_event(n, tenant=tenant) for n, tenant in enumerate(tenants)],
        sequencer=lambda: Sequencer(SIGNER, "authtrail.test", batch_size=3, batch_interval=1,
                                    monotonic=clock),
        signing=SigningBudget(2, clock),
    )  # fmt: skip

    offsets = {2: 0, 3: 0}

    def step(partition: int, values: list[bytes]) -> None:
        records = []
        for value in values:
            records.append(InputRecord(partition, offsets[partition], None, value))
            offsets[partition] += 1
        asyncio.run(harness.worker.process(records))

    def signed() -> list[str]:
        return [c["tenant_id"] for c in harness.decoded(CHECKPOINTS)]

    for offset in range(6):  # t0..t2 in partition 2, t3..t5 in 3, opened 0.1 s apart
        now[0] = offset / 10
        step(2 if offset < 3 else 3, [harness.inputs[offset]])
    assert signed() == []
    now[0] = 1.6  # all six overdue; two a second may be signed
    asyncio.run(harness.worker.close_due_batches())
    assert len(signed()) == 2
    asyncio.run(harness.worker.close_due_batches())
    assert len(signed()) == 2  # the budget is spent
    for later in (2.1, 2.6, 3.1, 3.6):  # one more each half second
        now[0] = later
        asyncio.run(harness.worker.close_due_batches())
    # Oldest first within each partition, and the partitions take turns.
    by_partition = [[t for t in signed() if t in group] for group in (tenants[:3], tenants[3:6])]
    assert by_partition == [["t0", "t1", "t2"], ["t3", "t4", "t5"]]
    assert signed()[:3] == ["t0", "t1", "t3"]  # partition 2 went first, then 3's turn
    assert len(signed()) == 6
    # A full batch is not deferred: t7's third event closes its batch at once.
    step(2, [*harness.inputs[6:8], *(_event(10 + n, tenant="t7") for n in range(2))])
    assert signed()[-1] == "t7"
    asyncio.run(harness.worker.close_open_batches())  # shutdown signs everything left
    assert sorted(signed()) == tenants
    assert len(signed()) == len(set(signed()))  # one checkpoint each: no batch split


def test_lockout_decisions_go_back_into_the_stream_and_out_to_enforcement() -> None:
    failures = [
        EVENTS.encode(
            {
                "event_id": f"f{n}", "tenant_id": "acme", "event_type": "LOGIN_FAILED",
                "outcome": "FAILURE", "occurred_at": 1_700_000_000_000_000 + n * 5_000_000,
                "user_name": "alice", "client_ip": "203.0.113.7",
            }
        )
        for n in range(4)
    ]  # fmt: skip
    harness = Harness(failures)
    harness.run([0, 1, 2, 3])
    decisions = [(role, partition) for role, _, _, partition in harness.published
                 if role in ("events", "lockouts")]  # fmt: skip
    assert decisions == [("events", 2), ("lockouts", 2)]
    locked = [EVENTS.decode(v) for r, _, v, _ in harness.published if r == "lockouts"]
    assert locked[0]["event_type"] == "ACCOUNT_LOCKED" and locked[0]["user_name"] == "alice"


# --- lockout decisions are the worker's alone ----------------------------------------------


def _failures(count: int) -> list[bytes]:
    """Failed logins of alice, 5 s apart: the third locks her (POLICIES)."""
    return [
        EVENTS.encode(
            {
                "event_id": f"f{n}", "tenant_id": "acme", "event_type": "LOGIN_FAILED",
                "outcome": "FAILURE", "occurred_at": 1_700_000_000_000_000 + n * 5_000_000,
                "user_name": "alice", "client_ip": "203.0.113.7",
            }
        )
        for n in range(count)
    ]  # fmt: skip


def _predicted_decision_id(tenant_id: str, trigger: str, kind: str) -> str:
    """A decision's id as docs/LOCKOUT.md publishes the rule: anyone can compute it."""
    seed = "\x00".join((tenant_id, trigger, kind)).encode()
    return f"authtrail-lockout:{kind.lower()}:{hashlib.sha256(seed).hexdigest()[:32]}"


def _feed_back_decisions(harness: Harness) -> None:
    """What Kafka does: the decisions published to the events topic come back as input."""
    start = len(harness.inputs)
    harness.inputs += [v for role, _, v, _ in harness.published if role == "events"]
    harness.published = [p for p in harness.published if p[0] != "events"]
    harness.run(list(range(start, len(harness.inputs))))


def test_a_forged_decision_service_event_is_rejected() -> None:
    forged = EVENTS.encode(
        {"event_id": "x1", "tenant_id": "acme", "event_type": "ACCOUNT_LOCKED",
         "outcome": "SUCCESS", "occurred_at": 1_700_000_000_000_000,
         "service": "authtrail-lockout", "user_name": "bob"}
    )  # fmt: skip
    disguised = EVENTS.encode({**EVENTS.decode(forged), "event_id": "x2",
                               "service": "Authtrail-Lockout "})  # fmt: skip
    harness = Harness([forged, disguised, _event(2)])
    harness.run([0, 1, 2])
    dead = harness.decoded(DEAD_LETTER_ROLE)
    assert [(d["error_kind"], d["source_offset"]) for d in dead] == [
        ("reserved_identity", 0), ("reserved_identity", 1),
    ]  # fmt: skip
    assert dead[0]["tenant_id"] == "acme" and "authtrail-lockout" in dead[0]["reason"]
    assert [r["event"]["event_id"] for r in harness.decoded(CHAINED)] == ["e2"]
    assert harness.worker.rejected_by_kind["reserved_identity"] == 2


def test_a_decision_id_sent_ahead_cannot_suppress_the_lockout() -> None:
    locked_id = _predicted_decision_id("acme", "f2", "ACCOUNT_LOCKED")
    # Sent before the brute force, with an innocent service: before the fix it took the
    # id, and the real ACCOUNT_LOCKED was dead-lettered as an event_id_conflict.
    ahead = _event(0, event_id=locked_id)
    harness = Harness([ahead, *_failures(4)])
    harness.run([0, 1, 2, 3, 4])
    assert [d["error_kind"] for d in harness.decoded(DEAD_LETTER_ROLE)] == ["reserved_identity"]
    # The same id again, now with the genuine decision's content copied before the real
    # one comes back: not the worker's to send either.
    genuine = [v for role, _, v, _ in harness.published if role == "events"]
    assert [EVENTS.decode(v)["event_id"] for v in genuine] == [locked_id]
    copied = EVENTS.encode({**EVENTS.decode(genuine[0]), "message": "nothing to see"})
    harness.inputs.append(copied)
    harness.run([5])
    _feed_back_decisions(harness)
    dead = harness.decoded(DEAD_LETTER_ROLE)
    assert [(d["error_kind"], d["source_offset"]) for d in dead] == [
        ("reserved_identity", 0), ("reserved_identity", 5),
    ]  # fmt: skip
    chained = [r["event"] for r in harness.decoded(CHAINED)]
    assert [e["event_id"] for e in chained] == ["f0", "f1", "f2", "f3", locked_id]
    assert chained[-1] == EVENTS.decode(genuine[0])  # the worker's own content
    assert chained[-1]["event_type"] == "ACCOUNT_LOCKED"
    assert chained[-1]["service"] == "authtrail-lockout"


def test_a_decision_published_twice_after_a_restart_is_a_duplicate_not_a_rejection() -> None:
    harness = Harness(_failures(4))
    harness.run([0, 1, 2, 3])
    genuine = [v for role, _, v, _ in harness.published if role == "events"]
    harness.inputs += genuine * 2  # the copy in flight and the one recovery published again
    harness.run([4, 5])
    assert harness.decoded(DEAD_LETTER_ROLE) == []
    assert harness.worker.counters.duplicates == 1
    services = [r["event"]["service"] for r in harness.decoded(CHAINED)]
    assert services.count("authtrail-lockout") == 1


class EchoingHarness(Harness):
    """As Kafka does it: what the worker publishes to the events topic lands at the end of
    its input partition, and the flush acknowledges those offsets. Its sequencers keep
    decision ids beyond a window of 2 ids, as the app's keep them beyond 200 000."""

    def __init__(self, inputs: list[bytes], restored: list[Any] = ()) -> None:
        super().__init__(inputs, restored, sequencer=lambda: Sequencer(
            SIGNER, "authtrail.test", batch_size=3, batch_interval=60, dedup_window=2,
            remember_forever=DECISION_ID_PREFIX))  # fmt: skip
        self.landed: dict[tuple[str, int], tuple[int, int]] = {}
        self._echoed = 0

    async def flush(self) -> None:
        await super().flush()
        for role, _, value, partition in self.published[self._echoed :]:
            if role == "events":
                self.inputs.append(value)
                first, _ = self.landed.get((role, partition), (len(self.inputs) - 1,) * 2)
                self.landed[(role, partition)] = (first, len(self.inputs) - 1)
        self._echoed = len(self.published)

    def take_acknowledged(self) -> dict[tuple[str, int], tuple[int, int]]:
        landed, self.landed = self.landed, {}
        return landed

    def kept_ids(self) -> list[str]:
        return list(self.worker._sequencers[2].tenants["acme"].kept_ids)


def _bob_failures(first_offset: int) -> list[bytes]:
    return [EVENTS.encode({**EVENTS.decode(value), "event_id": f"b{n}", "user_name": "bob",
                           "occurred_at": EVENTS.decode(value)["occurred_at"] + 60_000_000})
            for n, value in enumerate(_failures(4), start=first_offset)]  # fmt: skip


def test_decision_ids_are_kept_until_every_copy_was_read_back() -> None:
    first = EchoingHarness(_failures(4))
    first.run([0, 1, 2, 3])  # locks alice: the decision lands at offset 4
    (alice_locked,) = [v for role, _, v, _ in first.published if role == "events"]
    assert first.inputs[4] == alice_locked and first.kept_ids() == []
    first.run([4])  # read back and chained; this incarnation has not read past it yet
    decision_id = EVENTS.decode(alice_locked)["event_id"]
    assert first.kept_ids() == [decision_id]
    restored = [(r["event"]["tenant_id"], r["event"]["event_id"],
                 ChainLink(r["seq"], r["prev_hash"], r["leaf_hash"], r["hash"]),
                 r["source_offset"]) for r in first.decoded(CHAINED)]  # fmt: skip

    # A restart. The copy a recovery published again comes after 3 other events, far
    # beyond the window of 2 ids: the kept id still tells it is a duplicate.
    inputs = [*first.inputs[:5], _event(5), _event(6), _event(7), alice_locked]
    second = EchoingHarness(inputs, restored)
    second.run([5, 6, 7, 8])
    assert second.decoded(DEAD_LETTER_ROLE) == [] and second.worker.counters.duplicates == 1
    assert second.kept_ids() == [decision_id]  # no decision of its own published yet

    # Its first decision lands at offset 13; once input past it is handled, every copy of
    # anything chained before is behind: the kept ids go, and the window takes new ones.
    second.inputs += _bob_failures(9)
    second.run([9, 10, 11, 12])
    (bob_locked,) = [v for role, _, v, _ in second.published if role == "events"]
    assert second.inputs[13] == bob_locked
    second.run([13])
    assert second.kept_ids() == [decision_id, EVENTS.decode(bob_locked)["event_id"]]
    second.inputs.append(_event(14))
    second.run([14])
    assert second.kept_ids() == [] and second.worker._sequencers[2]._remember_forever == ""
    chained = [r["event"]["event_id"] for r in second.decoded(CHAINED)]
    assert chained.count(decision_id) == 0 and chained[-2:] == [
        EVENTS.decode(bob_locked)["event_id"], "e14"]  # fmt: skip

    # A copy arriving after that point cannot come from a recovery (docs/PIPELINE.md): it
    # is refused as not the worker's own, never chained twice.
    second.inputs.append(alice_locked)
    second.run([15])
    assert [d["error_kind"] for d in second.decoded(DEAD_LETTER_ROLE)] == ["reserved_identity"]
    assert [r["event"]["event_id"] for r in second.decoded(CHAINED)].count(decision_id) == 0


# --- the chained record splices the input's Avro body -----------------------------------


def _older_auth_event_schema() -> dict[str, Any]:
    """AuthEvent as it was before ``message`` was added: data it wrote must still chain."""
    schema = load_schema(AUTH_EVENT)
    schema["fields"] = [field for field in schema["fields"] if field["name"] != "message"]
    return schema


def _full_event(n: int) -> dict[str, Any]:
    """Every optional field set (and some non-ASCII text and attributes)."""
    event: dict[str, Any] = {
        field["name"]: f"{field['name']}-{n}-ü" for field in load_schema(AUTH_EVENT)["fields"]
    }
    event.update(event_id=f"full{n}", tenant_id="acme", event_type="OTHER", outcome="UNKNOWN",
                 occurred_at=1_700_000_000_000_000 + n, received_at=1_700_000_000_000_001 + n,
                 attributes={"a.b": "c", "ä": "😀" * n})  # fmt: skip
    return event


def _reencoded(chained_value: bytes) -> bytes:
    """The chained record encoded the slow way, from its decoded form."""
    chained_codec = codec(CHAINED_RECORD)
    return chained_codec.encode(chained_codec.decode(chained_value))


def test_chained_records_equal_the_normal_encoding_byte_for_byte() -> None:
    minimal = _event(0)
    inputs = [minimal, *(EVENTS.encode(_full_event(n)) for n in range(1, 5))]
    inputs.append(EVENTS.encode({**_full_event(5), "received_at": None, "attributes": {}}))
    harness = Harness(inputs)
    harness.run(list(range(len(inputs))))
    chained = [value for role, _, value, _ in harness.published if role == CHAINED]
    assert len(chained) == len(inputs)
    for value, original in zip(chained, inputs, strict=True):
        assert value == _reencoded(value)
        assert original[10:] in value  # the event's body, spliced in as it was read
    assert [r["event"] for r in harness.decoded(CHAINED)] == [EVENTS.decode(v) for v in inputs]


def test_events_of_other_schema_versions_are_reencoded_in_todays_schema() -> None:
    older_schema = _older_auth_event_schema()
    newer_schema = json.loads((VERSIONS / "auth_event_v2.avsc").read_text())
    events = SingleObjectCodec(load_schema(AUTH_EVENT), [older_schema, newer_schema])
    old_event = {k: v for k, v in _full_event(1).items() if k != "message"}
    new_event = {**_full_event(3), "device_id": "phone-1"}  # a field today's schema lacks
    inputs = [
        SingleObjectCodec(older_schema).encode(old_event),
        _event(2),
        SingleObjectCodec(newer_schema).encode(new_event),
    ]
    assert events.current_body(inputs[0]) is None and events.current_body(inputs[2]) is None
    harness = Harness(inputs, event_codec=events)
    harness.run([0, 1, 2])
    chained = [value for role, _, value, _ in harness.published if role == CHAINED]
    assert [_reencoded(value) for value in chained] == chained
    decoded = harness.decoded(CHAINED)
    assert decoded[0]["event"] == {**old_event, "message": None}  # today's shape, defaults
    assert decoded[0]["event"] == events.decode(inputs[0])
    assert decoded[2]["event"] == events.decode(inputs[2])
    assert "device_id" not in decoded[2]["event"]


# --- publishing: enqueued per record, acknowledged once per batch -------------------------


def test_outputs_are_acknowledged_before_process_returns_and_checkpoints_after_records() -> None:
    harness = Harness([_event(n, tenant="acme" if n % 3 else "globex") for n in range(20)])
    harness.run(list(range(20)))
    assert harness.acknowledged == len(harness.published)
    assert harness.flushes >= 2  # records first, then the checkpoints that cover them
    for index, (role, _, value, _) in enumerate(harness.published):
        if role != CHECKPOINTS:
            continue
        checkpoint = codec(CHECKPOINT).decode(value)
        covered = [
            position
            for position, (other, _, chained, _) in enumerate(harness.published)
            if other == CHAINED
            and codec(CHAINED_RECORD).decode(chained)["event"]["tenant_id"]
            == checkpoint["tenant_id"]
            and codec(CHAINED_RECORD).decode(chained)["seq"] <= checkpoint["size"]
        ]
        assert harness.acknowledged_when_published[index] > max(covered)


def test_each_partition_gets_its_outputs_in_input_order() -> None:
    tenants = ["t0", "t1", "t2", "t3"]
    inputs = [_event(n, tenant=tenants[n % 4]) for n in range(40)]
    harness = Harness(inputs)
    # Two input partitions interleaved in one batch; each partition's offsets ascend.
    records = [InputRecord(n % 2, n // 2, None, inputs[n]) for n in range(40)]
    asyncio.run(harness.worker.process(records))
    for partition in (0, 1):
        chained = [codec(CHAINED_RECORD).decode(value) for role, _, value, p in harness.published
                   if role == CHAINED and p == partition]  # fmt: skip
        assert [r["source_offset"] for r in chained] == list(range(20))
        assert {r["source_partition"] for r in chained} == {partition}
        for tenant in tenants:
            seqs = [r["seq"] for r in chained if r["event"]["tenant_id"] == tenant]
            assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1)) or not seqs


_FAILING_WORKER = """
import asyncio, sys
from tests.unit.test_worker import Harness, _event

class Failing(Harness):
    async def flush(self):
        print(sorted({role for role, *_ in self.published}), flush=True)
        raise RuntimeError("broker said no")

harness = Failing([_event(n) for n in range(7)])
harness.run(list(range(7)))
print("process returned", flush=True)
"""


def test_a_failed_delivery_stops_the_process_before_any_checkpoint() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _FAILING_WORKER], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 70, result.stderr
    # The first flush (the records) failed: nothing after it, no checkpoint, no return.
    assert result.stdout.splitlines() == ["['chained']"]
    assert "publish failed" in result.stderr


def test_the_timer_does_not_queue_behind_a_batch_in_flight() -> None:
    class SlowFlush(Harness):
        release: asyncio.Event

        async def flush(self) -> None:
            await self.release.wait()  # the broker has not acknowledged yet
            await super().flush()

    async def scenario() -> None:
        harness = SlowFlush([_event(n) for n in range(2)])
        harness.release = asyncio.Event()
        records = [InputRecord(2, n, b"acme", harness.inputs[n]) for n in range(2)]
        batch = asyncio.create_task(harness.worker.process(records))
        await asyncio.sleep(0.01)
        assert not batch.done()
        await asyncio.wait_for(harness.worker.close_due_batches(), timeout=1)  # returns
        harness.release.set()
        await batch
        assert harness.acknowledged == len(harness.published) == 2

    asyncio.run(scenario())


def test_a_worker_with_a_new_key_hands_its_idle_logs_over_at_once() -> None:
    # The previous worker (old key) chained two events of acme and one rejection, and
    # signed both logs. The next one (new key, hand-over key old) gets the partition and
    # no input: it recovers at once and hands both logs over (docs/INTEGRITY.md §11).
    new = Signer.parse(generate_key_strings("worker-test-2")[0])
    before = Sequencer(SIGNER, "authtrail.test", batch_size=3, batch_interval=60)
    acme = [before.offer("acme", f"e{n}", canonical_leaf(EVENTS.decode(_event(n))), n).link
            for n in (0, 1)]  # fmt: skip
    rejected = before.chain_rejection("authtrail-rejected-2", b"refused input", 2)
    signed = [before.close_batch("acme"), before.close_batch("authtrail-rejected-2")]
    harness = Harness([])

    def recover(sequencer: Sequencer, partition: int, guard: Any) -> Recovery:
        for checkpoint in signed:
            sequencer.restore_checkpoint(checkpoint.tenant_id, checkpoint.checkpoint,
                                         (SIGNER.verifier_key().label,))  # fmt: skip
        for link, offset in zip(acme, (0, 1), strict=True):
            assert link is not None
            sequencer.restore_record("acme", f"e{offset}", link, offset)
        assert rejected is not None
        sequencer.restore_record("authtrail-rejected-2", None, rejected, 2)
        return Recovery(3, epoch=7)

    harness.worker._recover = recover
    harness.worker._new_sequencer = lambda: Sequencer(
        new, "authtrail.test", batch_size=3, batch_interval=60, handover=SIGNER
    )
    asyncio.run(harness.worker.adopt([2, 5], lambda partition: partition == 2))
    assert harness.worker._sequencers.keys() == {2}  # 5 was revoked meanwhile: left alone
    (event,) = harness.decoded(CHAINED)
    assert event["event"]["event_type_other"] == "AUTHTRAIL_KEY_HANDOVER"
    assert (event["seq"], event["source_partition"], event["source_offset"]) == (3, 2, 2)
    (rejection,) = harness.rejections()
    assert rejection["rejection"]["error_kind"] == "key_handover"
    assert (rejection["seq"], rejection["source_offset"]) == (2, 2)
    checkpoints = harness.decoded(CHECKPOINTS)
    assert [(c["tenant_id"], c["size"]) for c in checkpoints] == [
        ("acme", 3), ("authtrail-rejected-2", 2),
    ]  # fmt: skip
    names = [SIGNER.name, new.name]
    for checkpoint in checkpoints:  # the hand-overs: signed by both keys
        lines = [line for line in checkpoint["note"].splitlines() if line.startswith("\u2014 ")]
        assert sorted(line.split()[1] for line in lines) == sorted(names)
    # Checkpoints only after a flush acknowledged the records they cover.
    first_checkpoint = [role for role, *_ in harness.published].index(CHECKPOINTS)
    assert harness.acknowledged_when_published[first_checkpoint] == 2
    # Handed over: recovering again (a restart) would find nothing to do.
    assert harness.worker._sequencers[2].handovers_due() == []


def test_one_snapshot_a_step_when_several_partitions_fall_due_together() -> None:
    """Each snapshot stops the loop while it is encoded: partitions due at once are taken
    one a step, the most overdue first, so no step stalls for all of them."""
    harness = Harness([_event(n, tenant=f"t{n % 3}") for n in range(40)],
                      snapshotter=Snapshotter(5, SNAPSHOTS))  # fmt: skip

    def snapshots() -> list[int]:
        return [partition for role, _, _, partition in harness.raw if role == SNAPSHOTS_ROLE]

    def step(batches: list[tuple[int, range]]) -> None:
        records = [InputRecord(partition, o, b"acme", harness.inputs[o])
                   for partition, offsets in batches for o in offsets]  # fmt: skip
        asyncio.run(harness.worker.process(records))

    step([(0, range(0, 6)), (1, range(0, 9)), (2, range(0, 7))])  # all three due
    assert snapshots() == [1]
    step([(3, range(0, 1))])
    step([(3, range(1, 2))])
    assert snapshots() == [1, 2, 0]  # none was lost, each in its own step
    step([(3, range(2, 3))])
    assert snapshots() == [1, 2, 0]


def test_a_forked_snapshot_holds_the_state_at_its_position_while_the_worker_goes_on() -> None:
    """Encoded in a child (stream/worker/forked.py): the steps that run meanwhile change
    nothing in it, it is published once done, restoring the state it was taken at, and
    the next partition due is taken then, without waiting for more input."""
    harness = Harness([_event(n, tenant=f"t{n % 3}") for n in range(30)],
                      snapshotter=Snapshotter(5, SNAPSHOTS), snapshots_forked=True)  # fmt: skip
    worker = harness.worker

    def step(*batches: tuple[int, range]) -> list[InputRecord]:
        return [InputRecord(partition, o, b"acme", harness.inputs[o])
                for partition, offsets in batches for o in offsets]  # fmt: skip

    def heads(partition: int) -> dict[str, tuple[int, bytes]]:
        tenants = worker._sequencers[partition].tenants
        return {tenant: (log.head.seq, log.head.hash) for tenant, log in tenants.items()}

    async def scenario() -> list[tuple[int, dict[str, tuple[int, bytes]]]]:
        await worker.process(step((0, range(0, 6)), (1, range(0, 7))))  # both due
        job = worker._snapshot_job  # partition 1's, the most overdue: forked at the step's end
        assert job is not None and not job.done()
        expected = [(1, heads(1)), (0, heads(0))]
        await worker.process(step((1, range(7, 12))))  # the parent goes on meanwhile
        assert worker._snapshot_job is job  # one at a time
        await job
        second = worker._snapshot_job
        assert second is not None and second is not job
        await second
        assert len(heads(1)) == 3 and heads(1) != expected[0][1]
        return expected

    expected = asyncio.run(scenario())
    published = [(p, value) for role, _, value, p in harness.raw if role == SNAPSHOTS_ROLE]
    assert [p for p, _ in published] == [p for p, _ in expected] == [1, 0]
    assert worker.counters.snapshots == 2
    for (_, part), (partition, state) in zip(published, expected, strict=True):
        record = SNAPSHOTS.decode(part)
        restored = Sequencer(SIGNER, "authtrail.test", batch_size=3, batch_interval=60)
        restore_state(join([record["state"]]), restored, Guard(POLICIES))
        assert {t: (log.head.seq, log.head.hash) for t, log in restored.tenants.items()} == state
        assert record["records"] == sum(seq for seq, _ in state.values()) == 6 + partition


def test_a_forked_snapshot_of_a_partition_revoked_meanwhile_is_dropped() -> None:
    harness = Harness([_event(n) for n in range(6)],
                      snapshotter=Snapshotter(5, SNAPSHOTS), snapshots_forked=True)  # fmt: skip

    async def scenario() -> None:
        await harness.worker.process(
            [InputRecord(0, o, b"acme", harness.inputs[o]) for o in range(6)]
        )
        job = harness.worker._snapshot_job
        assert job is not None
        await harness.worker.forget([0])  # rebalanced away while the child encodes
        await job

    asyncio.run(scenario())
    assert [role for role, *_ in harness.raw if role == SNAPSHOTS_ROLE] == []
    assert harness.worker.counters.snapshots == 0


def test_a_snapshot_that_cannot_fork_is_skipped_and_the_worker_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_fork() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_fork)
    harness = Harness([_event(n) for n in range(12)],
                      snapshotter=Snapshotter(5, SNAPSHOTS), snapshots_forked=True)  # fmt: skip
    harness.run(list(range(6)), partition=0)
    assert harness.worker._snapshot_job is None
    assert "snapshot not taken: cannot fork" in caplog.text
    harness.run(list(range(6, 12)), partition=0)  # due again after a full spacing
    assert len(harness.decoded(CHAINED)) == 12
    assert caplog.text.count("snapshot not taken") == 2
    assert [role for role, *_ in harness.raw if role == SNAPSHOTS_ROLE] == []
