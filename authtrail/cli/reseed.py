"""Give a fresh in-memory broker the log it lost, from the embedded store.

The local broker keeps messages in memory only. When ``authtrail up`` starts again on a
data directory whose store already holds chains, the sequencer would find empty output
topics and start every chain again at seq 1. Before the worker starts, this republishes
the stored chained records and checkpoints (in seq order, keyed by tenant, so to the
tenant's partition) so recovery continues every chain where it ended. Their source
offsets are set to -1: they came from the previous broker's input topic, whose offsets
mean nothing to the new one. The sink recognises them as already stored by (tenant, seq).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from confluent_kafka import Producer

from authtrail.errors import ConfigurationError
from authtrail.schemas import CHAINED_RECORD, CHECKPOINT, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.settings import Settings
from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.tables import CHECKPOINTS_TABLE, EVENTS_TABLE, event_columns

_CHECKPOINT_FIELDS = (
    "tenant_id", "size", "note", "root", "batch_first_seq", "batch_last_seq", "batch_root",
    "chain_head", "prev_digest",
)  # fmt: skip


def _select_events() -> str:
    columns = []
    for column in event_columns():
        name = f"`{column.name}`"
        columns.append(f"toUnixTimestamp64Micro({name}) AS {name}" if column.kind == "t" else name)
    columns += ["seq", "prev_hash", "hash", "leaf_hash"]
    return f"SELECT {', '.join(columns)} FROM {EVENTS_TABLE} ORDER BY tenant_id, seq"


def _chained_records(backend: ClickHouseBackend) -> Iterator[dict[str, Any]]:
    names = [column.name for column in event_columns()]
    for row in backend.query_arrow(_select_events()).to_pylist():
        event = {name: row[name] for name in names}
        event["attributes"] = dict(row["attributes"] or [])
        yield {
            "event": event,
            "seq": row["seq"],
            "prev_hash": row["prev_hash"],
            "hash": row["hash"],
            "leaf_hash": row["leaf_hash"],
            "source_partition": -1,
            "source_offset": -1,
            "epoch": 0,  # precedes the first claim of the new broker's partitions
        }


def _checkpoints(backend: ClickHouseBackend) -> Iterator[dict[str, Any]]:
    sql = (
        f"SELECT {', '.join(_CHECKPOINT_FIELDS)}, toUnixTimestamp64Micro(time_micros) AS "
        f"time_micros FROM {CHECKPOINTS_TABLE} ORDER BY tenant_id, size"
    )
    yield from backend.query_arrow(sql).to_pylist()


def stored_records(backend: ClickHouseBackend) -> int:
    """How many chained records the store holds."""
    return int(backend.query_arrow(f"SELECT count() FROM {EVENTS_TABLE}").column(0)[0].as_py())


def reseed(backend: ClickHouseBackend, settings: Settings, bootstrap_servers: str) -> int:
    """Republish the stored log to the output topics; return the number of records.

    Requires empty output topics (a fresh broker). Raises :class:`ConfigurationError` if
    the broker does not acknowledge everything.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",  # the producer SDK's choice: same partitions
        }
    )
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    chained_codec = SingleObjectCodec(load_schema(CHAINED_RECORD))
    count = 0
    for record in _chained_records(backend):
        key = record["event"]["tenant_id"].encode()
        producer.produce(
            settings.chained_topic, chained_codec.encode(record), key, on_delivery=delivered
        )
        producer.poll(0)
        count += 1
    checkpoint_codec = SingleObjectCodec(load_schema(CHECKPOINT))
    for checkpoint in _checkpoints(backend):
        key = checkpoint["tenant_id"].encode()
        value = checkpoint_codec.encode({**checkpoint, "epoch": 0})
        producer.produce(settings.checkpoints_topic, value, key, on_delivery=delivered)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise ConfigurationError(
            f"reseeding the broker failed: {remaining} unacknowledged, errors: {failures[:3]}"
        )
    return count
