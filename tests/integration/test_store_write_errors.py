"""Write errors on the embedded store: a real full disk (a small tmpfs) and a read-only one.

What must hold (docs/RELIABILITY.md § Store write errors): an insert that fails raises one
clear StoreError naming the table, the data directory and "disk full"; none of its rows
are visible; the same insert succeeds once space is freed, exactly once; the sink retries
with backoff, commits no offset past what is stored, and afterwards stores everything
exactly once (``authtrail verify`` exits 0). A read-only data directory is a
configuration error at start-up, named as such.

Real chdb, real files: the disk is a tmpfs mounted for the test (skipped where mounting is
not allowed), filled with a plain file.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chdb.session
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

from authtrail.errors import ConfigurationError, StoreError
from authtrail.sinks.clickhouse_sql import arrow_stream_bytes
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.embedded_writes import INSERT_FILES, NOT_ENOUGH_SPACE, failure_reason
from authtrail.sinks.http_front import HttpFront
from authtrail.sinks.server import ServerBackend
from authtrail.sinks.service import build_sink
from authtrail.sinks.sink import _utc_month
from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG
from authtrail.stream.worker.chained_batch import utc_month
from tests.integration import test_pipeline
from tests.integration.test_pipeline import (
    Pipeline,
    Store,
    _all_signed,
    _assert_exactly_once_and_gapless,
    _stored_count,
    _verify,
)

# The pipeline test's fixtures: a broker per module, fresh topics and keys per test.
broker = test_pipeline.broker
pipeline = test_pipeline.pipeline
store = test_pipeline.store

pytestmark = pytest.mark.integration

DISK_BYTES = 24 * 2**20
TABLE_DDL = (
    "CREATE TABLE t (id UInt64, month DateTime64(6, 'UTC'), payload String) ENGINE = MergeTree "
    "PARTITION BY toYYYYMM(month) ORDER BY id SETTINGS non_replicated_deduplication_window = 100"
)
JANUARY, FEBRUARY = 1_735_732_800_000_000, 1_738_411_200_000_000  # µs, 2025-01-01/02-01 12:00


def _mount(kind: list[str], target: Path) -> None:
    completed = subprocess.run(
        ["mount", *kind, str(target)], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        pytest.skip(f"cannot mount here ({completed.stderr.strip()}); needs root in a VM")


def _unmount(target: Path) -> None:
    subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: a disk that can really fill up."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    _mount(["-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs"], mount_point)
    try:
        yield mount_point
    finally:
        _unmount(mount_point)


class Filler:
    """One file that takes all but ``leave`` bytes of a disk; ``free()`` deletes it."""

    def __init__(self, disk: Path) -> None:
        self.path = disk / "filler"

    def fill(self, leave: int = 0) -> None:
        with self.path.open("ab") as file:
            while True:
                stats = os.statvfs(self.path)
                room = stats.f_bavail * stats.f_frsize - leave
                if room <= 0:
                    break
                try:
                    file.write(b"\0" * min(room, 2**20))
                    file.flush()
                except OSError:  # the last block did not fit: the disk is full
                    break

    def free(self) -> None:
        self.path.unlink(missing_ok=True)


def _rows(start: int, count: int, month: int = FEBRUARY) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(start, start + count), pa.uint64()),
            "month": pa.array([month] * count, pa.timestamp("us", "UTC")),
            "payload": pa.array([os.urandom(48).hex() for _ in range(count)]),
        }
    )


def _count(backend: EmbeddedBackend) -> int:
    return int(backend.query_arrow("SELECT count() FROM t").column(0)[0].as_py())


# -- the embedded backend -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leave", "rows", "engine_refuses"),
    [(0, 30_000, False), (600 * 1024, 100, True)],
    ids=["no-byte-left", "too-little-for-a-part"],
)
def test_insert_on_a_full_disk_fails_clearly_stores_nothing_then_succeeds_once(
    small_disk: Path, leave: int, rows: int, engine_refuses: bool
) -> None:
    """No byte left: writing the insert's data file fails (the OS says ENOSPC). Room for
    the data file but not for a part (chdb reserves at least 1 MiB): the engine refuses
    (NOT_ENOUGH_SPACE). The same answer either way."""
    filler = Filler(small_disk)
    with EmbeddedBackend(small_disk / "clickhouse") as backend:
        backend.command(TABLE_DDL)
        backend.insert_arrow("t", _rows(0, 1000), dedup_token="first")
        batch = _rows(1000, rows)
        filler.fill(leave)

        with pytest.raises(StoreError) as failure:
            backend.insert_arrow("t", batch, dedup_token="second")
        message = str(failure.value)
        assert message.startswith(f"ClickHouse insert of {rows} rows into t failed: disk full in ")
        assert str(small_disk / "clickhouse") in message
        assert "\n" not in message
        assert failure.value.code == NOT_ENOUGH_SPACE
        assert ("NOT_ENOUGH_SPACE" in message) is engine_refuses
        assert _count(backend) == 1000  # nothing of the failed insert is visible
        assert not list((small_disk / "clickhouse" / INSERT_FILES).iterdir())

        filler.free()
        backend.insert_arrow("t", batch, dedup_token="second")
        backend.insert_arrow("t", batch, dedup_token="second")  # a retry of a stored insert
        assert _count(backend) == 1000 + rows
        ids = backend.query_arrow("SELECT min(id), max(id), uniqExact(id) FROM t").to_pylist()
        assert list(ids[0].values()) == [0, 999 + rows, 1000 + rows]


def test_insert_over_http_on_a_full_disk_fails_clearly_then_succeeds_once(small_disk: Path) -> None:
    """The server path (clickhouse-connect to the HTTP front of the store, as the sink
    with ``--clickhouse-url``): the client gets the same error, code and all."""
    filler = Filler(small_disk)
    with (
        EmbeddedBackend(small_disk / "clickhouse") as owner,
        # Writes need the writer, who may insert into its tables only (here: t).
        HttpFront(owner, writer_token="sink-token", writer_tables=("t",)) as front,
    ):
        owner.command(TABLE_DDL)
        with ServerBackend(front.writer_url, connect_timeout=5) as client:
            batch = _rows(0, 100)
            filler.fill(600 * 1024)
            with pytest.raises(StoreError) as failure:
                client.insert_arrow("t", batch, dedup_token="over-http")
            assert failure.value.code == NOT_ENOUGH_SPACE
            assert "disk full in " + str(small_disk / "clickhouse") in str(failure.value)
            assert _count(owner) == 0
            filler.free()
            client.insert_arrow("t", batch, dedup_token="over-http")
            client.insert_arrow("t", batch, dedup_token="over-http")
            assert _count(owner) == 100


def test_insert_spanning_two_partitions_on_a_full_disk_stores_neither(small_disk: Path) -> None:
    """One insert, two monthly partitions, so two parts: a small one that would fit and a
    large one that does not. The engine writes both before committing either."""
    filler = Filler(small_disk)
    with EmbeddedBackend(small_disk / "clickhouse") as backend:
        backend.command(TABLE_DDL)
        batch = pa.concat_tables([_rows(0, 1, JANUARY), _rows(1, 30_000, FEBRUARY)])
        filler.fill(1600 * 1024)  # more than one small part reserves (1 MiB)
        with pytest.raises(StoreError, match="disk full"):
            backend.insert_arrow("t", batch, dedup_token="both")
        assert _count(backend) == 0
        filler.free()
        backend.insert_arrow("t", batch, dedup_token="both")
        months = backend.query_arrow(
            "SELECT toYYYYMM(month) AS m, count() AS n FROM t GROUP BY m ORDER BY m"
        ).to_pylist()
        assert months == [{"m": 202501, "n": 1}, {"m": 202502, "n": 30_000}]


def test_chdb_streaming_insert_still_loses_disk_full_errors(small_disk: Path) -> None:
    """Why EmbeddedBackend inserts through a file: chdb 4.4's ``send_insert`` reports the
    rows written and stores none on a full disk. When this test fails, chdb reports the
    error now, and sinks/embedded_writes.py may go back to the (faster) streaming insert."""
    filler = Filler(small_disk)
    session: Any = chdb.session.Session(str(small_disk / "raw"))  # type: ignore[no-untyped-call]
    try:
        session.query(TABLE_DDL)
        filler.fill(600 * 1024)
        with session.send_insert("INSERT INTO t (id, month, payload)", "ArrowStream") as insert:
            insert.append(arrow_stream_bytes(_rows(0, 30_000)))
            result = insert.finish()
        stored = int(session.query("SELECT count() FROM t", "CSV").bytes())
    finally:
        session.close()
    assert (result.rows_written, stored) == (30_000, 0)


def test_a_read_only_data_directory_is_a_configuration_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    EmbeddedBackend(store / "clickhouse").close()
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    _mount(["--bind", "-o", "ro", str(store)], read_only)
    try:
        with pytest.raises(ConfigurationError) as failure:
            EmbeddedBackend(read_only / "clickhouse")
    finally:
        _unmount(read_only)
    message = str(failure.value)
    assert "read-only file system" in message and str(read_only / "clickhouse") in message
    assert "another process" not in message  # not the ownership hint of a held directory


@pytest.mark.parametrize(
    ("message", "os_errno", "reason"),
    [
        ("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space.", None, "disk full"),
        ("Cannot write to file /x/y.bin, errno: 28, strerror: No space left", None, "disk full"),
        ("Cannot open file /x/status: , errno: 30, strerror: Read-only file system", None,
         "read-only file system"),
        ("Cannot read from file, errno: 5, strerror: Input/output error", None, "I/O error"),
        ("[Errno 28] No space left on device", 28, "disk full"),
        ("Code: 75. DB::Exception: Cannot write to file descriptor", None, "write failed"),
        ("Code: 62. DB::Exception: Syntax error", None, None),
        ("Code: 60. DB::Exception: Table default.t does not exist", None, None),
    ],
)  # fmt: skip
def test_failure_reason_in_plain_words(message: str, os_errno: int | None, reason: str) -> None:
    assert failure_reason(message, os_errno) == reason


def test_the_sinks_month_runs_agree_with_the_engines_partitions(tmp_path: Path) -> None:
    """Each run the sink inserts must be exactly one part: its month is toYYYYMM's."""
    day = 86_400_000_000
    values = [JANUARY - day * 11, JANUARY + day * 30, JANUARY + day * 30 + 43_199_999_999,
              FEBRUARY - 12 * 3_600_000_000, 0, -1, 1_709_208_000_000_000]  # fmt: skip
    with EmbeddedBackend(tmp_path / "clickhouse") as backend:
        months = backend.query_arrow(
            "SELECT toYYYYMM(fromUnixTimestamp64Micro(value, 'UTC')) AS month "
            f"FROM (SELECT arrayJoin([{', '.join(map(str, values))}]) :: Int64 AS value)"
        ).column("month")
    engine = [int(month) for month in months.to_pylist()]
    assert [_utc_month(value) for value in values] == engine
    assert [utc_month(value) for value in values] == engine  # the worker's, for its batches


