"""The ClickHouse sink: chained records, checkpoints and rejections → append-only tables.

Correctness rests on ClickHouse, not on Kafka's committed offsets:

* every row stores the Kafka partition and offset it came from; on (re)assignment the sink
  resumes each partition after the highest offset already stored, so a crash between the
  insert and the offset commit replays nothing twice;
* a batch is inserted with a deduplication token, so retrying the same insert after a
  timeout adds no rows; its rows are then counted, and inserted again under a new token if
  the engine dropped them although they are not stored (sinks/lost_inserts.py). On the
  embedded store, which no other process can write to, records written to Kafka after
  the sink was assigned their partition are not counted: no earlier process can have
  recorded a token naming them (:meth:`Sink._counted`);
* a record whose ``seq`` is already stored for its tenant (the sequencer published it
  twice) is skipped; a checkpoint is held back until the records it covers are stored, so
  analysts never see a checkpoint ahead of its records.

Chained records arrive in batches (stream/worker/chained_batch.py) whose bodies go to ClickHouse
as one Native block, rewritten in C (sinks/native_rows.py; an Avro container,
sinks/avro_rows.py, where that module is not built), never decoded here: the batch's header
says its epoch, tenant ranges and month, which is all the checks above need. Only a batch
partly stored already (a replay) is decoded, to keep the records not stored yet.

The chained topic also carries chained rejections (stream/core/rejection.py), stored in
``rejected``. Those are inserted before the events of the same batch and the resume point
is the highest offset in ``events``: a crash between the two inserts makes the sink read
the rejections again, and their ``seq`` check drops them, but never skips an event.

Offsets are committed to Kafka after each insert only so that lag is visible in the usual
tools.

Once at start, after a flush at most every few seconds, and when stopping, the tile
entries (sinks/tile_store.py) that the stored records completed are appended, so proofs
read O(log n) stored hashes (the newest fall back to the leaves until then).

With a publication (sinks/publication.py, policy in sinks/publishing.py) every stored
checkpoint is also published outside the store, right after its insert and before the
offsets are committed; the checkpoints a crash left unpublished are published at start.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from authtrail.errors import ConfigurationError, FormatError, StoreError
from authtrail.schemas.codec import SINGLE_OBJECT_MARKER, Codec, SingleObjectCodec
from authtrail.sinks.avro_rows import kafka_suffix
from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.lost_inserts import (
    KEY_COLUMNS,
    Insert,
    insert_until_stored,
    key_ranges,
    stored_counter,
)
from authtrail.sinks.native_rows import MalformedRows, Rows, event_rows
from authtrail.sinks.proofs import TilesOrLeaves
from authtrail.sinks.publication import Publication
from authtrail.sinks.publishing import CheckpointPublishing
from authtrail.sinks.rows import (
    CHECKPOINTS_SCHEMA,
    REJECTED_SCHEMA,
    checkpoint_row,
    rejected_row,
    to_arrow,
)
from authtrail.sinks.schema_setup import ensure_schema
from authtrail.sinks.tables import CHECKPOINTS_TABLE, EVENTS_TABLE, MONTH_COLUMNS, REJECTED_TABLE
from authtrail.sinks.tile_builder import TileBuilder
from authtrail.sinks.witnessing import CheckpointWitnessing
from authtrail.stream.worker.chained_batch import decode_batch, is_batch, utc_month
from authtrail.stream.worker.fencing import Fence
from authtrail.witness_client import WitnessSubmitter

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")
_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 30.0
_POLL_SECONDS = 0.2  # the longest a consume waits: the stop flag is looked at this often
_NO_OFFSET = 2**63  # a partition whose end offset at assignment is unknown: never fresh


@dataclass
class _Buffer:
    rows: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> last offset


class SinkObserver(Protocol):
    """Metrics hooks (authtrail/metrics.py :class:`SinkMetrics`); None: not observed."""

    def inserted(self, table: str, rows: int) -> None:
        """``rows`` were stored in ``table`` by one insert."""

    def stored_batch(self, newest_occurred_at: int) -> None:
        """A chained message's records were stored; the newest event in it (µs)."""


