"""The HTTP front as ClickHouse's HTTP protocol: raw requests, clickhouse-connect, and what
it refuses by itself (writes by analysts and on GET, wrong or missing tokens, browsers).

What confinement refuses (files, URLs, table functions…) is in test_front_confinement.py."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import clickhouse_connect
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from authtrail.errors import ConfigurationError, InvalidArgumentError, StoreError
from authtrail.keys import write_key_pair
from authtrail.sinks.clickhouse import EmbeddedBackend, ServerBackend
from authtrail.sinks.http_front import HttpFront
from authtrail.sinks.tables import create_statements
from tests.integration.clickhouse_samples import EVENTS_DDL, count, make_events

pytestmark = pytest.mark.integration


def http_request(
    front: HttpFront,
    params: dict[str, str],
    body: bytes | None = None,
    method: str = "POST",
    *,
    user: str | None = "analyst",
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One raw request, as ``user`` with ``token`` (default: the analyst's) in basic auth."""
    request = urllib.request.Request(f"{front.url}?{urlencode(params)}", data=body, method=method)
    if user is not None:
        credentials = f"{user}:{token if token is not None else front.token}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
    for name, value in (headers or {}).items():
        request.add_header(name, value)
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
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164")  # analysts read


def test_front_streams_chunked_inserts(
    embedded_backend: EmbeddedBackend, http_front: HttpFront
) -> None:
    embedded_backend.command(
        "CREATE TABLE pairs (k UInt32, v String) ENGINE = MergeTree ORDER BY k"
    )
    connection = http.client.HTTPConnection("127.0.0.1", http_front.port, timeout=10)
    admin = urlsplit(http_front.admin_url)  # `pairs` is none of the writer's tables
    query = urlencode(
        {
            "query": "INSERT INTO pairs (k, v) FORMAT CSV",
            "user": "admin",
            "password": admin.password,
        }
    )
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
    # Past the client-side keyword check: a plain clickhouse-connect client, logged in as
    # the writer, asking readonly.
    embedded_backend.command(EVENTS_DDL)
    writer = urlsplit(http_front.writer_url)
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=http_front.port, compress=False, settings={"readonly": "1"},
        username="writer", password=writer.password,
    )  # fmt: skip
    try:
        for statement in ("DROP TABLE events", "SELECT 1; DROP TABLE events"):
            with pytest.raises(DatabaseError) as refused:
                client.command(statement)
            assert refused.value.code == 164
        assert client.command("SELECT count() FROM events") == 0
    finally:
        client.close()
    # A GET can only read, as on a ClickHouse server, even for the writer.
    for user, token in (("analyst", http_front.token), ("writer", writer.password)):
        status, headers, body = http_request(
            http_front, {"query": "DROP TABLE events"}, method="GET", user=user, token=token
        )
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


def test_front_admits_the_analyst_and_the_writer_only(embedded_backend: EmbeddedBackend) -> None:
    embedded_backend.command(EVENTS_DDL)
    with HttpFront(embedded_backend, token="analyst-pw", writer_token="writer-pw") as front:
        base = f"127.0.0.1:{front.port}"
        assert front.analyst_url == f"http://analyst:analyst-pw@{base}/"
        assert front.writer_url == f"http://writer:writer-pw@{base}/"
        for user, token in (("analyst", "guess"), ("writer", "analyst-pw"), ("default", ""),
                            ("analyst", "writer-pw"), ("writer", "")):  # fmt: skip
            status, headers, body = http_request(
                front, {"query": "SELECT 1"}, user=user, token=token
            )
            assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516"), user
            assert b"pw" not in body
        status, headers, _ = http_request(front, {"query": "SELECT 1"}, user=None)
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516")
        assert http_request(front, {}, method="GET", user=None)[0] == 200  # liveness: no token
        # What clickhouse-connect sends (X-ClickHouse-User/Key), and URL parameters.
        with pytest.raises(ConfigurationError) as rejected:
            ServerBackend(f"http://analyst:guess-pw@{base}/", connect_timeout=2)
        assert "guess-pw" not in str(rejected.value) and "analyst" in str(rejected.value)
        with ServerBackend(front.analyst_url, connect_timeout=2) as analyst:
            assert analyst.query_arrow("SELECT 1 AS one").to_pylist() == [{"one": 1}]
            with pytest.raises(StoreError) as refused:
                analyst.command("INSERT INTO events (tenant_id, seq) VALUES ('forged', 1)")
            assert refused.value.code == 164
            with pytest.raises(StoreError) as refused:
                analyst.insert_arrow("events", make_events(3))
            assert refused.value.code == 164
        params = {"query": "SELECT 2", "user": "analyst", "password": "analyst-pw"}
        assert http_request(front, params, user=None)[2] == b"2\n"
        with ServerBackend(front.writer_url, connect_timeout=2) as writer:
            writer.insert_arrow("events", make_events(3))
        assert count(embedded_backend) == 3
    with HttpFront(embedded_backend) as front:  # no writer_token: no writer at all
        assert len(front.token) >= 40
        with pytest.raises(InvalidArgumentError):
            front.writer_url  # noqa: B018
        status, _, _ = http_request(front, {"query": "SELECT 1"}, user="writer", token="")
        assert status == 403


