"""The producer SDK services embed to emit authentication events: :class:`AuditProducer`.

A thin adapter over confluent-kafka (librdkafka). What it guarantees the pipeline:

* **Per-tenant order.** The message key is the tenant id and the partitioner is
  ``murmur2_random`` (Kafka's Java partitioner), so every client, in any language, puts a
  tenant's events in the same partition, and librdkafka's idempotent producer
  (``enable.idempotence``, ``acks=all``) keeps them in send order without duplicates
  from its own retries.
* **Nothing is dropped silently.** An event is either refused by :meth:`AuditProducer.send`
  (an exception, nothing queued) or queued and later counted as acknowledged or failed;
  :meth:`AuditProducer.close` raises :class:`DeliveryError` naming every event that was
  not acknowledged. A full local queue blocks the caller or raises
  :class:`ProducerQueueFullError`, never discards.
* **Broker outages (optional spool).** With ``spool_dir``, :meth:`AuditProducer.send`
  appends each event to a bounded, crash-safe spool on local disk
  (:mod:`authtrail.producers.sdk.spool`) and a background thread delivers the spool in order
  (:mod:`authtrail.producers.sdk.spool_delivery`). Events wait there while the broker is
  unreachable, survive the process restarting, and a new producer on the same directory delivers
  them before anything sent after. Delivery into Kafka is then at-least-once; the sequencer records
  a repeated ``event_id`` once.
* **Valid records only.** Events are checked (tenant id, event id, the event-type rules of
  ``auth_event.avsc``) and Avro-encoded before anything is queued; a bad event raises
  :class:`InvalidArgumentError` in the caller's stack, not a poison message downstream.

* **Envelopes (the default without a spool).** Events of one partition travel together
  in one message (:mod:`authtrail.producers.sdk.envelope`), sealed at ``envelope_bytes`` or after
  ``envelope_linger_ms``; the stream processor then pays its per-message cost once for
  all of them. Each event keeps its own delivery accounting. A background thread seals
  lingering envelopes and serves delivery reports. ``envelope_bytes=0`` sends one bare
  message per event, as the spool always does (its drainer delivers and acknowledges
  spooled records one by one, in order).

Without a spool, delivery reports are served whenever the producer is polled: on every
:meth:`send`, in :meth:`poll`, :meth:`flush` and :meth:`close`. A service that sends rarely
should call :meth:`poll` now and then, or counters and :attr:`failures` lag behind. With a
spool the drainer thread serves them continuously.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from confluent_kafka import KafkaError, KafkaException, Producer

from authtrail import schemas
from authtrail.errors import (
    ConfigurationError,
    DeliveryError,
    InvalidArgumentError,
    ProducerQueueFullError,
)
from authtrail.producers.sdk.envelope import DEFAULT_ENVELOPE_BYTES, EnvelopePacker, Packed
from authtrail.producers.sdk.events import event_ids
from authtrail.producers.sdk.partitioning import tenant_partition
from authtrail.producers.sdk.spool import Spool
from authtrail.producers.sdk.spool_delivery import SpoolDrainer
from authtrail.producers.sdk.spool_format import SpoolRecord
from authtrail.schemas.codec import Codec, SingleObjectCodec

if TYPE_CHECKING:  # sealing needs cryptography, an optional extra of authtrail-producer
    from authtrail.producers.sdk.sealing import SourceSealing

__all__ = ["DEFAULT_PRODUCER_CONFIG", "AuditProducer", "Backlog", "DeliveryFailure"]

_LOG = logging.getLogger(__name__)

#: librdkafka settings every AuditProducer starts from; ``config`` overrides them.
DEFAULT_PRODUCER_CONFIG: Mapping[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    # Java-compatible murmur2 for keyed messages: the same tenant lands in the same
    # partition whichever client (librdkafka's default is CRC32) produced it.
    "partitioner": "murmur2_random",
    "linger.ms": 20,
    "batch.num.messages": 10_000,
}

# Keys this class owns: a caller's value would disconnect our delivery accounting.
_RESERVED_KEYS = frozenset({"bootstrap.servers", "error_cb", "on_delivery", "dr_cb", "logger"})

# Room an envelope leaves in a message for its key (a tenant id: ≤ 128 bytes) and framing.
_KEY_ROOM = 1024

# Seconds the first event waits for the topic's partition count (envelopes).
_METADATA_TIMEOUT = 5.0

# Tenants whose partitions an envelope producer remembers (then it starts over).
_MAX_CACHED_TENANTS = 100_000


@dataclass(frozen=True)
class DeliveryFailure:
    """One event the broker did not acknowledge: its ids and librdkafka's error."""

    event_id: str
    tenant_id: str
    error: str
    retriable: bool


