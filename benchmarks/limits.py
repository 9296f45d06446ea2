"""Physical limits of this machine, for context: what the pipeline's parts can do at best.

Each function runs in a fresh interpreter (:mod:`benchmarks.isolated`) and returns plain
numbers: raw SHA-256 hashes/s, Avro encodes and decodes/s, ClickHouse (chdb) insert
rows/s, the Kafka client's raw produce and consume messages/s on the local broker, and
what a Faust agent that does nothing costs per message (:mod:`benchmarks.faust_floor`), and
per record with the records in runs, as the worker consumes them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.procs import json_result, start_python
from benchmarks.workload import EventFactory


def _cpu() -> float:
    """CPU seconds of this process: single-threaded costs stay right on a busy machine,
    where wall time would also count the time other processes held the core."""
    return time.process_time()


def _per_second(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def sha256(count: int) -> dict[str, Any]:
    """hashlib SHA-256 digests/s for a Merkle node (65 B), a 300 B input and a leaf (~600 B)."""
    results: dict[str, Any] = {}
    for label, size in (("node_65B", 65), ("input_300B", 300), ("leaf_600B", 600)):
        data = os.urandom(size)
        digest = hashlib.sha256
        started = _cpu()
        for _ in range(count):
            digest(data).digest()
        results[label] = _per_second(count, _cpu() - started)
    return {"hashes_per_s": results}


def avro(count: int) -> dict[str, Any]:
    """Avro encodes/decodes per second of an auth event: raw fastavro and the project codec."""
    from fastavro import parse_schema, schemaless_reader, schemaless_writer

    from authtrail.schemas import AUTH_EVENT, CHAINED_RECORD, load_schema
    from authtrail.schemas.codec import SingleObjectCodec

    events = EventFactory(100, seed=3).batch(count)
    schema = load_schema(AUTH_EVENT)
    _drop_logical_types(schema)
    parsed = parse_schema(schema)
    started = _cpu()
    bodies = []
    for event in events:
        buffer = io.BytesIO()
        schemaless_writer(buffer, parsed, event)
        bodies.append(buffer.getvalue())
    raw_encode = _cpu() - started
    started = _cpu()
    for body in bodies:
        schemaless_reader(io.BytesIO(body), parsed, None)
    raw_decode = _cpu() - started

    codec = SingleObjectCodec(load_schema(AUTH_EVENT))
    started = _cpu()
    framed = [codec.encode(event) for event in events]
    codec_encode = _cpu() - started
    started = _cpu()
    decoded = [codec.decode(value) for value in framed]
    codec_decode = _cpu() - started

    chained_codec = SingleObjectCodec(load_schema(CHAINED_RECORD))
    hashes = os.urandom(32)
    records = [
        {
            "event": event,
            "seq": index + 1,
            "prev_hash": hashes,
            "hash": hashes,
            "leaf_hash": hashes,
            "source_partition": 0,
            "source_offset": index,
        }
        for index, event in enumerate(decoded)
    ]
    started = _cpu()
    chained = [chained_codec.encode(record) for record in records]
    chained_encode = _cpu() - started
    started = _cpu()
    for value in chained:
        chained_codec.decode(value)
    chained_decode = _cpu() - started
    return {
        "event_bytes_mean": round(sum(map(len, framed)) / count, 1),
        "chained_bytes_mean": round(sum(map(len, chained)) / count, 1),
        "fastavro_encodes_per_s": _per_second(count, raw_encode),
        "fastavro_decodes_per_s": _per_second(count, raw_decode),
        "codec_encodes_per_s": _per_second(count, codec_encode),
        "codec_decodes_per_s": _per_second(count, codec_decode),
        "chained_encodes_per_s": _per_second(count, chained_encode),
        "chained_decodes_per_s": _per_second(count, chained_decode),
    }


def _drop_logical_types(node: Any) -> None:
    """fastavro must see integer microseconds, as the project codec arranges."""
    if isinstance(node, dict):
        node.pop("logicalType", None)
        for value in node.values():
            _drop_logical_types(value)
    elif isinstance(node, list):
        for value in node:
            _drop_logical_types(value)


def clickhouse_insert(rows: int, batch_rows: int, directory: str) -> dict[str, Any]:
    """chdb insert rows/s of ``events`` rows in Arrow batches, and Arrow building cost/row."""
    from authtrail.sinks.embedded import EmbeddedBackend
    from authtrail.sinks.rows import EVENTS_SCHEMA, chained_row, to_arrow
    from authtrail.sinks.tables import create_statements

    hashes = os.urandom(32)
    factory = EventFactory(100, seed=5)
    template_rows = [
        chained_row(
            {
                "event": event,
                "seq": index + 1,
                "prev_hash": hashes,
                "hash": hashes,
                "leaf_hash": hashes,
            },
            "bench",
            0,
            index,
        )
        for index, event in enumerate(factory.batch(batch_rows))
    ]
    started = _cpu()
    table = to_arrow(template_rows, EVENTS_SCHEMA)
    arrow_seconds = _cpu() - started
    insert_seconds = 0.0
    inserted = 0
    offset_column = table.schema.get_field_index("kafka_offset")
    with EmbeddedBackend(Path(directory) / "clickhouse") as backend:
        for statement in create_statements():
            backend.command(statement)
        while inserted < rows:
            # Distinct offsets per batch: the table deduplicates a repeated identical block.
            offsets = pa.array(range(inserted, inserted + table.num_rows), pa.uint64())
            table = table.set_column(offset_column, "kafka_offset", offsets)
            started = time.perf_counter()
            backend.insert_arrow("events", table)
            insert_seconds += time.perf_counter() - started
            inserted += table.num_rows
        stored = int(backend.query_arrow("SELECT count() FROM events").column(0)[0].as_py())
    return {
        "rows": inserted,
        "batch_rows": batch_rows,
        "stored": stored,
        "insert_rows_per_s": _per_second(inserted, insert_seconds),
        "arrow_build_rows_per_s": _per_second(len(template_rows), arrow_seconds),
    }


def kafka(count: int, directory: str) -> dict[str, Any]:
    """Raw confluent-kafka produce and consume messages/s, and the SDK's send cost, on tansu."""
    from confluent_kafka import Consumer, Producer

    from authtrail.broker import LocalBroker
    from authtrail.schemas import AUTH_EVENT, load_schema
    from authtrail.schemas.codec import SingleObjectCodec
    from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG
    from authtrail.topics import TopicSpec, ensure_topics

    events = EventFactory(100, seed=11).batch(count)
    codec = SingleObjectCodec(load_schema(AUTH_EVENT))
    values = [(event["tenant_id"].encode(), codec.encode(event)) for event in events]
    with LocalBroker(log_dir=directory) as broker:
        servers = broker.bootstrap_servers
        ensure_topics(servers, [TopicSpec(name, 4) for name in ("raw", "sdk-default", "sdk-none")])
        producer = Producer(
            {
                "bootstrap.servers": servers,
                "linger.ms": 20,
                "batch.num.messages": 10_000,
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": 2_000_000,
            }
        )
        started, cpu = time.perf_counter(), time.process_time()
        for key, value in values:
            producer.produce("raw", value, key)
        producer.flush(120)
        produce = (time.perf_counter() - started, time.process_time() - cpu)

        consumer = Consumer(
            {
                "bootstrap.servers": servers,
                "group.id": "raw-bench",
                "auto.offset.reset": "earliest",
                **SHORT_CONSUMER_CONFIG,
            }
        )
        consumer.subscribe(["raw"])
        received, first = 0, None
        deadline = time.monotonic() + 120
        while received < count and time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.5)
            if batch and first is None:
                first = (time.perf_counter(), time.process_time())
            received += sum(1 for message in batch if message.error() is None)
        consume = (
            (time.perf_counter() - first[0], time.process_time() - first[1]) if first else (0, 0)
        )
        consumer.close()
        loops = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])
        faust_floor = {
            loop + ("+runs" if runs else ""): _faust_floor(
                servers, "raw", count, loop, runs, Path(directory)
            )
            for loop in loops
            for runs in (False, True)
            if not runs or loop == loops[-1]  # runs: on the worker's loop
        }

        sdk = {
            compression: _sdk_send(servers, compression, events)
            for compression in (None, "none")  # None: the SDK's own choice
        }
    default = sdk[None]
    return {
        "messages": count,
        "message_bytes_mean": round(sum(len(v) for _, v in values) / count, 1),
        "raw_produce_per_s": _per_second(count, produce[0]),
        "raw_produce_per_cpu_s": _per_second(count, produce[1]),
        "raw_consume_per_s": _per_second(received, consume[0]),
        "raw_consume_per_cpu_s": _per_second(received, consume[1]),
        "consumed": received,
        "faust_floor": faust_floor,
        "sdk": default,
        "sdk_uncompressed": sdk["none"],
    }


