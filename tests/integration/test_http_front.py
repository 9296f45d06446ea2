"""The HTTP front as ClickHouse's HTTP protocol: raw requests, clickhouse-connect, and what
it refuses by itself (writes on read-only requests, wrong credentials)."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import clickhouse_connect
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from authtrail.errors import ConfigurationError, StoreError
from sinks.clickhouse import EmbeddedBackend, ServerBackend
from sinks.http_front import HttpFront
from tests.integration.clickhouse_samples import EVENTS_DDL, count

pytestmark = pytest.mark.integration


def http_request(
    front: HttpFront, params: dict[str, str], body: bytes | None = None, method: str = "POST"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{front.url}?{urlencode(params)}", data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_front_speaks_clickhouse_http(
    embedded_backend: EmbeddedBackend, http_front: HttpFront
) -> None:
    status, _, body = http_request(http_front, {}, method="GET")
    assert (status, body) == (200, b"Ok.\n")
    status, headers, body = http_request(http_front, {"query": "SELECT 40 + 2"}, method="GET")
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, b"42\n", "TabSeparated")
    assert json.loads(headers["X-ClickHouse-Summary"])["read_rows"] == "1"
    status, headers, body = http_request(
        http_front,
        {"param_name": "it's\\tme", "query_id": "q-1"},
        b"SELECT {name:String} AS name FORMAT JSONEachRow",
    )
    assert json.loads(body) == {"name": "it's\tme"}
    assert (headers["X-ClickHouse-Format"], headers["X-ClickHouse-Query-Id"]) == (
        "JSONEachRow",
        "q-1",
    )
    status, headers, body = http_request(http_front, {"query": "SELECT * FROM nowhere"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "60")
    assert b"nowhere" in body
    status, headers, _ = http_request(http_front, {"query": "SET max_threads = 1"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "48")


def test_front_streams_chunked_inserts(
    embedded_backend: EmbeddedBackend, http_front: HttpFront
) -> None:
    embedded_backend.command(
        "CREATE TABLE pairs (k UInt32, v String) ENGINE = MergeTree ORDER BY k"
    )
    connection = http.client.HTTPConnection("127.0.0.1", http_front.port, timeout=10)
    query = urlencode({"query": "INSERT INTO pairs (k, v) FORMAT CSV"})
    lines = (f'{k},"value {k}"\n'.encode() for k in range(1000))
    connection.request("POST", f"/?{query}", body=lines, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 200, response.read()
    assert json.loads(response.headers["X-ClickHouse-Summary"])["written_rows"] == "1000"
    connection.close()
    assert count(embedded_backend, "pairs") == 1000


def test_front_settings_do_not_leak_into_the_shared_session(
    embedded_backend: EmbeddedBackend, http_front: HttpFront
) -> None:
    before = embedded_backend.query_arrow("SELECT getSetting('max_threads') AS v").to_pylist()
    status, _, body = http_request(
        http_front, {"max_threads": "1", "query": "SELECT getSetting('max_threads')"}
    )
    assert (status, body) == (200, b"1\n")
    after = embedded_backend.query_arrow("SELECT getSetting('max_threads') AS v").to_pylist()
    assert after == before != [{"v": 1}]


def test_front_enforces_read_only_itself(
    embedded_backend: EmbeddedBackend, http_front: HttpFront, tmp_path: Path
) -> None:
    # Past the client-side keyword check: a plain clickhouse-connect client asking readonly.
    embedded_backend.command(EVENTS_DDL)
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=http_front.port, compress=False, settings={"readonly": "1"}
    )
    try:
        for statement in ("DROP TABLE events", "SELECT 1; DROP TABLE events"):
            with pytest.raises(DatabaseError) as refused:
                client.command(statement)
            assert refused.value.code == 164
        assert client.command("SELECT count() FROM events") == 0
    finally:
        client.close()
    # A GET can only read, as on a ClickHouse server.
    status, headers, body = http_request(http_front, {"query": "DROP TABLE events"}, method="GET")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164")
    assert body.startswith(b"Code: 164.")
    # The read-only connection cannot lift its own readonly either.
    with pytest.raises(StoreError) as lifted:
        embedded_backend.execute(
            "SELECT count() FROM events SETTINGS readonly = 0",
            output_format="TabSeparated",
            read_only=True,
        )
    assert lifted.value.code == 164
    assert count(embedded_backend) == 0


def test_front_with_password_rejects_wrong_credentials(embedded_backend: EmbeddedBackend) -> None:
    with HttpFront(embedded_backend, username="auditor", password="s3cret-pw") as front:
        base = f"127.0.0.1:{front.port}"
        with pytest.raises(ConfigurationError) as rejected:
            ServerBackend(f"http://auditor:guess-pw@{base}/", connect_timeout=2)
        assert "guess-pw" not in str(rejected.value) and "auditor" in str(rejected.value)
        status, headers, _ = http_request(front, {"query": "SELECT 1"})
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516")
        assert http_request(front, {}, method="GET")[0] == 200  # liveness needs no password
        with ServerBackend(f"http://auditor:s3cret-pw@{base}/", connect_timeout=2) as backend:
            assert backend.query_arrow("SELECT 1 AS one").to_pylist() == [{"one": 1}]


def test_front_serves_native_inserts_and_queries(
    embedded_backend: EmbeddedBackend, http_front: HttpFront
) -> None:
    # clickhouse-connect's default path (Native format both ways), not only Arrow.
    client = clickhouse_connect.get_client(host="127.0.0.1", port=http_front.port, compress=False)
    try:
        client.command(
            "CREATE TABLE native (k UInt64, outcome LowCardinality(String), "
            "attributes Map(String, String), reason Nullable(String), digest FixedString(3), "
            "ts DateTime64(6, 'UTC')) ENGINE = MergeTree ORDER BY k"
        )
        epoch = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        columns = ["k", "outcome", "attributes", "reason", "digest", "ts"]
        rows = [
            [k, "ok" if k % 2 else "fail", {"ip": str(k)}, None if k % 3 else "why", b"abc", ts]
            for k, ts in ((k, epoch + dt.timedelta(microseconds=k)) for k in range(10_000))
        ]
        summary = client.insert("native", rows, column_names=columns)
        assert summary.written_rows == 10_000
        stored = client.query("SELECT * FROM native ORDER BY k").result_rows
        assert [list(row[:5]) for row in stored] == [row[:5] for row in rows]
        assert [row[5].replace(tzinfo=dt.UTC) for row in stored] == [row[5] for row in rows]
    finally:
        client.close()
    assert count(embedded_backend, "native") == 10_000


def test_database_in_the_url_is_used_and_reset(
    embedded_backend: EmbeddedBackend, http_front: HttpFront
) -> None:
    embedded_backend.command("CREATE DATABASE audit")
    embedded_backend.command("CREATE TABLE audit.pairs (k UInt64) ENGINE = MergeTree ORDER BY k")
    with ServerBackend(f"{http_front.url}audit") as backend:
        backend.insert_arrow("pairs", pa.table({"k": pa.array([1, 2], pa.uint64())}))
    with ServerBackend(f"{http_front.url}audit", read_only=True) as backend:
        stored = backend.query_arrow("SELECT count() AS n, currentDatabase() AS db FROM pairs")
        assert stored.to_pylist() == [{"n": 2, "db": "audit"}]
    # The shared session is back on the default database for the next caller.
    assert embedded_backend.query_arrow("SELECT currentDatabase() AS db").to_pylist() == [
        {"db": "default"}
    ]
    with pytest.raises(ConfigurationError, match="no database 'absent'"):
        ServerBackend(f"{http_front.url}absent")