@dataclass
class _Chunk:
    """The records of one chained-topic message to store: one block of ``container``'s."""

    container: Rows
    month: int
    block: Any  # what container.block() made of the records
    count: int
    partition: int
    offset: int
    last_seq: dict[str, int]  # tenant -> its last seq in the block
    newest_occurred_at: int
    keys: list[tuple[str, int]]  # (tenant, seq): at least each tenant's first and last


@dataclass
class SinkCounters:
    stored_records: int = 0
    stored_checkpoints: int = 0
    stored_rejected: int = 0
    skipped_duplicates: int = 0
    fenced: int = 0
    published_checkpoints: int = 0
    published_directories: int = 0
    # Stored checkpoints the publication refused: another file at their place, or a row
    # whose note is not the checkpoint it says (logged at ERROR; verify names the tenant).
    publication_conflicts: int = 0
    # Witness cosignatures on published checkpoints (sinks/witnessing.py): obtained; not,
    # because the witness was unreachable (or resting after that), refused or answered
    # with no valid cosignature of its key, or the store could not give the proof.
    witness_cosignatures: int = 0
    witness_unreachable: int = 0
    witness_refusals: int = 0
    witness_errors: int = 0
    # Inserts whose rows were counted afterwards (sinks/lost_inserts.py), and inserts of
    # records no earlier process can have inserted, which need no count (Sink._counted).
    counted_inserts: int = 0
    uncounted_inserts: int = 0


