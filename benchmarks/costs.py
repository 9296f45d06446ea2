"""What authtrail's own work costs per event, without Kafka or Faust around it.

Times are CPU seconds of the measuring process (single-threaded work), so a busy shared
machine slows the run but not the numbers.

Each function runs in a fresh interpreter (:mod:`benchmarks.isolated`): Ed25519
signatures/s, checkpoint cost per event by batch size, and the integrity core's cost per
event split into its steps (decode, canonical leaf, sequencing, chained-record encode),
and the sink's (decode, row building). Comparing these with the end-to-end CPU per event
shows how much the framework around them (Faust, aiokafka, asyncio) adds.
"""

from __future__ import annotations

import os
import time
from typing import Any

from authtrail.schemas import AUTH_EVENT, CHAINED_RECORD, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.note import Signer
from authtrail.stream.core.sequencer import DEDUP_WINDOW, SEQUENCED, Sequencer
from benchmarks.workload import EventFactory

ORIGIN = "bench.authtrail.local"


def _signer() -> Signer:
    return Signer("bench", os.urandom(32))


def _microseconds(seconds: float, count: int) -> float:
    return round(1e6 * seconds / count, 3) if count else 0.0


def signatures(count: int) -> dict[str, Any]:
    """Ed25519 signs/s and verifies/s, raw and as whole signed checkpoint notes."""
    from authtrail.stream.core.checkpoint import open_checkpoint
    from authtrail.stream.core.note import make_keyring

    signer = _signer()
    message = os.urandom(200)
    started = time.process_time()
    for _ in range(count):
        signature = signer.sign(message)
    raw_sign = time.process_time() - started
    verifier = signer.verifier_key()
    started = time.process_time()
    for _ in range(count):
        verifier.verify(message, signature)
    raw_verify = time.process_time() - started

    sequencer = Sequencer(signer, ORIGIN, batch_size=1, batch_interval=3600)
    notes = []
    started = time.process_time()
    for index in range(count):
        sequencer.offer("tenant-0", f"id-{index}", b"leaf %d" % index, index)
        notes.append(sequencer.close_batch("tenant-0").note)
    checkpoint_sign = time.process_time() - started
    keyring = make_keyring([verifier])
    origin = f"{ORIGIN}/tenant-0"
    started = time.process_time()
    for note in notes:
        open_checkpoint(note, keyring, origin)
    checkpoint_open = time.process_time() - started
    return {
        "ed25519_signs_per_s": round(count / raw_sign, 1),
        "ed25519_verifies_per_s": round(count / raw_verify, 1),
        "checkpoints_closed_and_signed_per_s": round(count / checkpoint_sign, 1),
        "checkpoints_opened_and_verified_per_s": round(count / checkpoint_open, 1),
    }


def batch_sizes(events: int, sizes: list[int]) -> dict[str, Any]:
    """Sequencer µs per event (offer + closing and signing full batches) by batch size."""
    leaves = [canonical_leaf(event) for event in EventFactory(1, seed=13).batch(events)]
    rows = []
    for size in sizes:
        sequencer = Sequencer(_signer(), ORIGIN, batch_size=size, batch_interval=3600)
        checkpoints = 0
        started = time.process_time()
        for offset, leaf in enumerate(leaves):
            sequencer.offer("tenant-0", f"id-{offset}", leaf, offset)
            for tenant in sequencer.full_batches():
                sequencer.close_batch(tenant)
                checkpoints += 1
        seconds = time.process_time() - started
        rows.append(
            {
                "batch_size": size,
                "us_per_event": _microseconds(seconds, events),
                "checkpoints": checkpoints,
                "events_per_s": round(events / seconds, 1),
            }
        )
    return {"events": events, "by_batch_size": rows}


