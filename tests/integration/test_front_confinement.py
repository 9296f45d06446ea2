"""The signing key stays out of reach: what the HTTP front and read-only calls refuse.

A store laid out as ``authtrail up`` lays it out (``authtrail-data/clickhouse`` next to
``authtrail-data/keys/authtrail.key``), served by the front. Every way found to make chdb
reach outside the store — table functions, the scalar ``file()``, files named as tables in
chdb's ``default`` database, settings naming files, INTO OUTFILE, identifier parameters —
is refused through clickhouse-connect, through raw HTTP (GET and POST), and on
``EmbeddedBackend(read_only=True)``; and the key's bytes never come back. Ordinary analyst
queries keep working on every one of those paths.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import clickhouse_connect
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from authtrail.errors import StoreError
from authtrail.keys import write_key_pair
from authtrail.sinks.clickhouse import EmbeddedBackend, ServerBackend
from authtrail.sinks.clickhouse_sql import quote_identifier, quote_string_literal
from authtrail.sinks.http_front import HttpFront
from tests.integration.clickhouse_samples import EVENTS_DDL, count, make_events

pytestmark = pytest.mark.integration

ACCESS_DENIED, UNKNOWN_TABLE, READONLY = 497, 60, 164


@dataclass
class Layout:
    """The data dir of an ``authtrail up``: the store, the key beside it, the front."""

    data_dir: Path
    key_path: Path
    key_bytes: bytes
    owner: EmbeddedBackend
    front: HttpFront

    def fill(self, template: str) -> str:
        """``template`` with {key}, {key_name}, {relative_key}, {port}, {out} filled in."""
        return template.format(
            key=quote_string_literal(str(self.key_path)),
            key_name=quote_identifier(str(self.key_path)),
            relative_key=quote_identifier("authtrail-data/keys/authtrail.key"),
            port=self.front.port,
            out=quote_string_literal(str(self.data_dir / "stolen.out")),
        )


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Layout]:
    # From the directory `up` was started in: chdb resolves relative file names here.
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "authtrail-data"
    key_path, _ = write_key_pair(data_dir / "keys", "authtrail")
    (tmp_path / "notes").write_text("a file named like a table\n")
    owner = EmbeddedBackend(data_dir / "clickhouse")
    try:
        owner.command(EVENTS_DDL)
        owner.insert_arrow("events", make_events(70))
        owner.command("CREATE TABLE tenants (tenant_id String, name String) ENGINE = Memory")
        owner.command("INSERT INTO tenants VALUES ('tenant-1', 'Acme'), ('tenant-2', 'Globex')")
        with HttpFront(owner, writer_token="writer-secret") as front:
            yield Layout(data_dir, key_path, key_path.read_bytes(), owner, front)
    finally:
        owner.close()


def raw(layout: Layout, sql: str, method: str) -> tuple[int, str, bytes]:
    """One request as the analyst: status, error code, body."""
    params = {"query": sql} if method == "GET" else {}
    request = urllib.request.Request(
        f"{layout.front.url}?{urlencode(params)}",
        data=None if method == "GET" else sql.encode(),
        method=method,
    )
    request.add_header("Authorization", f"Basic {_basic('analyst', layout.front.token)}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, "", response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("X-ClickHouse-Exception-Code", ""), error.read()


# Reading the key (or any file), reaching URLs, other databases, programs, Python objects.
ESCAPES = [
    ("SELECT * FROM file({key}, 'RawBLOB')", ACCESS_DENIED),
    ("SELECT file({key})", ACCESS_DENIED),
    ("SELECT * FROM numbers(1) WHERE startsWith(file({key}), '-')", ACCESS_DENIED),
    ("SELECT * FROM events WHERE tenant_id IN (SELECT * FROM file({key}, 'RawBLOB'))", 497),
    ("WITH k AS (SELECT * FROM file({key}, 'RawBLOB')) SELECT * FROM k", ACCESS_DENIED),
    ("SELECT * FROM view(SELECT file({key}))", ACCESS_DENIED),
    ("SELECT * FROM values('x String', file({key}))", ACCESS_DENIED),
    ("SELECT * FROM {key_name}", ACCESS_DENIED),  # chdb's default database reads files
    ("SELECT * FROM default.{key_name}", ACCESS_DENIED),
    ("SELECT * FROM {relative_key}", ACCESS_DENIED),
    ("SELECT * FROM notes", UNKNOWN_TABLE),  # a file in the working directory
    ("SELECT * FROM events WHERE tenant_id IN notes", UNKNOWN_TABLE),
    ("SELECT * FROM (WITH notes AS (SELECT 1) SELECT 1) AS a, notes", UNKNOWN_TABLE),
    ("DESCRIBE TABLE {key_name}", ACCESS_DENIED),
    ("DESCRIBE file({key}, 'RawBLOB')", ACCESS_DENIED),
    ("EXISTS TABLE {key_name}", ACCESS_DENIED),
    ("SHOW CREATE TABLE notes", UNKNOWN_TABLE),
    ("EXPLAIN SELECT * FROM {key_name}", ACCESS_DENIED),
    ("SELECT * FROM url('http://127.0.0.1:{port}/?query=SELECT+1', 'RawBLOB')", 497),
    ("SELECT * FROM urlCluster('default', 'http://127.0.0.1:{port}/', 'RawBLOB')", 497),
    ("SELECT * FROM s3('http://127.0.0.1:{port}/x', 'RawBLOB')", ACCESS_DENIED),
    ("SELECT * FROM s3Cluster('default', 'http://127.0.0.1:{port}/x')", ACCESS_DENIED),
    ("SELECT * FROM gcs('http://127.0.0.1:{port}/x')", ACCESS_DENIED),
    ("SELECT * FROM azureBlobStorage('http://127.0.0.1:{port}', 'c', 'x')", ACCESS_DENIED),
    ("SELECT * FROM hdfs('hdfs://127.0.0.1:{port}/x', 'RawBLOB')", ACCESS_DENIED),
    ("SELECT * FROM remote('127.0.0.1:9000', system.one)", ACCESS_DENIED),
    ("SELECT * FROM remoteSecure('127.0.0.1:9440', system.one)", ACCESS_DENIED),
    ("SELECT * FROM cluster('default', system.one)", ACCESS_DENIED),
    ("SELECT * FROM clusterAllReplicas('default', system.one)", ACCESS_DENIED),
    ("SELECT * FROM mysql('127.0.0.1:3306', 'd', 't', 'u', 'p')", ACCESS_DENIED),
    ("SELECT * FROM postgresql('127.0.0.1:5432', 'd', 't', 'u', 'p')", ACCESS_DENIED),
    ("SELECT * FROM sqlite({key}, 't')", ACCESS_DENIED),
    ("SELECT * FROM mongodb('127.0.0.1:27017', 'd', 'c', 'u', 'p', 'x String')", 497),
    ("SELECT * FROM redis('127.0.0.1:6379', 'k', 'k String')", ACCESS_DENIED),
    ("SELECT * FROM jdbc('jdbc:x', 't')", ACCESS_DENIED),
    ("SELECT * FROM odbc('DSN=x', 't')", ACCESS_DENIED),
    ("SELECT * FROM executable('cat', 'RawBLOB', 'x String')", ACCESS_DENIED),
    ("SELECT * FROM input('x String')", ACCESS_DENIED),
    ("SELECT * FROM python(layout)", ACCESS_DENIED),
    ("SELECT * FROM Python(layout)", ACCESS_DENIED),
    ("SELECT * FROM icebergLocal({key})", ACCESS_DENIED),
    ("SELECT * FROM deltaLake('http://127.0.0.1:{port}/x')", ACCESS_DENIED),
    ("SELECT * FROM hudi('http://127.0.0.1:{port}/x')", ACCESS_DENIED),
    ("SELECT * FROM dictionary('d')", ACCESS_DENIED),
    ("SELECT * FROM fileCluster('default', {key})", ACCESS_DENIED),
    ("SELECT * FROM filesystem('/')", ACCESS_DENIED),
    ("SELECT * FROM merge('default', '.*')", ACCESS_DENIED),
    ("SELECT joinGet('tenants', 'name', 'x')", ACCESS_DENIED),
    ("SELECT 1 SETTINGS format_template_resultset = {key}", ACCESS_DENIED),
    ("SELECT 1 SETTINGS additional_result_filter = 'length(file(''/etc/hostname''))'", 497),
    ("SELECT 1 SETTINGS implicit_table_at_top_level = 'notes'", ACCESS_DENIED),
]
# Writes and session changes: refused to analysts by the read-only connection's rules.
WRITES = [
    "ALTER TABLE events DELETE WHERE 1",
    "ALTER TABLE events UPDATE reason = 'x' WHERE 1",
    "INSERT INTO events (tenant_id, seq) VALUES ('forged', 1)",
    "INSERT INTO FUNCTION file({out}, 'RawBLOB') SELECT 'x'",
    "SELECT 'x' INTO OUTFILE {out}",
    "DROP TABLE events",
    "CREATE OR REPLACE VIEW events_view AS SELECT 1",
    "SET readonly = 0",
    "SELECT 1; DROP TABLE events",
]


def _assert_key_absent(layout: Layout, body: bytes) -> None:
    assert layout.key_bytes.strip() not in body
    assert not (layout.data_dir / "stolen.out").exists()


@pytest.mark.parametrize(("template", "code"), ESCAPES, ids=[e[0][:60] for e in ESCAPES])
def test_escapes_are_refused_on_every_read_path(layout: Layout, template: str, code: int) -> None:
    sql = layout.fill(template)
    for method in ("GET", "POST"):
        status, error_code, body = raw(layout, sql, method)
        assert (status, error_code) == (500, str(code)), (method, body)
        _assert_key_absent(layout, body)
    with ServerBackend(layout.front.analyst_url, read_only=True) as analyst:
        with pytest.raises(StoreError) as refused:
            analyst.query_arrow(sql)
        assert refused.value.code == code, refused.value
    with EmbeddedBackend(layout.owner.path, read_only=True) as reader:
        with pytest.raises(StoreError) as refused:
            reader.query_arrow(sql)
        assert refused.value.code == code, refused.value


def test_escapes_through_clickhouse_connect(layout: Layout) -> None:
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=layout.front.port, username="analyst",
        password=layout.front.token, compress=False,
    )  # fmt: skip
    try:
        for template, code in ESCAPES:
            with pytest.raises(DatabaseError) as refused:
                client.query(layout.fill(template))
            assert refused.value.code == code, template
            assert layout.key_bytes.strip().decode() not in str(refused.value)
    finally:
        client.close()


@pytest.mark.parametrize("template", WRITES)
def test_analysts_cannot_write(layout: Layout, template: str) -> None:
    sql = layout.fill(template)
    for method in ("GET", "POST"):
        status, error_code, body = raw(layout, sql, method)
        assert (status, error_code) == (500, str(READONLY)), (method, body)
    with ServerBackend(layout.front.analyst_url) as analyst:  # not read-only on its side
        with pytest.raises(StoreError) as refused:
            analyst.command(sql)
        assert refused.value.code == READONLY
    with EmbeddedBackend(layout.owner.path, read_only=True) as reader:
        with pytest.raises(StoreError) as refused:
            reader.query_arrow(sql)
        assert refused.value.code == READONLY
    assert count(layout.owner) == 70
    assert count(layout.owner, "system.tables WHERE name = 'events_view'") == 0
    _assert_key_absent(layout, b"")


def test_the_writer_writes_the_store_and_nothing_else(layout: Layout) -> None:
    with ServerBackend(layout.front.writer_url) as writer:
        writer.insert_arrow("events", make_events(7, start=70))
        assert writer.query_arrow("SELECT count() AS n FROM events").to_pylist() == [{"n": 77}]
        for template, code in [
            # INSERT and SELECT on its tables, nothing else: no row or table can be changed.
            ("ALTER TABLE events UPDATE reason = 'x' WHERE seq = 1", ACCESS_DENIED),
            ("ALTER TABLE events DELETE WHERE seq = 1", ACCESS_DENIED),
            ("DELETE FROM events WHERE seq = 1", ACCESS_DENIED),
            ("DROP TABLE events", ACCESS_DENIED),
            ("TRUNCATE TABLE events", ACCESS_DENIED),
            ("RENAME TABLE events TO gone", ACCESS_DENIED),
            ("OPTIMIZE TABLE events FINAL", ACCESS_DENIED),
            ("CREATE OR REPLACE VIEW failures AS SELECT * FROM events", ACCESS_DENIED),
            ("INSERT INTO tenants SELECT 't', 'n'", ACCESS_DENIED),  # not its table
            ("SELECT count() FROM tenants", ACCESS_DENIED),
            *ESCAPES[:3],
            ("INSERT INTO FUNCTION file({out}, 'RawBLOB') SELECT 'x'", ACCESS_DENIED),
            ("SELECT 'x' INTO OUTFILE {out}", ACCESS_DENIED),
            ("INSERT INTO events (tenant_id) SELECT * FROM file({key}, 'RawBLOB')", 497),
            ("INSERT INTO notes SELECT 'x'", UNKNOWN_TABLE),  # would append to the file
            ("TRUNCATE TABLE notes", ACCESS_DENIED),
            ("CREATE TABLE leak (x String) ENGINE = File(RawBLOB, {key})", ACCESS_DENIED),
            ("CREATE TABLE leak ENGINE = Memory AS SELECT * FROM {key_name}", ACCESS_DENIED),
            ("CREATE VIEW leak AS SELECT file({key}) AS k", ACCESS_DENIED),
            ("CREATE DATABASE leak ENGINE = Filesystem('/')", ACCESS_DENIED),
            ("CREATE DICTIONARY leak (k String) PRIMARY KEY k "
             "SOURCE(FILE(path {key} format 'RawBLOB')) LAYOUT(FLAT()) LIFETIME(0)", 497),
            ("CREATE TABLE leak (x UInt8) ENGINE = MergeTree ORDER BY x "
             "SETTINGS disk = disk(type = local, path = '/tmp/leak/')", ACCESS_DENIED),
            ("SYSTEM RELOAD CONFIG", ACCESS_DENIED),
            ("INSERT INTO events (tenant_id) FROM INFILE {key} FORMAT RawBLOB", ACCESS_DENIED),
        ]:  # fmt: skip
            with pytest.raises(StoreError) as refused:
                writer.command(layout.fill(template))
            assert refused.value.code == code, template
    assert count(layout.owner) == 77
    assert count(layout.owner, "system.tables WHERE name IN ('leak', 'failures', 'gone')") == 0
    assert (layout.data_dir.parent / "notes").read_text() == "a file named like a table\n"
    _assert_key_absent(layout, b"")


def test_tokens_and_browser_headers_are_checked_before_anything_runs(layout: Layout) -> None:
    sql = layout.fill("SELECT * FROM file({key}, 'RawBLOB')")
    for token in ("", "wrong", layout.front.token + "x"):
        request = urllib.request.Request(f"{layout.front.url}?{urlencode({'query': sql})}")
        if token:
            request.add_header("X-ClickHouse-User", "analyst")
            request.add_header("X-ClickHouse-Key", token)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        assert refused.value.headers["X-ClickHouse-Exception-Code"] == "516"
    for header, value in (("Host", "rebound.example:8124"), ("Origin", "https://evil.example")):
        request = urllib.request.Request(
            f"{layout.front.url}?{urlencode({'query': 'SELECT 1'})}", data=b"", method="POST"
        )
        request.add_header("Authorization", f"Basic {_basic('analyst', layout.front.token)}")
        request.add_header(header, value)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        assert refused.value.headers["X-ClickHouse-Exception-Code"] == str(ACCESS_DENIED)


def _basic(user: str, token: str) -> str:
    return base64.b64encode(f"{user}:{token}".encode()).decode()


ANALYST_QUERIES = [
    ("SELECT count() AS n FROM events", [{"n": 70}]),
    (
        "SELECT t.name AS name, count() AS n FROM events AS e "
        "JOIN tenants AS t ON e.tenant_id = t.tenant_id GROUP BY name ORDER BY name",
        [{"name": "Acme", "n": 10}, {"name": "Globex", "n": 10}],
    ),
    (
        "SELECT count() AS n FROM (SELECT tenant_id FROM events WHERE outcome = 'failure') "
        "WHERE tenant_id IN (SELECT tenant_id FROM tenants)",
        [{"n": 6}],
    ),
    ("SELECT count() AS n FROM events WHERE tenant_id = {tenant:String}", [{"n": 10}]),
    ("SELECT sum(number) AS s FROM numbers(10)", [{"s": 45}]),
    ("SELECT count() > 0 AS ok FROM system.tables WHERE database = 'system'", [{"ok": True}]),
    (
        "WITH failed AS (SELECT tenant_id FROM events WHERE outcome = 'failure') "
        "SELECT count() AS n FROM failed",
        [{"n": 24}],
    ),
    (
        "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name",
        [{"name": "events"}, {"name": "tenants"}],
    ),
]


def test_analyst_queries_still_work(layout: Layout) -> None:
    readers = [
        ServerBackend(layout.front.analyst_url, read_only=True),  # clickhouse-connect, Arrow
        EmbeddedBackend(layout.owner.path, read_only=True),
    ]
    try:
        for reader in readers:
            for sql, expected in ANALYST_QUERIES:
                parameters = {"tenant": "tenant-1"} if "{tenant:" in sql else None
                assert _rows(reader.query_arrow(sql, parameters)) == expected, sql
    finally:
        for reader in readers:
            reader.close()
    for sql in (
        "DESCRIBE TABLE events",
        "SHOW TABLES",
        "EXISTS events",
        "SHOW CREATE TABLE events",
    ):
        for method in ("GET", "POST"):
            status, _, body = raw(layout, sql, method)
            assert status == 200 and body, (sql, method, body)


def _rows(table: pa.Table) -> list[dict[str, object]]:
    rows = table.to_pylist()
    return [{k: (bool(v) if k == "ok" else v) for k, v in row.items()} for row in rows]
