"""Native blocks (sinks/native_rows.py) store in ClickHouse exactly the rows its own Avro
reader stores from the same bodies: the same records inserted both ways into two tables of
the ``events`` DDL read back equal, column by column.

Records: generated traffic, real identity-provider events (Keycloak, Okta, Auth0 samples
in ``../shared/realdata``, mapped by the producers' mappers; skipped where absent), edge
cases (every nullable field null, long and empty strings, 300 attributes, a string that is
not UTF-8) and bodies of the older writer schemas the sink still accepts.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from authtrail.errors import FormatError
from authtrail.producers.idp_mapping import map_auth0_event, map_keycloak_event, map_okta_event
from authtrail.producers.traffic import TrafficConfig, generate_events
from authtrail.schemas import CHAINED_RECORD, load_schema, previous_versions
from authtrail.sinks.avro_rows import (
    RowsContainer,
    kafka_suffix,
    stored_event_fields,
)
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.native_rows import NativeRows, event_rows
from authtrail.sinks.tables import create_statements
from tests.realdata import REALDATA

pytestmark = pytest.mark.integration

SCHEMA = load_schema(CHAINED_RECORD)
TABLES = ("events", "events_from_avro")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[EmbeddedBackend]:
    with EmbeddedBackend(tmp_path / "clickhouse") as backend:
        for statement in create_statements():
            backend.command(statement)
        backend.command("CREATE TABLE events_from_avro AS events")
        yield backend


def chained(event: Mapping[str, Any], seq: int) -> dict[str, Any]:
    return {"event": dict(event), "seq": seq, "prev_hash": bytes([seq % 256]) * 32,
            "hash": bytes(range(32)), "leaf_hash": bytes(range(32, 64)), "source_partition": 1,
            "source_offset": seq, "epoch": 3, "source_index": seq % 3 or None}  # fmt: skip


def body(schema: Mapping[str, Any], record: Mapping[str, Any]) -> bytes:
    out = io.BytesIO()
    names = {field["name"] for field in schema["fields"]}
    schemaless_writer(out, parse_schema(dict(schema)), {k: v for k, v in record.items()
                                                        if k in names})  # fmt: skip
    return out.getvalue()


def real_events() -> list[dict[str, Any]]:
    if not (REALDATA / "idp_events").is_dir():
        return []
    mapped = []
    samples = [
        *((map_keycloak_event, item["event"], {"default_occurred_at": 1_628_000_000_000_000})
          for item in _load("keycloak/keycloak_event_samples.json")["samples"]),
        *((map_auth0_event, item["event"], {})
          for item in _load("idp_events/auth0_log_samples.json")["samples"]),
        *((map_okta_event, item["event"], {})
          for item in _load("idp_events/okta_docs_logevent_samples.json")["samples"][:1]),
    ]  # fmt: skip
    for mapper, event, options in samples:
        try:
            mapped.append(mapper(event, tenant_id="acme", **options))
        except FormatError:
            continue  # samples the sources got wrong (tests/unit/test_realdata_mapping.py)
    return mapped


def _load(relative: str) -> Any:
    return json.loads((REALDATA / relative).read_text(encoding="utf-8"))


def store_both_ways(
    backend: EmbeddedBackend, schema: Mapping[str, Any], groups: Sequence[Sequence[bytes]]
) -> None:
    """Each group of bodies as one Kafka message's block; all of them in one insert."""
    native = event_rows(schema)
    assert isinstance(native, NativeRows)
    avro = RowsContainer(stored_event_fields(schema), native.columns)
    suffixes = [kafka_suffix("cluster-1", index % 4, 1000 + index) for index in range(len(groups))]
    for rows, table in zip((native, avro), TABLES, strict=True):
        data = rows.container(
            [rows.block(bodies, suffix) for bodies, suffix in zip(groups, suffixes, strict=True)]
        )
        backend.insert_data(table, rows.columns, data, rows.input_format)


def differences(backend: EmbeddedBackend) -> int:
    """Rows one table holds and the other does not, compared in ClickHouse (bytes as they
    are: Arrow would refuse a string that is not UTF-8)."""
    native, avro = ("SELECT * EXCEPT stored_at FROM " + table for table in TABLES)
    sql = (f"SELECT count() FROM (SELECT * FROM ({native} EXCEPT ALL {avro}) "
           f"UNION ALL SELECT * FROM ({avro} EXCEPT ALL {native}))")  # fmt: skip
    return int(backend.query_arrow(sql).column(0)[0].as_py())


