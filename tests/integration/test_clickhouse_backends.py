"""Both ClickHouse backends against the real engine: chdb in-process, and clickhouse-connect
over real HTTP to the front serving that engine. Known answers and refused tampering."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from authtrail.errors import ConfigurationError, InvalidArgumentError, StoreError
from authtrail.sinks.clickhouse import ClickHouseBackend, EmbeddedBackend, ServerBackend
from tests.integration.clickhouse_samples import (
    EVENTS_DDL,
    ROWS,
    assert_same_values,
    count,
    make_events,
)

pytestmark = pytest.mark.integration

# Values that break naive quoting one way or another; each must bind as itself.
HOSTILE_TEXTS = [
    "it's",
    "a\\'b",
    "x'; DROP TABLE events; --",
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash\\",
    "`tick`",
    '"double"',
    "\\N",
    "NULL",
    "{tenant:String}",
    "ünïcode ✓",
    "",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def events_100k() -> pa.Table:
    return make_events(ROWS)


# -- both backends ---------------------------------------------------------------------------


def test_100k_rows_round_trip_exactly(
    clickhouse_backend: ClickHouseBackend, events_100k: pa.Table
) -> None:
    clickhouse_backend.command(EVENTS_DDL)
    clickhouse_backend.insert_arrow("events", events_100k, dedup_token="batch-1")
    assert count(clickhouse_backend) == ROWS
    stored = clickhouse_backend.query_arrow("SELECT * FROM events ORDER BY tenant_id, seq")
    assert_same_values(stored, events_100k)
    assert stored.column("leaf_hash")[0].as_py() == events_100k.column("leaf_hash")[0].as_py()


def test_tampered_row_is_not_equal(clickhouse_backend: ClickHouseBackend) -> None:
    # The comparison above must be able to fail: one changed byte in one hash is seen.
    events = make_events(1000)
    clickhouse_backend.command(EVENTS_DDL)
    clickhouse_backend.insert_arrow("events", events)
    clickhouse_backend.command(
        "ALTER TABLE events UPDATE leaf_hash = toFixedString(unhex(repeat('00', 32)), 32) "
        "WHERE seq = 5 AND tenant_id = 'tenant-3' SETTINGS mutations_sync = 2"
    )
    stored = clickhouse_backend.query_arrow("SELECT * FROM events ORDER BY tenant_id, seq")
    with pytest.raises(AssertionError, match="leaf_hash"):
        assert_same_values(stored, events)


def test_same_dedup_token_adds_nothing_and_new_token_adds_rows(
    clickhouse_backend: ClickHouseBackend, events_100k: pa.Table
) -> None:
    clickhouse_backend.command(EVENTS_DDL)
    clickhouse_backend.insert_arrow("events", events_100k, dedup_token="events:0:0:100000")
    clickhouse_backend.insert_arrow("events", events_100k, dedup_token="events:0:0:100000")
    assert count(clickhouse_backend) == ROWS
    clickhouse_backend.insert_arrow("events", events_100k, dedup_token="events:0:100000:100000")
    assert count(clickhouse_backend) == 2 * ROWS
    # A token full of quoting characters is still a literal, and still deduplicates.
    small = make_events(10)
    for _ in range(2):
        clickhouse_backend.insert_arrow("events", small, dedup_token="it's a \\ 'token'")
    assert count(clickhouse_backend) == 2 * ROWS + 10


def test_query_parameters_bind_hostile_values_as_data(
    clickhouse_backend: ClickHouseBackend,
) -> None:
    clickhouse_backend.command(EVENTS_DDL)
    tenants = make_events(len(HOSTILE_TEXTS)).set_column(0, "tenant_id", pa.array(HOSTILE_TEXTS))
    clickhouse_backend.insert_arrow("events", tenants)
    for text in HOSTILE_TEXTS:
        echoed = clickhouse_backend.query_arrow("SELECT {value:String} AS v", {"value": text})
        assert echoed.column("v").to_pylist() == [text]
        found = clickhouse_backend.query_arrow(
            "SELECT tenant_id FROM events WHERE tenant_id = {tenant:String}", {"tenant": text}
        )
        assert found.column(0).to_pylist() == [text]
    assert count(clickhouse_backend) == len(HOSTILE_TEXTS)  # the DROP in a value did nothing
    numbers = clickhouse_backend.query_arrow(
        "SELECT {big:UInt64} AS big, {small:Int64} AS small, hex({raw:String}) AS raw, "
        "isNull({missing:Nullable(String)}) AS missing",
        {"big": 2**64 - 1, "small": -(2**63), "raw": b"\x00\xff'\\\n", "missing": None},
    )
    assert numbers.to_pylist() == [
        {"big": 2**64 - 1, "small": -(2**63), "raw": "00FF275C0A", "missing": True}
    ]


def test_query_parameters_refuse_wrong_values(clickhouse_backend: ClickHouseBackend) -> None:
    with pytest.raises(StoreError):  # the engine parses the value as the declared type
        clickhouse_backend.query_arrow("SELECT {n:UInt64}", {"n": "1 OR 1 = 1"})
    with pytest.raises(StoreError):
        clickhouse_backend.query_arrow("SELECT {n:UInt64}", {})
    with pytest.raises(InvalidArgumentError):
        clickhouse_backend.query_arrow("SELECT {n:Float64}", {"n": 1.5})
    with pytest.raises(InvalidArgumentError):
        clickhouse_backend.query_arrow("SELECT {n:UInt8}", {"n": True})
    with pytest.raises(InvalidArgumentError):
        clickhouse_backend.query_arrow("SELECT 1", {"bad-name": "x"})


def test_engine_errors_are_store_errors_with_codes(clickhouse_backend: ClickHouseBackend) -> None:
    with pytest.raises(StoreError) as unknown_table:
        clickhouse_backend.query_arrow("SELECT * FROM no_such_table")
    assert unknown_table.value.code == 60
    with pytest.raises(StoreError) as syntax:
        clickhouse_backend.command("SELEKT 1")
    assert syntax.value.code == 62
    with pytest.raises(StoreError):
        clickhouse_backend.insert_arrow("no_such_table", make_events(3))
    clickhouse_backend.command(EVENTS_DDL)
    with pytest.raises(InvalidArgumentError):
        clickhouse_backend.insert_arrow("events; DROP TABLE events", make_events(3))
    assert count(clickhouse_backend) == 0


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("seq", pa.array(["one", "2", "3"])),  # chdb's Python() table function stored 0
        ("leaf_hash", pa.array([b"\x01" * 33] * 3)),  # Python() stored 32 zero bytes
        ("seq", pa.array([1, None, 3], pa.uint64())),  # ClickHouse's default: store 0
        ("tenant_id", pa.array(["a", None, "c"])),
    ],
    ids=["text-into-UInt64", "33-bytes-into-FixedString32", "null-UInt64", "null-String"],
)
def test_values_that_do_not_fit_are_refused_not_coerced(
    clickhouse_backend: ClickHouseBackend, column: str, values: pa.Array
) -> None:
    clickhouse_backend.command(EVENTS_DDL)
    events = make_events(3)
    damaged = events.set_column(events.column_names.index(column), column, values)
    with pytest.raises(StoreError):
        clickhouse_backend.insert_arrow("events", damaged)
    assert count(clickhouse_backend) == 0


def test_multi_statement_text_is_refused(clickhouse_backend: ClickHouseBackend) -> None:
    clickhouse_backend.command(EVENTS_DDL)
    with pytest.raises(StoreError):
        clickhouse_backend.command("SELECT 1; DROP TABLE events")
    assert count(clickhouse_backend) == 0  # the table is still there


# -- read-only mode ---------------------------------------------------------------------------

WRITES = [
    "INSERT INTO events (tenant_id, seq) VALUES ('forged', 1)",
    "ALTER TABLE events DELETE WHERE 1",
    "ALTER TABLE events UPDATE reason = 'x' WHERE 1",
    "DROP TABLE events",
    "TRUNCATE TABLE events",
    "CREATE TABLE other (x UInt8) ENGINE = Memory",
    "  /* hidden */ (DROP TABLE events)",
    "SELECT 1; DROP TABLE events",
    "SET readonly = 0",
    "OPTIMIZE TABLE events FINAL",
]


@pytest.fixture(params=["embedded", "server"])
def read_only_backend(
    request: pytest.FixtureRequest, chdb_dir: Path
) -> Iterator[ClickHouseBackend]:
    """A read-only backend over a store holding 100 events."""
    if request.param == "embedded":
        with EmbeddedBackend(chdb_dir) as writer:
            writer.command(EVENTS_DDL)
            writer.insert_arrow("events", make_events(100))
        with EmbeddedBackend(chdb_dir, read_only=True) as reader:
            yield reader
        return
    writer = request.getfixturevalue("embedded_backend")
    writer.command(EVENTS_DDL)
    writer.insert_arrow("events", make_events(100))
    front = request.getfixturevalue("http_front")
    with ServerBackend(front.analyst_url, read_only=True) as reader:
        yield reader


@pytest.mark.parametrize("statement", WRITES)
def test_read_only_refuses_writes(read_only_backend: ClickHouseBackend, statement: str) -> None:
    with pytest.raises(StoreError) as refused:
        read_only_backend.command(statement)
    assert refused.value.code == 164
    with pytest.raises(StoreError):
        read_only_backend.query_arrow(statement)
    assert count(read_only_backend) == 100


def test_read_only_reads_and_refuses_inserts_and_outfiles(
    read_only_backend: ClickHouseBackend, tmp_path: Path
) -> None:
    recent = read_only_backend.query_arrow(
        "WITH {tenant:String} AS wanted SELECT max(seq) FROM events WHERE tenant_id = wanted",
        {"tenant": "tenant-1"},
    )
    assert recent.column(0).to_pylist() == [15]  # i = 99 is the last i with i % 7 == 1
    assert "events" in read_only_backend.query_arrow("SHOW TABLES").column(0).to_pylist()
    with pytest.raises(StoreError):
        read_only_backend.insert_arrow("events", make_events(1))
    outfile = tmp_path / "leak.csv"
    with pytest.raises(StoreError):
        read_only_backend.query_arrow(f"SELECT * FROM events INTO OUTFILE '{outfile}'")
    assert not outfile.exists()
    assert count(read_only_backend) == 100


# -- server URL, reachability, credentials -----------------------------------------------------


def test_closed_port_is_a_quick_configuration_error() -> None:
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as unreachable:
        ServerBackend(f"http://auditor:pa55word@127.0.0.1:{free_port()}/audit", connect_timeout=2)
    assert time.monotonic() - started < 3
    message = str(unreachable.value)
    assert "connection refused" in message and "pa55word" not in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    "url",
    ["ftp://host/db", "http:///db", "http://host:notaport/db", "http://host:8123/a/b", "host:8123"],
)
def test_malformed_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        ServerBackend(url, connect_timeout=1)


def test_concurrent_inserts_through_front_and_embedded(
    embedded_backend: EmbeddedBackend, server_backend: ServerBackend
) -> None:
    # chdb deadlocks on concurrent Python() inserts unless the backend serialises them.
    embedded_backend.command(EVENTS_DDL)
    failures: list[BaseException] = []

    def insert(backend: ClickHouseBackend, start: int) -> None:
        try:
            for batch in range(5):
                backend.insert_arrow("events", make_events(500, start + batch * 500))
        except BaseException as exc:  # reported below; a thread cannot raise into pytest
            failures.append(exc)

    workers = [
        threading.Thread(target=insert, args=(backend, index * 2500))
        for index, backend in enumerate([embedded_backend, server_backend] * 2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not any(worker.is_alive() for worker in workers), "inserts deadlocked"
    assert failures == []
    assert count(embedded_backend) == 4 * 2500


def test_long_read_only_query_does_not_stall_inserts(embedded_backend: EmbeddedBackend) -> None:
    # `authtrail sql` through the front runs on the read-only connection, beside the sink.
    embedded_backend.command(EVENTS_DDL)
    slow = threading.Thread(
        target=embedded_backend.execute,
        args=("SELECT sleepEachRow(0.5) FROM numbers(4) SETTINGS max_block_size = 1",),
        kwargs={"output_format": "TabSeparated", "read_only": True},
    )
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    embedded_backend.insert_arrow("events", make_events(1000))
    inserted_after = time.monotonic() - started
    slow.join(timeout=10)
    assert inserted_after < 1.0, "the insert waited for the read-only query"
    assert count(embedded_backend) == 1000


def test_two_read_only_callers_are_served_at_once(chdb_dir: Path) -> None:
    # A prover reads the event row on one read-only connection while it reads the
    # checkpoint on the other: a held connection must not make the other caller wait.
    with EmbeddedBackend(chdb_dir) as writer:
        writer.command(EVENTS_DDL)
        writer.insert_arrow("events", make_events(10))
    with EmbeddedBackend(chdb_dir, read_only=True) as reader:
        answers: list[int] = []
        with reader._connection(read_only=True):  # held by "another caller"
            other = threading.Thread(target=lambda: answers.append(count(reader)))
            other.start()
            other.join(timeout=60)
            assert not other.is_alive(), "the second read-only caller waited for the first"
        assert answers == [10]


def test_read_only_store_rereads_its_catalog_after_a_write_in_this_process(
    chdb_dir: Path, tmp_path: Path
) -> None:
    # The guard keeps a read-only store's catalog between statements; a table replaced by
    # one that reads a file (through a writing backend of the same process) must be seen.
    secret = tmp_path / "secret.key"
    secret.write_text("PRIVATE+KEY+stolen\n")
    with EmbeddedBackend(chdb_dir) as writer:
        writer.command("CREATE TABLE notes (line String) ENGINE = MergeTree ORDER BY line")
        writer.command("INSERT INTO notes VALUES ('harmless')")
        with EmbeddedBackend(chdb_dir, read_only=True) as reader:
            assert reader.query_arrow("SELECT line FROM notes").column(0).to_pylist() == [
                "harmless"
            ]
            writer.command("DROP TABLE notes")
            file_engine = f"File(LineAsString, '{secret}')"
            writer.command(f"CREATE TABLE notes (line String) ENGINE = {file_engine}")
            with pytest.raises(StoreError) as refused:
                reader.query_arrow("SELECT line FROM notes")
            assert refused.value.code == 497, refused.value
            assert "File" in str(refused.value)


# -- the embedded store on disk ---------------------------------------------------------------


def test_embedded_data_survives_close_and_reopen(chdb_dir: Path) -> None:
    events = make_events(5000)
    with EmbeddedBackend(chdb_dir) as backend:
        backend.command(EVENTS_DDL)
        backend.insert_arrow("events", events)
    for read_only in (False, True):
        with EmbeddedBackend(chdb_dir, read_only=read_only) as backend:
            stored = backend.query_arrow("SELECT * FROM events ORDER BY tenant_id, seq")
            assert_same_values(stored, events)


def test_embedded_read_only_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        EmbeddedBackend(tmp_path / "absent", read_only=True)


def test_one_directory_per_process(chdb_dir: Path, tmp_path: Path) -> None:
    with EmbeddedBackend(chdb_dir), pytest.raises(ConfigurationError, match="one per process"):
        EmbeddedBackend(tmp_path / "second")


def test_directory_owned_by_another_process(chdb_dir: Path) -> None:
    owner_code = (
        "import sys; from chdb.session import Session; s = Session(sys.argv[1]); "
        "print('ready', flush=True); sys.stdin.read(); s.close()"
    )
    chdb_dir.mkdir()
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_code, str(chdb_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline() == b"ready\n"
        with pytest.raises(ConfigurationError, match=f"PID {owner.pid}"):
            EmbeddedBackend(chdb_dir)
    finally:
        assert owner.stdin is not None
        owner.stdin.close()
        try:
            owner.wait(timeout=15)
        except subprocess.TimeoutExpired:
            owner.kill()
            owner.wait()
    with EmbeddedBackend(chdb_dir) as backend:  # free again once the owner has gone
        assert backend.query_arrow("SELECT 1 AS one").to_pylist() == [{"one": 1}]