def _faust_floor(
    servers: str, topic: str, count: int, loop: str, runs: bool, directory: Path
) -> dict[str, Any]:
    """Faust's own CPU per message on ``loop`` (:mod:`benchmarks.faust_floor`), in a child
    process: a Faust worker owns its process's event loop. ``runs``: per record, the
    records in runs as the worker consumes them."""
    name = f"faust-floor-{loop}{'-runs' if runs else ''}"
    out, log = directory / f"{name}.json", directory / f"{name}.log"
    arguments = ["-m", "benchmarks.faust_floor", "--bootstrap-servers", servers, "--topic",
                 topic, "--count", str(count), "--loop", loop, "--out", str(out),
                 *(["--runs"] if runs else [])]  # fmt: skip
    return json_result(start_python(arguments, log), out, log, max(120.0, count / 1000), loop)


def _sdk_send(
    servers: str, compression: str | None, events: list[dict[str, Any]]
) -> dict[str, Any]:
    """AuditProducer.send of ``events`` (validate, encode, queue), then delivery to the broker."""
    from authtrail.producers.sdk import AuditProducer

    topic = f"sdk-{compression or 'default'}"
    config = {"queue.buffering.max.messages": 2_000_000}
    # Bare messages: the SDK's own limit per event, on a topic created on first use.
    producer = AuditProducer(
        servers, topic, config=config, compression=compression, envelope_bytes=0
    )
    started, cpu = time.perf_counter(), time.process_time()
    for event in events:
        producer.send(event)
    send = (time.perf_counter() - started, time.process_time() - cpu)
    producer.close(120)
    delivered = (time.perf_counter() - started, time.process_time() - cpu)
    count = len(events)
    return {
        "compression": producer.compression,
        "send_per_s": _per_second(count, send[0]),
        "send_per_cpu_s": _per_second(count, send[1]),
        "delivered_per_s": _per_second(producer.acknowledged, delivered[0]),
        "delivered_per_cpu_s": _per_second(producer.acknowledged, delivered[1]),
        "acknowledged": producer.acknowledged,
    }