def test_front_refuses_requests_a_web_page_could_send(
    embedded_backend: EmbeddedBackend, http_front: HttpFront
) -> None:
    """CSRF and DNS rebinding: the right token is not enough from a browser's request."""
    query = {"query": "SELECT 1"}
    port = http_front.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
        assert http_request(http_front, query, headers={"Host": host})[0] == 200, host
    for headers in (
        {"Host": f"evil.example:{port}"},  # DNS rebinding: the page's own name
        {"Host": "127.0.0.1"},  # no port: not this front's address either
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{port}"},  # a page can claim nothing from the front
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        for method in ("GET", "POST"):
            status, reply, body = http_request(http_front, query, method=method, headers=headers)
            assert (status, reply["X-ClickHouse-Exception-Code"]) == (403, "497"), headers
            assert body.startswith(b"Code: 497.")
        assert http_request(http_front, {}, method="GET", user=None, headers=headers)[0] == 403
    assert http_request(http_front, query, headers={"Sec-Fetch-Site": "none"})[0] == 200
    # An operator may name other hosts and origins (a reverse proxy, a dashboard).
    with HttpFront(
        embedded_backend, allowed_hosts=["audit.internal:8443", "https://dash.internal"]
    ) as front:
        allowed = {"Host": "audit.internal:8443", "Origin": "https://dash.internal"}
        assert http_request(front, query, headers=allowed)[0] == 200
        allowed["Sec-Fetch-Site"] = "cross-site"
        assert http_request(front, query, headers=allowed)[0] == 200
        assert http_request(front, query, headers={"Origin": "https://other.internal"})[0] == 403


def test_cli_reaches_a_front_with_the_token_in_the_url(
    embedded_backend: EmbeddedBackend, http_front: HttpFront, tmp_path: Path
) -> None:
    """``authtrail sql|status|verify --clickhouse-url http://analyst:TOKEN@host:port/``."""
    for statement in create_statements():
        embedded_backend.command(statement)
    data_dir = tmp_path / "data"
    write_key_pair(data_dir / "keys", "authtrail")
    query = "SELECT count() AS n FROM events"
    wrong = http_front.analyst_url.replace(http_front.token, "wrong-token")
    for arguments in (
        ["sql", "--format", "json", query],
        ["status", "--json"],
        ["verify", "--json"],
    ):
        base = ["--data-dir", str(data_dir), *arguments[:1]]
        ran = _authtrail(*base, "--clickhouse-url", http_front.analyst_url, *arguments[1:])
        assert ran.returncode == 0, ran.stderr
        assert "Authentication" not in ran.stderr
        ran = _authtrail(*base, "--clickhouse-url", wrong, *arguments[1:])
        assert ran.returncode == 2 and "wrong-token" not in ran.stderr
        assert "516" in ran.stderr or "Authentication" in ran.stderr, ran.stderr
    ran = _authtrail("--data-dir", str(data_dir), "sql", "--format", "json",
                     "--clickhouse-url", http_front.analyst_url, query)  # fmt: skip
    assert json.loads(ran.stdout) == {"n": 0}


def _authtrail(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authtrail.cli", *arguments],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_front_serves_native_inserts_and_queries(
    embedded_backend: EmbeddedBackend, http_front: HttpFront
) -> None:
    # clickhouse-connect's default path (Native format both ways), not only Arrow.
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=http_front.port, compress=False,
        username="admin", password=urlsplit(http_front.admin_url).password,
    )  # fmt: skip
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
    with ServerBackend(f"{http_front.admin_url}audit") as backend:
        backend.insert_arrow("pairs", pa.table({"k": pa.array([1, 2], pa.uint64())}))
    with ServerBackend(f"{http_front.analyst_url}audit", read_only=True) as backend:
        stored = backend.query_arrow("SELECT count() AS n, currentDatabase() AS db FROM pairs")
        assert stored.to_pylist() == [{"n": 2, "db": "audit"}]
    # The shared session is back on the default database for the next caller.
    assert embedded_backend.query_arrow("SELECT currentDatabase() AS db").to_pylist() == [
        {"db": "default"}
    ]
    with pytest.raises(ConfigurationError, match="no database 'absent'"):
        ServerBackend(f"{http_front.analyst_url}absent")