class Sink:
    """Consumes the chained and checkpoints topics and stores them; :meth:`run` until
    ``stop`` is set.

    With ``publication``, stored checkpoints are also published there, and a tenant
    directory at most every ``publication_interval`` seconds (sinks/publishing.py); with
    ``witnesses`` too, each is cosigned by them first (sinks/witnessing.py).

    Tile entries are appended at most every ``tiles_seconds`` (every flush with
    ``witnesses``), and when :meth:`run` stops.
    """

    def __init__(
        self,
        backend: ClickHouseBackend,
        *,
        bootstrap_servers: str,
        topics: Mapping[str, str],  # table name -> topic name
        codecs: Mapping[str, Codec],  # table name -> codec
        claim_codec: Codec,
        group_id: str = "authtrail-sink",
        batch_rows: int = 5000,
        batch_seconds: float = 1.0,
        tiles_seconds: float = 5.0,
        consumer_config: Mapping[str, Any] | None = None,
        publication: Publication | None = None,
        publication_interval: float = 10.0,
        rejection_codec: Codec | None = None,
        witnesses: WitnessSubmitter | None = None,
        batch_codec: SingleObjectCodec,
    ) -> None:
        chained_codec = codecs[EVENTS_TABLE]
        if not isinstance(chained_codec, SingleObjectCodec):
            raise ConfigurationError("chained records must be single-object encoded")
        self._chained_codec = chained_codec
        self._batch_codec = batch_codec
        self._backend = backend
        self._topics = dict(topics)
        self._tables = {topic: table for table, topic in self._topics.items()}
        self._codecs = codecs
        self._batch_rows = batch_rows
        self._batch_seconds = batch_seconds
        self.counters = SinkCounters()
        self.observer: SinkObserver | None = None
        if witnesses is not None and publication is None:
            raise ConfigurationError("cosigning witnesses need a publication: cosigned "
                                     "checkpoints are published, never stored")  # fmt: skip
        witnessing = (
            CheckpointWitnessing(witnesses, TilesOrLeaves(backend), self.counters)
            if witnesses is not None
            else None
        )
        self._publishing = (
            CheckpointPublishing(
                publication, self.counters, interval=publication_interval, witnessing=witnessing
            )
            if publication is not None
            else None
        )
        ensure_schema(backend)  # no DDL when init-db made everything: a writer suffices
        self._stored_seq = self._query_pairs(
            f"SELECT tenant_id, max(seq) FROM {EVENTS_TABLE} GROUP BY tenant_id"
        ) | self._query_pairs(
            f"SELECT assumeNotNull(chain_tenant_id), max(assumeNotNull(seq)) FROM "
            f"{REJECTED_TABLE} WHERE chain_tenant_id IS NOT NULL GROUP BY chain_tenant_id"
        )
        self._stored_size = self._query_pairs(
            f"SELECT tenant_id, max(size) FROM {CHECKPOINTS_TABLE} GROUP BY tenant_id"
        )
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                **(consumer_config or {}),
            }
        )
        self._cluster = _cluster_id(self._consumer)
        self._claim_codec = claim_codec
        self._claim_fingerprint = claim_codec.reader_fingerprint  # type: ignore[attr-defined]
        self._fences: dict[tuple[str, int], Fence] = {}
        # (topic, partition) -> its end offset when this process, the store's only writer,
        # was assigned it: records from there on were never read by an earlier process.
        self._fresh_from: dict[tuple[str, int], int] = {}
        self._insert_failed = False  # any insert of this sink raised: count every one
        self._rejection_codec = rejection_codec
        # Every version's: rejections written before a schema change are still rejections.
        self._rejection_fingerprints: frozenset[bytes] = getattr(
            rejection_codec, "known_fingerprints", frozenset()
        )
        self._buffers = {table: _Buffer() for table in (*self._topics, REJECTED_TABLE)}
        self._chunks: list[_Chunk] = []  # events to store; their offsets are in _buffers
        self._chunk_rows = 0
        self._held_checkpoints: list[tuple[dict[str, Any], int, int]] = []
        self._tiles = TileBuilder(backend)
        self._tile_leaves: dict[str, int] = {}  # tenant -> stored seq, tiles not extended yet
        # Witnesses ask for a consistency proof per checkpoint: tiles first, every flush.
        # Without them a round (0.1-0.4 s at 100 tenants) comes after the checkpoints, so
        # it does not hold back their signatures' arrival in the store.
        self._tiles_first = witnesses is not None
        self._tiles_seconds = 0.0 if witnesses is not None else tiles_seconds
        self._next_tiles = 0.0  # monotonic time the tiles may be extended again
        self._first_buffered: float | None = None
        self._stop: threading.Event | None = None

    def _query_pairs(self, sql: str) -> dict[str, int]:
        table = self._backend.query_arrow(sql)
        return dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))

    def _stored_offsets(self, table: str) -> dict[int, int]:
        # Offsets mean something only within one Kafka cluster: a new (e.g. restarted
        # in-memory) cluster starts from its beginning, and the (tenant, seq) check drops
        # what is already stored.
        sql = (
            f"SELECT kafka_partition, max(kafka_offset) FROM {table} "
            "WHERE kafka_cluster = {cluster:String} GROUP BY kafka_partition"
        )
        result = self._backend.query_arrow(sql, {"cluster": self._cluster})
        return dict(zip(result.column(0).to_pylist(), result.column(1).to_pylist(), strict=True))

    def _fence(self, table: str, partition: int) -> Fence:
        return self._fences.setdefault((table, partition), Fence())

    def _stored_epochs(self, table: str) -> dict[int, int]:
        sql = (
            f"SELECT kafka_partition, max(epoch) FROM {table} "
            "WHERE kafka_cluster = {cluster:String} GROUP BY kafka_partition"
        )
        result = self._backend.query_arrow(sql, {"cluster": self._cluster})
        return dict(zip(result.column(0).to_pylist(), result.column(1).to_pylist(), strict=True))

    def _take_partitions(self) -> None:
        """Subscribe to the topics in the sink's consumer group; or, on a store only this
        process can write (embedded), assign itself every partition of them.

        Only one sink can run on such a store, so a group would share nothing, and the
        resume points come from the store, not from the group's offsets. Group membership
        would only add the join's wait (3 s and more) and the broker's group bookkeeping to
        every start: the local broker (tansu 0.6) can even elect a member that left during
        a join as the leader of the next one, and then no member is ever assigned a
        partition (docs/RELIABILITY.md). Partitions added to a topic later are taken at the
        next start. Offsets are still committed under the group id, for lag tools.
        """
        if not self._backend.sole_writer:
            self._consumer.subscribe(list(self._tables), on_assign=self._on_assign)
            return
        topics = self._consumer.list_topics(timeout=30).topics
        partitions = []
        for topic in self._tables:
            metadata = topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                why = metadata.error if metadata is not None else "not in the cluster's metadata"
                raise ConfigurationError(f"cannot read topic {topic!r}: {why}")
            partitions += [TopicPartition(topic, number) for number in sorted(metadata.partitions)]
        self._set_resume_points(self._consumer, partitions)
        self._consumer.assign(partitions)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._set_resume_points(consumer, partitions)
        consumer.incremental_assign(partitions)

    def _set_resume_points(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Point each of ``partitions`` just past the highest offset the store holds from it
        (the beginning when none)."""
        stored = self._retrying(
            lambda: {table: self._stored_offsets(table) for table in self._topics}
        )
        # Resuming mid-partition: the claims before the resume point are not re-read, but
        # no stored row is older than the epoch it was written in.
        for table in (EVENTS_TABLE, CHECKPOINTS_TABLE):
            epochs = self._retrying(functools.partial(self._stored_epochs, table))
            for number, epoch in epochs.items():
                self._fence(table, number).claim(epoch)
        for partition in partitions:
            table = self._tables[partition.topic]
            last = stored[table].get(partition.partition)
            partition.offset = last + 1 if last is not None else -2  # -2: OFFSET_BEGINNING
            if self._backend.sole_writer:
                self._note_fresh_from(consumer, partition.topic, partition.partition, last)

    def _note_fresh_from(
        self, consumer: Consumer, topic: str, partition: int, stored: int | None
    ) -> None:
        """Remember the partition's end offset now, unless the broker does not say or the
        store holds rows from that offset on (``stored``: the highest offset stored): the
        topic was then recreated or truncated, and earlier tokens may name any offset."""
        self._fresh_from.pop((topic, partition), None)
        try:
            _, end = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10, cached=False
            )
        except KafkaException as exc:
            _LOG.warning("no end offset for %s[%d] (%s): every insert of its records is "
                         "counted after it", topic, partition, exc)  # fmt: skip
            return
        if stored is not None and stored >= end:
            _LOG.warning(
                "the store holds records of %s[%d] up to offset %d, but the partition ends "
                "at %d (recreated or truncated?): every insert of its records is counted "
                "after it", topic, partition, stored, end,
            )  # fmt: skip
            return
        self._fresh_from[(topic, partition)] = end

    def _counted(self, topic: str, positions: Iterable[tuple[int, int]]) -> bool:
        """Whether an insert of the records at ``positions`` (partition, offset) of
        ``topic`` must be counted after it (sinks/lost_inserts.py).

        A count catches an insert the engine dropped because an earlier process recorded
        its token and was killed before its rows were stored. It is skipped only when that
        cannot be: this process is the store's only writer (nobody else inserts while it
        runs, and whoever did before had stopped before it opened the store), no insert of
        this sink has failed, and every record was written to Kafka after this process
        was assigned its partition (at or past the end offset then), so no earlier process
        ever read it, and no token naming it can be in the engine's log.
        """
        if self._insert_failed:
            return True
        fresh_from = self._fresh_from
        return any(
            offset < fresh_from.get((topic, partition), _NO_OFFSET)
            for partition, offset in positions
        )

    def _store(
        self, insert: Insert, table: str, month: int, ranges: Mapping[str, tuple[int, int]], *,
        counted: bool, token: str, sent: int, what: str,
    ) -> None:  # fmt: skip
        """Run ``insert`` under ``token``, then count its rows (``ranges`` of ``table`` in
        ``month``) if ``counted``, and insert them again if the engine dropped them
        (:func:`insert_until_stored`)."""
        try:
            if counted:
                count = stored_counter(self._backend, table, month, ranges, sent)
                insert_until_stored(insert, count, token=token, sent=sent, what=what)
            else:
                insert(dedup_token=token)
        except BaseException:
            self._insert_failed = True  # its token may be in the log without its rows
            raise
        if counted:
            self.counters.counted_inserts += 1
        else:
            self.counters.uncounted_inserts += 1

    def run(self, stop: threading.Event, on_idle: Callable[[], None] | None = None) -> None:
        """Consume and store until ``stop`` is set; then store what is buffered and close."""
        self._stop = stop
        publishing = self._publishing
        try:
            if publishing is not None:
                self._retrying(functools.partial(publishing.backfill, self._backend))
                publishing.directory_if_due(force=True)
            built = self._retrying(self._tiles.catch_up)
            if built:
                _LOG.info("built %d tile entries the stored records had completed", built)
            self._take_partitions()
            while not stop.is_set():
                messages = self._consumer.consume(self._batch_rows, timeout=self._wait())
                for message in messages:
                    self._add(message)
                    # A message may hold many records: flush at batch_rows, not after all.
                    if self._buffered() >= self._batch_rows:
                        self._retrying(self.flush)
                if self._due():
                    self._retrying(self.flush)
                elif not messages and on_idle is not None:
                    on_idle()
                if publishing is not None:
                    publishing.directory_if_due()
                    publishing.late_cosignatures_if_due()
            self._retrying(self.flush, attempts=3)
            self._retrying(functools.partial(self._extend_tiles, force=True), attempts=3)
            if publishing is not None:
                publishing.directory_if_due(force=True)
        finally:
            self._consumer.close()

    def _retrying(self, action: Callable[[], _T], attempts: int | None = None) -> _T:
        """Run ``action``; while the store or the publication is unavailable or cannot
        write, back off and retry.

        Nothing is consumed meanwhile and no offset is committed past what is stored and
        published, so an outage — a server down, a full disk, an I/O error, an unmounted
        publication (``OSError``) — only delays rows; each failed try logs one line saying
        why (the StoreError names the table, the data directory and "disk full" when it
        is). ``attempts`` bounds the tries (used when stopping: what is not stored stays in
        Kafka for the next run, what is stored but not published is published at start).
        """
        delay, tried, first_failure = _FIRST_BACKOFF, 0, 0.0
        while True:
            try:
                value = action()
            except (StoreError, ConfigurationError, OSError) as exc:
                tried += 1
                first_failure = first_failure or time.monotonic()
                stopping = self._stop is not None and self._stop.is_set()
                if (attempts is not None and tried >= attempts) or (stopping and tried >= 3):
                    raise
                _LOG.warning(
                    "cannot store or publish (%s); nothing past the stored and published "
                    "rows is committed; retry %d in %.1f s",
                    exc, tried, delay,
                )  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
            else:
                if tried:
                    _LOG.warning("storing again after %d failed tries over %.0f s",
                                 tried, time.monotonic() - first_failure)  # fmt: skip
                return value

    def _add(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                _LOG.error("consume error: %s", error)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        value = message.value() or b""
        table = self._tables[topic]
        if value[2:10] == self._claim_fingerprint:
            epoch = int(self._claim_codec.decode(value)["epoch"])
            self._fence(table, partition).claim(epoch)
            return
        if table == EVENTS_TABLE and is_batch(value, self._batch_codec):
            batch = decode_batch(value, self._batch_codec)
            if not self._admits(table, partition, offset, batch["epoch"]):
                return
            self._add_chunk(batch, partition, offset)
        else:
            rejection = table == EVENTS_TABLE and value[2:10] in self._rejection_fingerprints
            codec = self._rejection_codec if rejection else self._codecs[table]
            assert codec is not None
            record = codec.decode(value)
            if not self._admits(table, partition, offset, record["epoch"]):
                return
            if rejection:
                tenant = record["chain_tenant_id"]
                if record["seq"] <= self._stored_seq.get(tenant, 0):
                    self.counters.skipped_duplicates += 1
                else:
                    self._stored_seq[tenant] = record["seq"]
                    row = rejected_row(record, self._cluster, partition, offset)
                    self._buffers[REJECTED_TABLE].rows.append(row)
            elif table == EVENTS_TABLE:
                self._add_chunk(self._as_batch(record, value), partition, offset)
            else:
                self._held_checkpoints.append((record, partition, offset))
        self._buffers[table].offsets[partition] = offset
        if self._first_buffered is None:
            self._first_buffered = time.monotonic()

    def _admits(self, table: str, partition: int, offset: int, epoch: int) -> bool:
        if self._fence(table, partition).admits(epoch):
            return True
        # Written by a worker that had lost the partition (docs/PIPELINE.md, fencing).
        self.counters.fenced += 1
        _LOG.warning("ignored a %s message of stale epoch %d at %s[%d]@%d",
                     table, epoch, self._topics[table], partition, offset)  # fmt: skip
        return False

    def _as_batch(self, record: dict[str, Any], value: bytes) -> dict[str, Any]:
        """A bare ChainedRecord (an older worker's) as a batch of one, in today's schema."""
        codec = self._chained_codec
        body = codec.current_body(value)
        event = record["event"]
        return {
            "epoch": record["epoch"],
            "record_schema": codec.reader_fingerprint,
            "newest_occurred_at": event["occurred_at"],
            "month": utc_month(event["occurred_at"]),
            "tenants": [
                {
                    "tenant_id": event["tenant_id"],
                    "first_seq": record["seq"],
                    "last_seq": record["seq"],
                }
            ],
            "records": [bytes(body) if body is not None else codec.encode_body(record)],
        }

    def _add_chunk(self, batch: dict[str, Any], partition: int, offset: int) -> None:
        """Buffer the records of ``batch`` not stored yet, as one block."""
        stored, ranges, bodies = self._stored_seq, batch["tenants"], batch["records"]
        if all(span["first_seq"] > stored.get(span["tenant_id"], 0) for span in ranges):
            kept = bodies
            keys = [(span["tenant_id"], seq) for span in ranges
                    for seq in (span["first_seq"], span["last_seq"])]  # fmt: skip
        elif all(span["last_seq"] <= stored.get(span["tenant_id"], 0) for span in ranges):
            kept, keys = [], []
        else:  # partly stored: find out which by decoding (a replay, rare)
            header = SINGLE_OBJECT_MARKER + batch["record_schema"]
            kept, keys = [], []
            for body in bodies:
                record = self._chained_codec.decode(header + body)
                if record["seq"] > stored.get(record["event"]["tenant_id"], 0):
                    kept.append(body)
                    keys.append((record["event"]["tenant_id"], record["seq"]))
        self.counters.skipped_duplicates += len(bodies) - len(kept)
        if not kept:
            return
        last_seq = {span["tenant_id"]: span["last_seq"] for span in ranges}
        for tenant, last in last_seq.items():
            stored[tenant] = max(stored.get(tenant, 0), last)
        schema = self._chained_codec.writer_schema(batch["record_schema"])
        if schema is None:
            raise FormatError(f"chained batch at partition {partition} offset {offset}: unknown "
                              f"record schema {batch['record_schema'].hex()}")  # fmt: skip
        container = event_rows(schema)
        block = container.block(kept, kafka_suffix(self._cluster, partition, offset))
        self._chunks.append(
            _Chunk(
                container,
                batch["month"],
                block,
                len(kept),
                partition,
                offset,
                last_seq,
                batch["newest_occurred_at"],
                keys,
            )
        )
        self._chunk_rows += len(kept)

    def _buffered(self) -> int:
        return self._chunk_rows + sum(len(buffer.rows) for buffer in self._buffers.values())

    def _wait(self) -> float:
        """How long the next consume may wait for messages: until what is buffered is due,
        at most 0.2 s (the stop flag's and the publication's turn). A consume waits its
        whole timeout unless ``batch_rows`` *messages* arrive, and a chained message holds
        many records: a fixed 0.2 s held rows up to 0.2 s past their batch interval."""
        if self._first_buffered is None:
            return _POLL_SECONDS
        left = self._first_buffered + self._batch_seconds - time.monotonic()
        return min(_POLL_SECONDS, max(left, 0.0))

    def _due(self) -> bool:
        buffered = self._buffered()
        waited = self._first_buffered is not None and (
            time.monotonic() - self._first_buffered >= self._batch_seconds
        )
        return buffered >= self._batch_rows or waited or bool(self._held_checkpoints and waited)

    def flush(self) -> None:
        """Insert everything buffered (records first, then the checkpoints they cover).

        Stored checkpoints not yet published are published first: while the publication
        fails, nothing more is stored.
        """
        if self._publishing is not None:
            self._publishing.publish_pending()
        # Rejections first: the resume point is the highest offset in ``events``.
        inserted = self._insert(REJECTED_TABLE, REJECTED_SCHEMA)
        inserted += self._insert_events()
        # Tiles: derived data, after the rows (a failure here loses no row); with witnesses
        # before the checkpoints, whose consistency proofs read them (sinks/witnessing.py).
        if self._tiles_first:
            self._extend_tiles(force=False)
        self._release_checkpoints()
        inserted += self._insert(CHECKPOINTS_TABLE, CHECKPOINTS_SCHEMA)
        if not self._tiles_first:
            self._extend_tiles(force=False)
        self._first_buffered = time.monotonic() if self._held_checkpoints else None
        if inserted:
            counters = self.counters
            _LOG.info("stored %d records, %d checkpoints, %d rejected so far",
                      counters.stored_records, counters.stored_checkpoints,
                      counters.stored_rejected)  # fmt: skip

    def _extend_tiles(self, *, force: bool) -> None:
        """Append the tile entries the stored records completed, at most every
        ``tiles_seconds`` unless ``force``.

        Each round costs the engine a fixed few milliseconds per query and level, whatever
        it builds: built every flush at high rates, tiles cost more than the records.
        Until then proofs and witnesses' consistency proofs hash the newest leaves
        themselves (sinks/proofs.py), and a crash loses nothing: :meth:`TileBuilder.catch_up`
        builds from what is stored.
        """
        now = time.monotonic()
        if self._tile_leaves and (force or now >= self._next_tiles):
            self._tiles.extend(self._tile_leaves)
            self._tile_leaves = {}
            self._next_tiles = now + self._tiles_seconds

    def _release_checkpoints(self) -> None:
        held, self._held_checkpoints = self._held_checkpoints, []
        blocked: set[int] = set()  # partitions where an earlier checkpoint still waits
        buffer = self._buffers[CHECKPOINTS_TABLE]
        for record, partition, offset in held:
            tenant, size = record["tenant_id"], record["size"]
            if partition in blocked or size > self._stored_seq.get(tenant, 0):
                blocked.add(partition)
                self._held_checkpoints.append((record, partition, offset))
                continue
            if size > self._stored_size.get(tenant, 0):
                self._stored_size[tenant] = size
                buffer.rows.append(checkpoint_row(record, self._cluster, partition, offset))
            else:
                self.counters.skipped_duplicates += 1
        # Only offsets up to the first held checkpoint of a partition may count as stored.
        buffer.offsets = {
            partition: offset
            for partition, offset in buffer.offsets.items()
            if partition not in blocked
        }

    def _insert(self, table: str, schema: Any) -> int:
        buffer = self._buffers[table]
        stored = 0
        try:
            for run in _month_runs(buffer.rows, MONTH_COLUMNS[table]):
                # Names exactly these Kafka records, so only a retry of this very insert is
                # dropped as a duplicate (never a batch of another cluster or other offsets).
                first, last = run[0], run[-1]
                token = (
                    f"{table}:{self._cluster}:{first['kafka_partition']}:{first['kafka_offset']}:"
                    f"{last['kafka_partition']}:{last['kafka_offset']}:{len(run)}"
                )
                data = to_arrow(run, schema)
                tenant, number = KEY_COLUMNS[table]
                ranges = key_ranges((row[tenant], row[number]) for row in run)
                month = _utc_month(first[MONTH_COLUMNS[table]])
                source = self._topics[EVENTS_TABLE if table == REJECTED_TABLE else table]
                positions = ((row["kafka_partition"], row["kafka_offset"]) for row in run)
                self._store(
                    functools.partial(self._backend.insert_arrow, table, data), table, month,
                    ranges, counted=self._counted(source, positions),
                    token=token, sent=len(run), what=f"insert of {len(run)} rows into {table}",
                )  # fmt: skip
                stored += len(run)
                if self.observer is not None:
                    self.observer.inserted(table, len(run))
                if table == CHECKPOINTS_TABLE and self._publishing is not None:
                    self._publishing.stored(run)
                if table == REJECTED_TABLE:  # a rejection log's records arrive in seq order
                    self._tile_leaves.update(
                        (row["chain_tenant_id"], row["seq"]) for row in run if row["seq"]
                    )
            if table == CHECKPOINTS_TABLE and self._publishing is not None:
                self._publishing.publish_pending()  # before the offsets below are committed
        finally:
            del buffer.rows[:stored]  # stored: a retry after a later run failed must skip it
            if table == CHECKPOINTS_TABLE:
                self.counters.stored_checkpoints += stored
            else:
                self.counters.stored_rejected += stored
        self._commit(table)
        return stored

    def _insert_events(self) -> int:
        """Insert the buffered chained records: one insert per run of blocks of one
        month and writer schema, so one insert touches one partition of ``events``."""
        chunks, stored, rows = self._chunks, 0, 0
        try:
            for run in _runs(chunks, lambda chunk: (chunk.month, chunk.container)):
                first, last = run[0], run[-1]
                count = sum(chunk.count for chunk in run)
                # Names exactly these Kafka messages, as in _insert.
                token = (
                    f"{EVENTS_TABLE}:{self._cluster}:{first.partition}:{first.offset}:"
                    f"{last.partition}:{last.offset}:{count}"
                )
                try:
                    data = first.container.container([chunk.block for chunk in run])
                except MalformedRows as exc:
                    bad = run[exc.part]
                    raise FormatError(f"chained batch at partition {bad.partition} offset "
                                      f"{bad.offset}: {exc}") from None  # fmt: skip
                ranges = key_ranges(key for chunk in run for key in chunk.keys)
                self._store(
                    functools.partial(
                        self._backend.insert_data, EVENTS_TABLE, first.container.columns, data,
                        first.container.input_format,
                    ),
                    EVENTS_TABLE, first.month, ranges,
                    counted=self._counted(
                        self._topics[EVENTS_TABLE], ((c.partition, c.offset) for c in run)
                    ),
                    token=token, sent=count, what=f"insert of {count} rows into {EVENTS_TABLE}",
                )  # fmt: skip
                stored, rows = stored + len(run), rows + count
                for chunk in run:  # a tenant's records arrive in seq order
                    self._tile_leaves.update(chunk.last_seq)
                if self.observer is not None:
                    self.observer.inserted(EVENTS_TABLE, count)
                    for chunk in run:
                        self.observer.stored_batch(chunk.newest_occurred_at)
        finally:
            del chunks[:stored]  # stored: a retry after a later run failed must skip it
            self._chunk_rows -= rows
            self.counters.stored_records += rows
        self._commit(EVENTS_TABLE)
        return rows

    def _commit(self, table: str) -> None:
        """Commit the offsets of ``table``'s stored buffer (only so lag shows in tools)."""
        buffer = self._buffers[table]
        if buffer.offsets:
            topic = self._topics[table]
            commits = [TopicPartition(topic, p, o + 1) for p, o in buffer.offsets.items()]
            self._consumer.commit(offsets=commits, asynchronous=True)
        self._buffers[table] = _Buffer()


def _runs(items: list[_T], key: Callable[[_T], object]) -> list[list[_T]]:
    """``items`` cut into runs of consecutive items with equal ``key`` (a UTC month…).

    The tables are partitioned by month (sinks/tables.py), one INSERT makes one part per
    month it touches, and ClickHouse commits those parts one after another: a crash
    between two commits would leave rows stored *after* rows that are not, which the
    resume point (the highest stored offset) would then skip for good. Inserted run by
    run, in order, whatever is stored is a prefix of each Kafka partition's rows.
    """
    runs: list[list[_T]] = []
    current: object = None
    for item in items:
        item_key = key(item)
        if not runs or item_key != current:
            runs.append([])
            current = item_key
        runs[-1].append(item)
    return runs


def _month_runs(rows: list[dict[str, Any]], column: str) -> list[list[dict[str, Any]]]:
    """``rows`` cut into runs of one UTC month of ``column`` (see :func:`_runs`)."""
    return _runs(rows, lambda row: _utc_month(row[column]))


def _utc_month(value: datetime | int) -> int:
    """``YYYYMM`` in UTC of a timestamp: a datetime, or µs since the epoch."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.year * 100 + value.month
    return utc_month(value)


def _cluster_id(consumer: Consumer) -> str:
    """The Kafka cluster id, which scopes every stored offset."""
    try:
        cluster = consumer.list_topics(timeout=30).cluster_id
    except Exception as exc:
        raise ConfigurationError(f"cannot read Kafka cluster metadata: {exc}") from exc
    return str(cluster or "")