def integrity_core(events: int, tenants: int) -> dict[str, Any]:
    """The worker's per-event work without Kafka/Faust, step by step (µs per event)."""
    event_codec = SingleObjectCodec(load_schema(AUTH_EVENT))
    chained_codec = SingleObjectCodec(load_schema(CHAINED_RECORD))
    values = [event_codec.encode(event) for event in EventFactory(tenants, 17).batch(events)]
    sequencer = Sequencer(_signer(), ORIGIN, batch_size=1000, batch_interval=3600)
    # Each step over all events in one loop: a clock read per step and event would cost
    # more than some steps (process_time is a system call here).
    clock = time.process_time
    started = clock()
    events_decoded = [event_codec.decode(value) for value in values]
    decoded = clock()
    leaves = [canonical_leaf(event) for event in events_decoded]
    hashed = clock()
    links = []
    for offset, (event, leaf) in enumerate(zip(events_decoded, leaves, strict=True)):
        offer = sequencer.offer(event["tenant_id"], event["event_id"], leaf, offset)
        for tenant in sequencer.full_batches():
            sequencer.close_batch(tenant)
        assert offer.outcome == SEQUENCED and offer.link is not None
        links.append(offer.link)
    sequenced = clock()
    outputs = [
        chained_codec.encode(
            {
                "event": event,
                "seq": link.seq,
                "prev_hash": link.prev_hash,
                "hash": link.hash,
                "leaf_hash": link.leaf_hash,
                "source_partition": 0,
                "source_offset": offset,
            }
        )
        for offset, (event, link) in enumerate(zip(events_decoded, links, strict=True))
    ]
    encoded = clock()
    steps = {
        "decode": decoded - started,
        "canonical_leaf": hashed - decoded,
        "sequence": sequenced - hashed,
        "encode_chained": encoded - sequenced,
    }
    total = sum(steps.values())
    result: dict[str, Any] = {
        "events": events,
        "tenants": tenants,
        "us_per_event": {name: _microseconds(value, events) for name, value in steps.items()},
    }
    result["us_per_event"]["total"] = _microseconds(total, events)
    result["ceiling_events_per_s_one_core"] = round(events / total, 1)
    result["sink"] = _sink_core(outputs)
    return result


def _sink_core(values: list[bytes]) -> dict[str, Any]:
    """The sink's per-record work before the insert: decode, row dict, Arrow table."""
    from authtrail.sinks.rows import EVENTS_SCHEMA, chained_row, to_arrow

    codec = SingleObjectCodec(load_schema(CHAINED_RECORD))
    # Warm up: pyarrow's first conversion imports pandas (~0.3 s once per process), which
    # a running sink pays at start, not per row.
    to_arrow([chained_row(codec.decode(values[0]), "bench", 0, 0)], EVENTS_SCHEMA)
    started = time.process_time()
    records = [codec.decode(value) for value in values]
    decoded = time.process_time()
    rows = [chained_row(record, "bench", 0, index) for index, record in enumerate(records)]
    built = time.process_time()
    to_arrow(rows, EVENTS_SCHEMA)
    converted = time.process_time()
    count = len(values)
    steps = {
        "decode": _microseconds(decoded - started, count),
        "row": _microseconds(built - decoded, count),
        "arrow": _microseconds(converted - built, count),
    }
    total = converted - started
    return {
        "us_per_event": {**steps, "total": _microseconds(total, count)},
        "ceiling_events_per_s_one_core": round(count / total, 1) if total else None,
    }


def memory(events: int, tenant_counts: list[int]) -> dict[str, Any]:
    """Sequencer state bytes: per tenant, and per event id remembered for deduplication.

    Measured with tracemalloc over ``events`` offers spread over each tenant count, once
    with the default window (``DEDUP_WINDOW`` ids per partition) and once without one. A
    partition's state then is about ``tenants * per_tenant + remembered_ids * per_id``
    bytes, where ``remembered_ids`` grows until the window is full, whatever the tenants.
    """
    import tracemalloc

    leaves = [canonical_leaf(event) for event in EventFactory(1, seed=19).batch(events)]
    rows = []
    for tenants in tenant_counts:
        names = [f"tenant-{index:05d}" for index in range(tenants)]
        sizes = {}
        for window in (DEDUP_WINDOW, 0):
            sequencer = Sequencer(_signer(), ORIGIN, batch_size=1000, batch_interval=3600,
                                  dedup_window=window)  # fmt: skip
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for offset, leaf in enumerate(leaves):
                # A fresh id string each time: the window keeps it alive, as in the worker.
                event_id = f"{offset:08x}-0000-4000-8000-{offset:012x}"
                sequencer.offer(names[offset % tenants], event_id, leaf, offset)
            sizes[window] = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
        remembered = min(events, DEDUP_WINDOW)
        rows.append(
            {
                "tenants": tenants,
                "bytes_per_tenant": round(sizes[0] / tenants),
                "bytes_per_remembered_id": round((sizes[DEDUP_WINDOW] - sizes[0]) / remembered),
            }
        )
    return {"events": events, "by_tenants": rows}