# -- the sink ---------------------------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _committed_beyond_stored(pipeline: Pipeline, backend: EmbeddedBackend) -> list[str]:
    """Sink offsets committed to Kafka past the highest offset stored, per partition."""
    settings = pipeline.settings
    table = backend.query_arrow(
        "SELECT kafka_partition AS p, max(kafka_offset) AS o FROM events GROUP BY p"
    )
    stored = {row["p"]: row["o"] for row in table.to_pylist()}
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{settings.consumer_group}-sink",
        }
    )
    try:
        partitions = [TopicPartition(settings.chained_topic, p) for p in range(settings.partitions)]
        committed = consumer.committed(partitions, timeout=10)
    finally:
        consumer.close()
    return [
        f"partition {tp.partition}: committed {tp.offset}, stored up to {stored.get(tp.partition)}"
        for tp in committed
        if tp.offset >= 0 and tp.offset - 1 > stored.get(tp.partition, -1)
    ]


@pytest.fixture
def store_on_small_disk(pipeline: Pipeline, small_disk: Path) -> Iterator[Path]:
    """The pipeline's store directory, bind-mounted onto ``small_disk`` (so everything
    chdb writes fills it) until the test ends, however it ends."""
    clickhouse_dir = pipeline.settings.data_dir / "clickhouse"
    clickhouse_dir.mkdir(parents=True, exist_ok=True)
    _mount(["--bind", str(small_disk)], clickhouse_dir)
    try:
        yield clickhouse_dir
    finally:
        _unmount(clickhouse_dir)


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
def test_sink_on_a_full_disk_retries_commits_nothing_unstored_and_resumes_exactly_once(
    pipeline: Pipeline, store: Store, small_disk: Path, store_on_small_disk: Path
) -> None:
    clickhouse_dir = store_on_small_disk
    filler = Filler(small_disk)
    lines = _Lines()
    logging.getLogger("authtrail.sinks.sink").addHandler(lines)
    pipeline.start_worker()
    backend = EmbeddedBackend(clickhouse_dir)
    settings = pipeline.settings
    sink = build_sink(settings, backend, consumer_config=SHORT_CONSUMER_CONFIG)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    try:
        first = pipeline.produce(500, seed=11)
        deadline = time.monotonic() + 90
        while _stored_count(backend) < len(first) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _stored_count(backend) >= len(first), "the sink must store before the disk fills"

        filler.fill(0)
        second = pipeline.produce(1500, seed=12)
        deadline = time.monotonic() + 60
        while not any("disk full" in line for line in lines.lines):
            assert time.monotonic() < deadline, f"no disk-full line in {lines.lines}"
            time.sleep(0.2)
        time.sleep(3)  # several retries
        stalled = _stored_count(backend)
        failures = [line for line in lines.lines if "disk full" in line]
        assert stalled < len(first) + len(second)
        assert len(failures) >= 2, failures  # repeated while it lasts
        assert str(clickhouse_dir) in failures[0] and "retry 1 in 0.5 s" in failures[0]
        assert _committed_beyond_stored(pipeline, backend) == []

        filler.free()
        deadline = time.monotonic() + 120
        total = len(first) + len(second)
        while not (_stored_count(backend) >= total and _all_signed(backend)):
            assert time.monotonic() < deadline, f"stored {_stored_count(backend)} of {total}"
            time.sleep(0.5)
        # Logged when the retried flush returns, a moment after its rows are visible.
        while not any(line.startswith("storing again after") for line in lines.lines):
            assert time.monotonic() < deadline, f"no 'storing again' line in {lines.lines}"
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(60)
        backend.close()
        logging.getLogger("authtrail.sinks.sink").removeHandler(lines)
    _assert_exactly_once_and_gapless(store, first + second)
    assert _verify(pipeline, store) == 0