@dataclass(frozen=True)
class Backlog:
    """Events :meth:`AuditProducer.send` accepted that the broker has not acknowledged.

    ``events`` and ``bytes`` (encoded values; framed records on disk with a spool) count
    them. ``spool_dir`` is where they wait durably, or None when they are only in this
    process's memory (lost if it dies). ``oldest_age`` is how many seconds ago the oldest of
    them was spooled (None without a spool or when there is none).
    """

    events: int
    bytes: int
    spool_dir: Path | None
    oldest_age: float | None


class AuditProducer:
    """Sends AuthEvent records to ``topic``, keyed by tenant id, Avro single-object framed.

    Args:
        bootstrap_servers: ``host:port[,host:port...]`` of the Kafka cluster.
        topic: the events topic; it must exist (created with its partition count, see
            :func:`authtrail.topics.ensure_topics`), else the broker may auto-create it
            with a default partition count.
        codec: framing for values; default :class:`SingleObjectCodec` of ``auth_event``.
        config: librdkafka settings over :data:`DEFAULT_PRODUCER_CONFIG` (e.g.
            ``message.timeout.ms``, ``queue.buffering.max.messages``). Callbacks and
            ``bootstrap.servers`` are this class's own and refused here.
        compression: ``compression.type``; ``None`` picks lz4 when the stream processor
            (aiokafka) can read it, which needs ``cramjam`` installed, else gzip; a codec
            this librdkafka build lacks falls back to the next. See :attr:`compression`.
        on_full: when the local queue (librdkafka's, or the spool) is full, ``"block"``
            waits up to ``queue_timeout`` seconds for room, then raises; ``"raise"`` raises
            at once. Both raise :class:`ProducerQueueFullError`; nothing is dropped.
        queue_timeout: seconds ``"block"`` waits for room; at least 0.
        spool_dir: ``None`` (default): events queue in memory only. A directory: events
            are spooled there first (see the module docs); a spool left by an earlier
            producer is delivered before new events, each to the topic it was sent for.
            One producer per directory; it is created with mode 0700, and an existing one
            must belong to this user and be closed to group and others.
        spool_max_bytes, spool_max_events: bounds of the spool's undelivered events.
        spool_sync_interval_ms: 0 fsyncs each event before :meth:`send` returns; N > 0 at
            most every N ms (faster; a *machine* crash may lose the last N ms).
        envelope_bytes: N > 0: events of one partition share messages of at most N
            bytes (``schemas/event_envelope.avsc``; at most ``message.max.bytes`` - 1 KiB;
            the stream processor accepts up to 1 MiB); not with a spool. None (default):
            256 KiB (capped at that limit), or 0 with a spool. 0: one bare message per
            event. With envelopes the topic's partition count is read at the first
            event, to group events by partition (explicit N: ConfigurationError when
            the topic does not exist; the default then sends bare messages, see
            :meth:`_envelopes_usable`); and :meth:`send` never raises
            :class:`ProducerQueueFullError`: an envelope that finds the local queue full
            waits up to ``queue_timeout``, then its events count as failed
            (:attr:`failures`, :meth:`close`). Pass 0 where a caller needs that error
            (backpressure) or a topic created on first use.
        envelope_linger_ms: how long an event may wait for others to share its envelope.
        sealing: ``None`` (default): events are sent as given, and the worker seals its
            tenants' personal fields when they arrive. A
            :class:`~authtrail.producers.sdk.sealing.SourceSealing` (e.g.
            ``SourceSealing.from_files(key_store_dir, policy_file)``, needs
            ``authtrail-producer[sealing]``): each event's policy fields are sealed in
            :meth:`send`, before encoding, so clear text never leaves this process
            (docs/PRIVACY.md, "Sealing at the source").

    With a spool, librdkafka's ``message.timeout.ms`` is 0 (never give up: a timed-out
    event would let later ones overtake it) and a different value is refused; the spool's
    bounds limit the backlog instead.

    Raises:
        InvalidArgumentError: bad ``on_full``, ``queue_timeout``, spool bound, a reserved
            config key, or a non-zero ``message.timeout.ms`` with a spool.
        ConfigurationError: librdkafka refused the configuration, or the spool directory
            is unusable or in use by another process.
        FormatError: the spool directory holds damaged data (see
        :mod:`authtrail.producers.sdk.spool`).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        codec: Codec | None = None,
        config: Mapping[str, Any] | None = None,
        compression: str | None = None,
        on_full: Literal["block", "raise"] = "block",
        queue_timeout: float = 30.0,
        spool_dir: str | Path | None = None,
        spool_max_bytes: int = 1 << 30,
        spool_max_events: int = 1_000_000,
        spool_sync_interval_ms: int = 0,
        envelope_bytes: int | None = None,
        envelope_linger_ms: float = 5.0,
        sealing: SourceSealing | None = None,
    ) -> None:
        if on_full not in ("block", "raise"):
            raise InvalidArgumentError(f"on_full must be 'block' or 'raise', got {on_full!r}")
        if not queue_timeout >= 0:
            raise InvalidArgumentError(f"queue_timeout must be >= 0, got {queue_timeout}")
        if envelope_bytes and spool_dir is not None:
            raise InvalidArgumentError("envelope_bytes with a spool: the spool sends bare events")
        config = dict(config or {})
        # A codec named in config counts as the caller's explicit choice.
        for alias in ("compression.type", "compression.codec"):
            compression = compression or config.pop(alias, None)
        reserved = sorted(_RESERVED_KEYS.intersection(config))
        if reserved:
            raise InvalidArgumentError(f"producer config keys {reserved} are set by AuditProducer")
        if spool_dir is not None:
            for alias in ("message.timeout.ms", "delivery.timeout.ms"):
                if str(config.get(alias, 0)) != "0":
                    raise InvalidArgumentError(
                        f"{alias}={config[alias]!r} with a spool: it must stay 0 (infinite) "
                        "so that no event is given up and overtaken by later ones"
                    )
            config["message.timeout.ms"] = 0
        # librdkafka refuses a larger key + value at produce(); with a spool that would be
        # in the drainer, after send() returned, so send() checks it first.
        self._max_message_bytes = int(config.get("message.max.bytes", 1_000_000))
        envelope_bytes_given = envelope_bytes
        if envelope_bytes is None:
            envelope_bytes = (
                0
                if spool_dir is not None
                else min(DEFAULT_ENVELOPE_BYTES, self._max_message_bytes - _KEY_ROOM)
            )
        if envelope_bytes < 0 or envelope_bytes > self._max_message_bytes - _KEY_ROOM:
            raise InvalidArgumentError(
                f"envelope_bytes {envelope_bytes} must be 0 (off) or at most message.max.bytes "
                f"- {_KEY_ROOM} ({self._max_message_bytes - _KEY_ROOM})"
            )
        self._topic = topic
        self._sealing = sealing
        self._codec: Codec = codec or SingleObjectCodec(schemas.load_schema(schemas.AUTH_EVENT))
        self._on_full = on_full
        self._queue_timeout = queue_timeout
        self._lock = threading.Lock()
        self._in_flight: dict[int, str] = {}  # message token -> event_id, until its report
        self._next_token = 0
        self._sent = 0
        self._acknowledged = 0
        self._failed = 0
        self._failures: list[DeliveryFailure] = []
        self._fatal_error: str | None = None
        self._last_error: str | None = None
        self._closed = False
        self._queued_bytes = 0  # values in librdkafka's queue (no spool)
        self._spool: Spool | None = None
        self._drainer: SpoolDrainer | None = None
        self._left_in_spool: Backlog | None = None  # what close() left for the next producer
        if spool_dir is not None:
            self._spool = Spool(
                spool_dir,
                spool_max_bytes,
                spool_max_events,
                sync_interval_ms=spool_sync_interval_ms,
            )
        base = {
            **DEFAULT_PRODUCER_CONFIG,
            **config,
            "bootstrap.servers": bootstrap_servers,
            "error_cb": self._on_error,
            "logger": _LOG,  # librdkafka logs into Python logging, not raw stderr
        }
        try:
            self._producer, self._compression = _create_producer(base, compression)
        except BaseException:
            if self._spool is not None:
                self._spool.close()
            raise
        if self._spool is not None:
            self._drainer = SpoolDrainer(self._spool, self._producer, self._record_report)
            self._drainer.start()
        self._packer: EnvelopePacker | None = None
        self._pack_lock = threading.Lock()  # sealing and producing, in partition order
        self._packed_keys: dict[int, bytes] = {}  # token -> its own key, until its report
        self._partition_count: int | None = None
        self._envelopes_by_default = envelope_bytes_given is None
        self._bare = False  # the default's fallback (see _envelopes_usable)
        self._tenant_partitions: dict[str, int] = {}  # tenant -> partition, bounded
        self._envelopes_sent = 0
        self._stop_linger = threading.Event()
        self._linger_thread: threading.Thread | None = None
        if envelope_bytes:
            envelope_codec = SingleObjectCodec(schemas.load_schema(schemas.EVENT_ENVELOPE))
            linger = envelope_linger_ms / 1000
            self._packer = EnvelopePacker(envelope_codec, envelope_bytes, linger)
            self._linger_thread = threading.Thread(
                target=self._linger, args=(max(linger / 2, 0.001),),
                name="authtrail-envelopes", daemon=True,
            )  # fmt: skip
            self._linger_thread.start()

    # -- counters ---------------------------------------------------------------------

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def compression(self) -> str:
        """The ``compression.type`` in use."""
        return self._compression

    @property
    def sent(self) -> int:
        """Events accepted into the local queue."""
        return self._sent

    @property
    def envelopes(self) -> int:
        """Envelopes of more than one event queued so far (``envelope_bytes``)."""
        return self._envelopes_sent

    @property
    def acknowledged(self) -> int:
        """Events the broker acknowledged (``acks=all``); with a spool, including events an
        earlier producer spooled, so it may exceed :attr:`sent`."""
        return self._acknowledged

    @property
    def failed(self) -> int:
        """Events whose delivery failed (including ones purged at :meth:`close`)."""
        return self._failed

    @property
    def pending(self) -> int:
        """Events queued or in flight, without a delivery report yet; with a spool, every
        spooled event not yet acknowledged (after :meth:`close`: what it left spooled)."""
        if self._spool is None:
            return len(self._in_flight)
        if self._left_in_spool is not None:
            return self._left_in_spool.events
        return self._spool.pending_events

    def backlog(self) -> Backlog:
        """Report what is accepted and not yet acknowledged (see :class:`Backlog`).

        Raises:
            FormatError: the spool's oldest record changed on disk since it was written.
        """
        if self._spool is None:
            return Backlog(len(self._in_flight), self._queued_bytes, None, None)
        if self._left_in_spool is not None:
            return self._left_in_spool
        status = self._spool.status()
        age = None
        if status.oldest_spooled_at_us is not None:
            age = max(0.0, time.time() - status.oldest_spooled_at_us / 1e6)
        return Backlog(status.events, status.bytes, status.directory, age)

    @property
    def failures(self) -> tuple[DeliveryFailure, ...]:
        """Failed deliveries not yet taken with :meth:`take_failures`, oldest first."""
        with self._lock:
            return tuple(self._failures)

    def take_failures(self) -> list[DeliveryFailure]:
        """Return and forget the failures so far: the caller now owns resending them.

        Failures taken here are no longer reported by :meth:`close`.
        """
        with self._lock:
            taken, self._failures = self._failures, []
        return taken

    # -- sending ----------------------------------------------------------------------

    def send(self, event: Mapping[str, Any]) -> None:
        """Validate, encode and queue ``event``; its delivery report comes later.

        Requires ``event_id`` (a non-empty string) and ``tenant_id`` (matching
        :data:`~authtrail.producers.sdk.events.TENANT_ID_PATTERN`); see
        :func:`~authtrail.producers.sdk.events.new_event`.

        With a spool, the event is on disk (see ``spool_sync_interval_ms``) when this returns.

        Raises:
            InvalidArgumentError: the event is invalid or too large, or the producer is
                closed; nothing was queued.
            ConfigurationError: (with ``sealing``) the key store failed; nothing was
                queued.
            ProducerQueueFullError: no room in the local queue or spool (see ``on_full``);
                nothing was queued.
            DeliveryError: the producer hit a fatal error, or (with a spool) delivery
                halted on an event the broker refused; it cannot send any more.
            OSError: the spool's disk refused the write; nothing was queued.
        """
        if self._closed:
            raise InvalidArgumentError("send() on a closed AuditProducer")
        self._raise_if_fatal()
        event_id, tenant_id = event_ids(event)
        if self._sealing is not None:
            event = self._sealing.seal(event)
        value = self._codec.encode(event)
        key = tenant_id.encode("utf-8")
        if self._spool is not None:
            if len(key) + len(value) > self._max_message_bytes:
                raise InvalidArgumentError(
                    f"event {event_id!r} is too large for the producer ({len(value)} bytes)"
                )
            # Always through the spool, never around it: a direct send could overtake
            # events of the same tenant that still wait there.
            timeout = self._queue_timeout if self._on_full == "block" else 0.0
            self._spool.append(SpoolRecord(self._topic, key, value, event_id), timeout)
            with self._lock:
                self._sent += 1
            return
        if self._packer is not None and self._envelopes_usable():
            self._pack(key, value, event_id, tenant_id)
            return
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._in_flight[token] = event_id
        try:
            self._produce(key, value, token, event_id)
        except BaseException:
            with self._lock:
                self._in_flight.pop(token, None)
            raise
        with self._lock:
            self._sent += 1
            self._queued_bytes += len(value)
        self._producer.poll(0)

    def _produce(self, key: bytes, value: bytes, token: int, event_id: str) -> None:
        on_delivery = partial(self._on_delivery, token)
        started: float | None = None
        while True:
            try:
                self._producer.produce(self._topic, value, key, on_delivery=on_delivery)
                return
            except BufferError:
                now = time.monotonic()
                started = now if started is None else started
                waited = now - started
                if self._on_full == "raise" or waited >= self._queue_timeout:
                    raise ProducerQueueFullError(event_id, self.pending - 1, waited) from None
                # Delivery reports served by poll() are what frees queue room.
                self._producer.poll(min(0.05, self._queue_timeout - waited))
                self._raise_if_fatal()
            except KafkaException as exc:
                error = _kafka_error(exc)
                if error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise InvalidArgumentError(
                        f"event {event_id!r} is too large for the producer ({len(value)} bytes)"
                    ) from exc
                raise DeliveryError([event_id], f"librdkafka refused it: {_describe(exc)}") from exc

    # -- envelopes (envelope_bytes) ----------------------------------------------------

    def _pack(self, key: bytes, value: bytes, event_id: str, tenant_id: str) -> None:
        partition = self._tenant_partitions.get(tenant_id)
        if partition is None:
            # murmur2 in Python costs microseconds an event; a service has few tenants.
            if len(self._tenant_partitions) >= _MAX_CACHED_TENANTS:
                self._tenant_partitions.clear()
            assert self._partition_count is not None  # _envelopes_usable() read it
            partition = tenant_partition(tenant_id, self._partition_count)
            self._tenant_partitions[tenant_id] = partition
        assert self._packer is not None
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._in_flight[token] = event_id
            self._packed_keys[token] = key
            self._sent += 1
            self._queued_bytes += len(value)
        with self._pack_lock:
            for packed in self._packer.add(partition, key, value, token):
                self._send_packed(packed)

    def _envelopes_usable(self) -> bool:
        """Whether events go into envelopes: the topic's partition count (which the SDK's
        partitioner needs) is read at the first event.

        With the default ``envelope_bytes``, a producer that cannot read it then (broker
        unreachable, topic not created yet) sends bare messages for good, as before
        envelopes: switching later could let an envelope overtake a tenant's bare events
        still queued. With an explicit ``envelope_bytes`` it raises ConfigurationError.
        """
        if self._partition_count is not None or self._bare:
            return not self._bare
        with self._pack_lock:  # one decision, whichever thread sends first
            if self._partition_count is None and not self._bare:
                try:
                    self._partition_count = self._read_partition_count()
                except ConfigurationError as exc:
                    if not self._envelopes_by_default:
                        raise
                    _LOG.warning("producer for %s sends bare messages, not envelopes: %s",
                                 self._topic, exc)  # fmt: skip
                    self._bare = True
        return not self._bare

    def _read_partition_count(self) -> int:
        try:
            topic = self._producer.list_topics(timeout=_METADATA_TIMEOUT).topics.get(self._topic)
        except KafkaException as exc:
            raise ConfigurationError(f"cannot read topic {self._topic!r}: {exc}") from exc
        if topic is None or topic.error is not None or not topic.partitions:
            raise ConfigurationError(
                f"topic {self._topic!r} does not exist: envelopes need its partition count"
            )
        return len(topic.partitions)

    def _send_packed(self, packed: Packed) -> None:
        """Produce one sealed envelope (or bare event) to its partition; call with the
        pack lock held, so one partition's messages are produced in sealing order."""
        on_delivery = partial(self._on_packed_delivery, packed)
        deadline = time.monotonic() + self._queue_timeout
        while True:
            try:
                self._producer.produce(
                    self._topic, packed.value, packed.key,
                    partition=packed.partition, on_delivery=on_delivery,
                )  # fmt: skip
                if len(packed.tokens) > 1:
                    self._envelopes_sent += 1
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    error = KafkaError(KafkaError._QUEUE_FULL, "local queue full", retriable=True)
                    self._on_packed_delivery(packed, error, None)
                    return
                self._producer.poll(0.05)
            except KafkaException as exc:
                error = _kafka_error(exc) or KafkaError(KafkaError._FAIL, _describe(exc))
                self._on_packed_delivery(packed, error, None)
                return

    def _on_packed_delivery(self, packed: Packed, error: KafkaError | None, message: Any) -> None:
        in_flight, keys = self._in_flight, self._packed_keys
        with self._lock:
            self._queued_bytes -= sum(packed.sizes)
            if error is None:  # the usual report: counted once for the whole envelope
                for token in packed.tokens:
                    in_flight.pop(token, None)
                    keys.pop(token, None)
                self._acknowledged += len(packed.tokens)
                return
            reports = [(in_flight.pop(token, "?"), keys.pop(token, None))
                       for token in packed.tokens]  # fmt: skip
        for event_id, key in reports:
            self._record_report(event_id, key, error)

    def _seal_all(self) -> None:
        if self._packer is not None:
            with self._pack_lock:
                for packed in self._packer.drain():
                    self._send_packed(packed)

    def _linger(self, interval: float) -> None:
        """Seal envelopes that waited their linger, and serve delivery reports."""
        assert self._packer is not None
        while not self._stop_linger.wait(interval):
            with self._pack_lock:
                for packed in self._packer.due():
                    self._send_packed(packed)
            self._producer.poll(0)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports and errors for up to ``timeout`` seconds; return how many.

        With a spool the drainer thread serves them: this only waits, and returns 0.
        """
        if self._spool is not None:
            time.sleep(max(0.0, timeout))
            return 0
        served: int = self._producer.poll(timeout)
        return served

    def flush(self, timeout: float = 30.0) -> int:
        """Wait up to ``timeout`` seconds for every queued event's delivery report.

        Returns the number of events still without a report (0: all acknowledged or
        failed); with a spool, the events still spooled (it stops early if delivery
        halted). Raises :class:`InvalidArgumentError` for a negative timeout.
        """
        if timeout < 0:
            raise InvalidArgumentError(f"timeout must be >= 0, got {timeout}")
        if self._drainer is not None:
            deadline = time.monotonic() + timeout
            while self.pending and self._drainer.halt_reason is None and not self._closed:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
            return self.pending
        self._seal_all()
        self._producer.flush(timeout)
        return self.pending

    def close(self, timeout: float = 30.0) -> None:
        """Flush for up to ``timeout`` seconds, then shut the producer down.

        Events still unreported after ``timeout`` are purged and count as failed, so
        afterwards ``acknowledged + failed == sent`` and ``pending == 0``. Calling close
        again does nothing.

        With a spool, events not delivered within ``timeout`` stay in the spool for the next
        producer on it: that is not an error (they are durable). close() logs a warning
        saying how many, and :meth:`backlog` and :attr:`pending` report them afterwards.

        Raises:
            DeliveryError: some events were not acknowledged (failed, timed out, purged;
                failures already taken with :meth:`take_failures` excepted) or the
                producer hit a fatal error. ``undelivered`` names the event ids. With a
                spool: delivery halted on a refused event (the spool keeps it and all
                after it; the message says how many).
        """
        if self._closed:
            return
        self._closed = True
        if self._spool is not None:
            self._close_spooled(timeout)
            return
        if self._linger_thread is not None:
            self._stop_linger.set()
            self._linger_thread.join()
        remaining = self.flush(timeout)
        if remaining:
            self._producer.purge(in_queue=True, in_flight=True)
            deadline = time.monotonic() + 5.0
            while self.pending and time.monotonic() < deadline:
                self._producer.poll(0.05)
        # Producer.close() (confluent-kafka >= 2.10) frees librdkafka now, not at GC.
        shutdown = getattr(self._producer, "close", None)
        if shutdown is not None:
            shutdown()
        with self._lock:
            undelivered = [failure.event_id for failure in self._failures]
            # A report that never came (should not happen after purge) is still undelivered.
            undelivered.extend(self._in_flight.values())
            errors = sorted({failure.error for failure in self._failures})
        if self._fatal_error is not None:
            raise DeliveryError(undelivered, f"fatal producer error: {self._fatal_error}")
        if undelivered:
            reason = "; ".join(errors[:3]) or "no delivery report"
            if remaining:
                reason = f"{remaining} unacknowledged after {timeout:g}s, purged; {reason}"
            if self._last_error:
                reason += f"; last client error: {self._last_error}"
            raise DeliveryError(undelivered, reason)

    def _close_spooled(self, timeout: float) -> None:
        assert self._spool is not None and self._drainer is not None
        self._drainer.stop(timeout)
        try:
            left = self.backlog()
        finally:
            self._spool.close()
            shutdown = getattr(self._producer, "close", None)
            if shutdown is not None:
                shutdown()
        self._left_in_spool = left
        halted = self._fatal_error or self._drainer.halt_reason
        if halted is not None:
            with self._lock:
                undelivered = [failure.event_id for failure in self._failures]
            raise DeliveryError(
                undelivered,
                f"delivery halted: {halted}; {left.events} events stay in spool {left.spool_dir}",
            )
        if left.events:
            _LOG.warning(
                "producer for %s closed with %d events (%d bytes) not yet delivered; they stay "
                "in spool %s and a producer started on it delivers them first",
                self._topic, left.events, left.bytes, left.spool_dir,
            )  # fmt: skip

    def __enter__(self) -> AuditProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Runs even when the body raised: unacknowledged events must be reported, not lost
        # with the exception that interrupted the sender.
        self.close()

    def __repr__(self) -> str:
        return (
            f"AuditProducer(topic={self._topic!r}, sent={self._sent}, "
            f"acknowledged={self._acknowledged}, failed={self._failed}, pending={self.pending})"
        )

    # -- librdkafka callbacks (run in whichever thread polls) -------------------------

    def _on_delivery(self, token: int, error: KafkaError | None, message: Any) -> None:
        with self._lock:
            event_id = self._in_flight.pop(token, "?")
            self._queued_bytes -= len(message) if message is not None else 0
        key = message.key() if message is not None else None
        self._record_report(event_id, key, error)

    def _record_report(self, event_id: str, key: bytes | None, error: KafkaError | None) -> None:
        """Count one delivery report (also the spool drainer's, from its thread)."""
        with self._lock:
            if error is None:
                self._acknowledged += 1
                return
            self._failed += 1
            self._failures.append(
                DeliveryFailure(
                    event_id=event_id,
                    tenant_id=key.decode("utf-8", errors="replace") if key else "",
                    error=f"{error.name()}: {error.str()}",
                    retriable=bool(error.retriable()),
                )
            )

    def _on_error(self, error: KafkaError) -> None:
        text = f"{error.name()}: {error.str()}"
        if error.fatal():
            # librdkafka fails every queued message after this; send() and close() raise.
            self._fatal_error = text
            _LOG.error("producer for %s hit a fatal error: %s", self._topic, text)
            if self._drainer is not None:
                self._drainer.halt(f"fatal producer error: {text}")
            return
        if text != self._last_error:  # librdkafka repeats e.g. ALL_BROKERS_DOWN per retry
            _LOG.warning("producer for %s: %s", self._topic, text)
        self._last_error = text

    def _raise_if_fatal(self) -> None:
        if self._fatal_error is not None:
            with self._lock:
                pending = list(self._in_flight.values())
            raise DeliveryError(pending, f"fatal producer error: {self._fatal_error}")
        halted = self._drainer.halt_reason if self._drainer is not None else None
        if halted is not None:
            with self._lock:
                failed = [failure.event_id for failure in self._failures]
            raise DeliveryError(
                failed, f"delivery from the spool halted: {halted}; the spool keeps the rest"
            )


def _compression_candidates() -> tuple[str, ...]:
    """Codecs to try, best first, when the caller did not choose one.

    lz4 and zstd are cheapest per byte saved, but the stream processor reads with
    aiokafka, which decodes them only when ``cramjam`` is installed (it raises
    UnsupportedCodecError otherwise); gzip every Kafka client reads without extras.
    """
    if importlib.util.find_spec("cramjam") is not None:
        return ("lz4", "zstd", "gzip", "none")
    return ("gzip", "none")


def _create_producer(config: dict[str, Any], compression: str | None) -> tuple[Any, str]:
    """Build the librdkafka producer; fall back to the next codec this build lacks."""
    candidates = (compression,) if compression is not None else _compression_candidates()
    for index, codec in enumerate(candidates):
        try:
            return Producer({**config, "compression.type": codec}), codec
        except KafkaException as exc:
            unsupported = "compression" in _describe(exc) and index + 1 < len(candidates)
            if not unsupported:
                raise ConfigurationError(
                    f"invalid producer configuration: {_describe(exc)}"
                ) from exc
            _LOG.info("librdkafka cannot use %s compression (%s); trying the next", codec, exc)
    raise AssertionError("unreachable")  # pragma: no cover


def _kafka_error(exc: KafkaException) -> KafkaError | None:
    error = exc.args[0] if exc.args else None
    return error if isinstance(error, KafkaError) else None


def _describe(exc: BaseException) -> str:
    error = exc.args[0] if exc.args else None
    text = error.str() if isinstance(error, KafkaError) else str(exc)
    return " ".join(str(text).split())
