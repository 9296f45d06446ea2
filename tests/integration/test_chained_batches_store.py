"""The sink stores chained batches through ClickHouse's Avro input, without decoding them:
the same rows as the decoded path, each record once, on the real broker and the embedded
engine.

Batches are made by the worker's own builder over records the real sequencer linked, and
written to Kafka by hand (no Faust start-up): a batch, the same records replayed with
more (partly stored), an older worker's bare record, and a batch of the next month.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from authtrail.errors import FormatError, StoreError
from authtrail.keys import load_signer
from authtrail.schemas import AUTH_EVENT, CHAINED_BATCH, CHAINED_RECORD, load_schema
from authtrail.settings import Settings
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.lost_inserts import count_stored, insert_until_stored, key_ranges
from authtrail.sinks.rows import EVENTS_SCHEMA, REJECTED_SCHEMA, chained_row, rejected_row, to_arrow
from authtrail.sinks.service import build_sink
from authtrail.sinks.sink import Sink
from authtrail.sinks.tables import create_statements, leaf_hash_sql
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG, codec
from authtrail.stream.worker.chained_batch import BatchBuilder
from tests.integration.test_publication import TENANTS, Worker, broker, publication_settings

__all__ = ["broker"]  # the module-scoped broker fixture

pytestmark = pytest.mark.integration

JANUARY = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
FEBRUARY = JANUARY + 31 * 86_400_000_000
RECORDS, BATCHES = codec(CHAINED_RECORD), codec(CHAINED_BATCH)


def _records(settings: Settings) -> list[dict[str, Any]]:
    """Chained records of acme (10) and globex (3), linked by the real sequencer; the
    events carry every kind of field (nulls, a map, non-ASCII text)."""
    sequencer = Sequencer(load_signer(settings.signing_key_path), settings.log_origin,
                          batch_size=100, batch_interval=3600)  # fmt: skip
    records = []
    plan = [("acme", n) for n in range(1, 10)] + [("globex", n) for n in range(1, 4)]
    plan.append(("acme", 10))
    for offset, (tenant, n) in enumerate(plan):
        event = {field["name"]: None for field in load_schema(AUTH_EVENT)["fields"]}
        event |= {
            "event_id": f"{tenant}-{n}", "tenant_id": tenant, "event_type": "LOGIN_FAILED",
            "outcome": "FAILURE", "occurred_at": (FEBRUARY if n == 10 else JANUARY) + offset,
            "received_at": JANUARY + 5 if n % 2 else None, "user_name": f"jöe{n}",
            "client_ip": "203.0.113.7", "attributes": {"k": "v", "ü": str(n)} if n % 3 else {},
        }  # fmt: skip
        link = sequencer.offer(tenant, event["event_id"], canonical_leaf(event), offset).link
        assert link is not None
        records.append({"event": event, "seq": link.seq, "prev_hash": link.prev_hash,
                        "hash": link.hash, "leaf_hash": link.leaf_hash, "source_partition": 0,
                        "source_offset": offset, "epoch": 0, "source_index": None})  # fmt: skip
    return records


def _batch(records: list[dict[str, Any]]) -> bytes:
    builder = BatchBuilder(BATCHES, RECORDS.reader_fingerprint)
    for record in records:
        event = record["event"]
        assert builder.add(epoch=0, tenant_id=event["tenant_id"], seq=record["seq"],
                           occurred_at=event["occurred_at"],
                           body=RECORDS.encode_body(record)) is None  # fmt: skip
    value = builder.take()
    assert value is not None
    return value


def _rows(backend: EmbeddedBackend) -> list[dict[str, Any]]:
    return backend.query_arrow(
        "SELECT * EXCEPT (stored_at, kafka_cluster) FROM events ORDER BY tenant_id, seq"
    ).to_pylist()


def test_batches_are_stored_natively_once_each_with_the_decoded_paths_rows(
    broker: Any, tmp_path: Path
) -> None:
    settings = publication_settings(broker, tmp_path)
    records = _records(settings)
    acme = [r for r in records if r["event"]["tenant_id"] == "acme"]
    globex = [r for r in records if r["event"]["tenant_id"] == "globex"]
    messages = [
        _batch(acme[:5] + globex),  # offset 0: acme 1-5, globex 1-3
        _batch(acme[3:8] + globex),  # offset 1: replayed, partly stored: acme 6-8 are new
        RECORDS.encode(acme[8]),  # offset 2: an older worker's bare record, acme 9
        _batch(acme[9:]),  # offset 3: acme 10, in February
    ]
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for value in messages:
        producer.produce(settings.chained_topic, value, None, 0)
    assert producer.flush(10) == 0

    with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
        sink = build_sink(settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
        stop = threading.Event()
        thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while sink.counters.stored_records < len(records) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        thread.join(20)
        assert not thread.is_alive()
        stored = _rows(backend)
        mismatched = backend.query_arrow(
            f"SELECT count() AS n FROM events WHERE leaf_hash != {leaf_hash_sql()}"
        ).to_pylist()
        partitions = backend.query_arrow(
            "SELECT DISTINCT partition FROM system.parts WHERE table = 'events' AND active "
            "ORDER BY partition"
        ).to_pylist()

    assert sink.counters.stored_records == len(records) == 13
    assert sink.counters.skipped_duplicates == 2 + 3  # acme 4-5 and globex 1-3, replayed
    assert [(row["tenant_id"], row["seq"]) for row in stored] == [
        *(("acme", n) for n in range(1, 11)), *(("globex", n) for n in range(1, 4)),
    ]  # fmt: skip
    offsets = {1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 1, 7: 1, 8: 1, 9: 2, 10: 3}
    assert [row["kafka_offset"] for row in stored[:10]] == [offsets[n] for n in range(1, 11)]
    assert mismatched == [{"n": 0}]  # the leaf verify recomputes is the one stored
    assert [row["partition"] for row in partitions] == ["202601", "202602"]

    # The reference: the same records decoded and inserted through Arrow, as before.
    with EmbeddedBackend(tmp_path / "reference") as reference:
        for statement in create_statements():
            reference.command(statement)
        offset_of = {(r["event"]["tenant_id"], r["seq"]): offsets.get(r["seq"], 0)
                     for r in records}  # fmt: skip
        offset_of.update({("globex", n): 0 for n in range(1, 4)})
        rows = [chained_row(r, "reference", 0, offset_of[(r["event"]["tenant_id"], r["seq"])])
                for r in records]  # fmt: skip
        reference.insert_arrow("events", to_arrow(rows, EVENTS_SCHEMA))
        assert _rows(reference) == stored


def test_a_batch_holding_a_record_that_is_not_one_row_stops_the_sink_naming_it(
    broker: Any, tmp_path: Path
) -> None:
    """A body with a byte too many (no worker writes one) is never stored as something
    else: the sink stops, naming the batch's partition and offset, and stores none of it."""
    settings = dataclasses.replace(publication_settings(broker, tmp_path), publication_dir=None)
    records = _records(settings)
    builder = BatchBuilder(BATCHES, RECORDS.reader_fingerprint)
    for record in records[3:6]:
        event = record["event"]
        extra = b"\x00" if record is records[4] else b""
        assert builder.add(epoch=0, tenant_id=event["tenant_id"], seq=record["seq"],
                           occurred_at=event["occurred_at"],
                           body=RECORDS.encode_body(record) + extra) is None  # fmt: skip
    damaged = builder.take()
    assert damaged is not None
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for value in (_batch(records[:3]), damaged):
        producer.produce(settings.chained_topic, value, None, 0)
    assert producer.flush(10) == 0

    failures: list[BaseException] = []

    def run(sink: Sink, stop: threading.Event) -> None:
        try:
            sink.run(stop)
        except BaseException as exc:
            failures.append(exc)

    with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
        sink = build_sink(settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
        stop = threading.Event()
        thread = threading.Thread(target=run, args=(sink, stop), daemon=True)
        thread.start()
        thread.join(30)
        stop.set()
        assert not thread.is_alive()
        stored = [row["seq"] for row in _rows(backend)]

    assert len(failures) == 1 and isinstance(failures[0], FormatError)
    assert "chained batch at partition 0 offset 1" in str(failures[0])
    assert "row 1: 1 bytes left" in str(failures[0])
    assert stored in ([], [1, 2, 3])  # the good batch, if it was flushed on its own


def _store_all(settings: Settings, records: int, checkpoints: int) -> Sink:
    """Run a sink (a new process's: its own backend on the store) until it stored that many
    records and checkpoints, then stop it."""
    with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
        sink = build_sink(settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
        stop = threading.Event()
        thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        counters = sink.counters
        while time.monotonic() < deadline and (
            counters.stored_records < records or counters.stored_checkpoints < checkpoints
        ):
            time.sleep(0.1)
        stop.set()
        thread.join(20)
        assert not thread.is_alive()
    return sink


def test_rows_lost_after_their_insert_was_recorded_are_inserted_again(
    broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sink in a new process stores records and checkpoints whose earlier inserts the
    engine recorded (their dedup tokens, derived from the same Kafka positions) but whose
    rows are gone, as after a kill between the two: the engine drops the inserts as
    duplicates, and the sink must see that the rows are missing and insert them again."""
    settings = dataclasses.replace(publication_settings(broker, tmp_path), publication_dir=None)
    checkpoints = Worker(settings).write(events_per_tenant=14)  # sizes 7 and 14 of 3 tenants
    records = 14 * len(TENANTS)
    _store_all(settings, records, checkpoints)
    with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
        expected = _rows(backend)
        assert len(expected) == records
        # The rows go; the engine's deduplication log keeps the inserts' tokens.
        for table in ("events", "checkpoints"):
            backend.command(f"ALTER TABLE {table} DELETE WHERE 1", {"mutations_sync": 2})

    with caplog.at_level(logging.WARNING, logger="sinks"):
        again = _store_all(settings, records, checkpoints)  # the same inserts, same tokens
    with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
        stored = _rows(backend)
        sizes = backend.query_arrow(
            "SELECT tenant_id, size FROM checkpoints ORDER BY tenant_id, size"
        ).to_pylist()
    assert again.counters.stored_records == records
    assert [(r["tenant_id"], r["seq"]) for r in stored] == [
        (r["tenant_id"], r["seq"]) for r in expected
    ]
    assert [(r["tenant_id"], r["size"]) for r in sizes] == [
        (tenant_id, size) for tenant_id in sorted(TENANTS) for size in (7, 14)
    ]
    dropped = [r.getMessage() for r in caplog.records if "dropped the rest" in r.getMessage()]
    assert any("into events" in message for message in dropped), caplog.text
    assert any("into checkpoints" in message for message in dropped), caplog.text


def test_records_written_after_the_sink_took_the_store_are_stored_without_a_count(
    broker: Any, tmp_path: Path
) -> None:
    """On the embedded store (no other process can write to it) the sink counts an
    insert's rows only where an earlier process may have recorded the insert's token:
    records already in Kafka when it was assigned their partition. Records written
    afterwards are inserted without a count; once an insert has failed, every insert is
    counted again. Every record is stored once either way."""
    settings = dataclasses.replace(publication_settings(broker, tmp_path), publication_dir=None)
    worker = Worker(settings)
    checkpoints = worker.write(events_per_tenant=7)
    with EmbeddedBackend(settings.data_dir / "clickhouse") as backend:
        sink = build_sink(settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
        stop = threading.Event()
        thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
        thread.start()
        counters = sink.counters

        def wait_for(records: int, checkpoints: int) -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (
                counters.stored_records < records or counters.stored_checkpoints < checkpoints
            ):
                time.sleep(0.05)
            assert (counters.stored_records, counters.stored_checkpoints) == (
                records, checkpoints)  # fmt: skip

        try:
            wait_for(7 * len(TENANTS), checkpoints)
            assert counters.counted_inserts >= 2  # events and checkpoints: written before
            assert counters.uncounted_inserts == 0
            counted = counters.counted_inserts

            checkpoints += worker.write(events_per_tenant=7)
            wait_for(14 * len(TENANTS), checkpoints)
            assert counters.uncounted_inserts >= 2  # written after the assignment
            assert counters.counted_inserts == counted

            failed: list[str] = []
            insert_data = backend.insert_data

            def fail_once(*args: Any, **kwargs: Any) -> None:
                if not failed:
                    failed.append(kwargs["dedup_token"])
                    raise StoreError("the disk is full (injected)")
                insert_data(*args, **kwargs)

            backend.insert_data = fail_once  # type: ignore[method-assign]
            uncounted = counters.uncounted_inserts
            checkpoints += worker.write(events_per_tenant=7)
            wait_for(21 * len(TENANTS), checkpoints)
            assert failed, "no insert of records went through insert_data"
            assert counters.counted_inserts >= counted + 2  # the retry, and the checkpoints
            assert counters.uncounted_inserts == uncounted
        finally:
            stop.set()
            thread.join(20)
        assert not thread.is_alive()
        stored = _rows(backend)
    assert [(r["tenant_id"], r["seq"]) for r in stored] == [
        (tenant, seq) for tenant in sorted(TENANTS) for seq in range(1, 22)
    ]


def test_lost_rejections_are_counted_in_their_month_and_inserted_again(tmp_path: Path) -> None:
    """``rejected`` (ordered by kind and time, not by chain) is counted by its chain keys
    within the insert's month; its lost rows are inserted again, others not counted."""
    rejected_at = datetime(2026, 1, 31, 23, 59, tzinfo=UTC)
    rows = [
        rejected_row(
            {
                "rejection": {
                    "original": b"junk",
                    "original_key": None,
                    "reason": "bad magic",
                    "error_kind": "decode",
                    "source_topic": "events",
                    "source_partition": 0,
                    "source_offset": seq,
                    "source_timestamp": None,
                    "tenant_id": None,
                    "rejected_at": rejected_at,
                },
                "chain_tenant_id": "authtrail-rejected-0",
                "seq": seq,
                "prev_hash": bytes(32),
                "hash": bytes(32),
                "leaf_hash": bytes(32),
                "epoch": 0,
            },
            "c1",
            0,
            seq,
        )
        for seq in (3, 4, 5)
    ]
    ranges = key_ranges(("authtrail-rejected-0", seq) for seq in (3, 4, 5))
    with EmbeddedBackend(tmp_path / "clickhouse") as backend:
        for statement in create_statements():
            backend.command(statement)

        def insert(*, dedup_token: str) -> None:
            backend.insert_arrow(
                "rejected", to_arrow(rows, REJECTED_SCHEMA), dedup_token=dedup_token
            )

        def count() -> int:
            return count_stored(backend, "rejected", 202601, ranges)

        assert insert_until_stored(insert, count, token="r", sent=3, what="rejections") == 0
        assert count_stored(backend, "rejected", 202602, ranges) == 0  # another month
        assert count_stored(backend, "rejected", 202601, {"authtrail-rejected-0": (6, 9)}) == 0
        backend.command("ALTER TABLE rejected DELETE WHERE 1", {"mutations_sync": 2})
        assert insert_until_stored(insert, count, token="r", sent=3, what="rejections") == 1
        assert count() == 3
        assert insert_until_stored(insert, count, token="r", sent=3, what="rejections") == 0
        assert count() == 3  # a retry of a stored insert still adds nothing


def test_an_insert_of_many_tenants_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One flush may hold rows of 10 000 tenants (their checkpoints, say): the count of
    its keys must not become one query over ClickHouse's max_query_size, which made the
    sink retry that flush forever."""
    tenants = 5_000
    rows = [
        rejected_row(
            {
                "rejection": {
                    "original": b"junk",
                    "original_key": None,
                    "reason": "bad magic",
                    "error_kind": "decode",
                    "source_topic": "events",
                    "source_partition": n,
                    "source_offset": 1,
                    "source_timestamp": None,
                    "tenant_id": None,
                    "rejected_at": datetime(2026, 1, 2, tzinfo=UTC),
                },
                "chain_tenant_id": f"authtrail-rejected-{n}",
                "seq": 1,
                "prev_hash": bytes(32),
                "hash": bytes(32),
                "leaf_hash": bytes(32),
                "epoch": 0,
            },
            "c1",
            n,
            1,
        )
        for n in range(tenants)
    ]
    ranges = key_ranges((f"authtrail-rejected-{n}", 1) for n in range(tenants))
    with EmbeddedBackend(tmp_path / "clickhouse") as backend:
        for statement in create_statements():
            backend.command(statement)
        backend.insert_arrow("rejected", to_arrow(rows, REJECTED_SCHEMA))
        assert count_stored(backend, "rejected", 202601, ranges) == tenants
        # The limit is real: one query naming every tenant is refused.
        monkeypatch.setattr("authtrail.sinks.lost_inserts.TENANTS_PER_COUNT", tenants)
        with pytest.raises(Exception, match=r"(?i)max query size"):
            count_stored(backend, "rejected", 202601, ranges)