def read(backend: EmbeddedBackend, table: str) -> list[dict[str, Any]]:
    return backend.query_arrow(
        f"SELECT * EXCEPT stored_at FROM {table} ORDER BY tenant_id, seq"
    ).to_pylist()


def test_generated_and_real_events_store_as_the_avro_reader_stores_them(
    backend: EmbeddedBackend,
) -> None:
    config = TrafficConfig(tenants=4, users=50, start_us=1_767_225_600_000_000)
    events = [*itertools.islice(generate_events(config, 3), 2000), *real_events()]
    bodies = [body(SCHEMA, chained(event, seq)) for seq, event in enumerate(events, 1)]
    store_both_ways(backend, SCHEMA, [bodies[i : i + 300] for i in range(0, len(bodies), 300)])
    stored = read(backend, "events")
    assert len(stored) == len(events) and stored == read(backend, "events_from_avro")
    assert differences(backend) == 0
    if (REALDATA / "idp_events").is_dir():
        assert len(events) > 2030  # the real samples are in
    assert {row["kafka_cluster"] for row in stored} == {"cluster-1"}
    assert max(len(row["attributes"]) for row in stored) > 5


def test_edge_cases_store_as_the_avro_reader_stores_them(backend: EmbeddedBackend) -> None:
    config = TrafficConfig(tenants=1, users=5, start_us=1_767_225_600_000_000)
    base = next(generate_events(config, 4))
    required = ("event_id", "tenant_id", "event_type", "outcome", "occurred_at", "attributes")
    every_null = {name: None for name in base if name not in required}
    events = [
        {**base, **every_null, "received_at": None, "attributes": {}},
        {**base, "message": "é" * 9000, "user_name": "", "attributes": {"": ""}},
        {**base, "user_name": "ab", "attributes": {f"k{i}": "v" * i for i in range(300)}},
        {**base, "event_type": "OTHER", "event_type_other": "x", "outcome": "UNKNOWN"},
    ]
    bodies = [body(SCHEMA, chained(event, seq)) for seq, event in enumerate(events, 1)]
    # A string that is not UTF-8 (no worker writes one): both keep its bytes.
    at = bodies[2].index(b"\x04ab")
    bodies[2] = bodies[2][:at] + b"\x04a\xff" + bodies[2][at + 3 :]
    store_both_ways(backend, SCHEMA, [bodies])
    assert differences(backend) == 0
    stored = backend.query_arrow(
        "SELECT count(), countIf(user_name IS NULL), max(length(attributes)), "
        "anyIf(hex(user_name), seq = 3) FROM events"
    ).to_pylist()[0]
    assert list(stored.values()) == [4, 1, 300, "61FF"]
    # The comparison sees one changed byte (here in a map value).
    backend.command(
        "ALTER TABLE events_from_avro UPDATE attributes = mapUpdate(attributes, map('k1', 'w')) "
        "WHERE seq = 3 SETTINGS mutations_sync = 1"
    )
    assert differences(backend) == 2  # that row as each table has it


def test_older_writer_schemas_store_as_the_avro_reader_stores_them(
    backend: EmbeddedBackend,
) -> None:
    config = TrafficConfig(tenants=2, users=20, start_us=1_767_225_600_000_000)
    events = list(itertools.islice(generate_events(config, 5), 200))
    for version, schema in enumerate(previous_versions(CHAINED_RECORD)):
        records = [chained(event, 1000 * version + seq) for seq, event in enumerate(events, 1)]
        store_both_ways(backend, schema, [[body(schema, record) for record in records]])
    stored = read(backend, "events")
    assert len(stored) == 200 * len(previous_versions(CHAINED_RECORD))
    assert stored == read(backend, "events_from_avro")
    assert {row["epoch"] for row in stored} == {0, 3}  # v1 has no epoch: the default, 0


def test_the_kafka_fields_are_the_suffix(backend: EmbeddedBackend) -> None:
    config = TrafficConfig(tenants=1, users=5, start_us=1_767_225_600_000_000)
    bodies = [body(SCHEMA, chained(event, seq)) for seq, event in
              enumerate(itertools.islice(generate_events(config, 6), 10), 1)]  # fmt: skip
    store_both_ways(backend, SCHEMA, [bodies[:4], bodies[4:]])
    positions = [(row["kafka_partition"], row["kafka_offset"]) for row in read(backend, "events")]
    assert positions == [(0, 1000)] * 4 + [(1, 1001)] * 6
