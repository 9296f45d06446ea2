"""Seeded traffic for a fault scenario, with per-event acknowledgements.

Good events go through the product's :class:`~authtrail.producers.sdk.producer.AuditProducer` (what
services embed). Its counters are totals, but every event it does not deliver is named — in
``failures`` and in the :class:`~authtrail.errors.DeliveryError` that ``close()`` raises —
so the acknowledged ids are exactly the sent ids minus those. Bad messages (which the SDK
refuses to send, as it should) go through a plain confluent-kafka producer whose delivery
reports say where each one landed, so the suite can find each in the ``rejected`` table.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from authtrail import schemas
from authtrail.errors import DeliveryError
from authtrail.producers.sdk import DEFAULT_PRODUCER_CONFIG, AuditProducer
from authtrail.producers.traffic import TrafficConfig, generate_events, tenant_ids
from authtrail.schemas.codec import SINGLE_OBJECT_MARKER, SingleObjectCodec
from tests.faults.tally import Position
from tests.integration.test_producer import java_partition

_LOG = logging.getLogger(__name__)
_TICK = 0.02  # seconds between paced sends: smooth enough, few wake-ups

BAD_KINDS = ("random_bytes", "empty", "unknown_schema", "truncated", "confluent_framed")


def bad_message(rng: random.Random, good_value: bytes) -> tuple[str, bytes]:
    """One message the sequencer must reject, derived from ``rng`` (and a good value).

    Kinds: random bytes; an empty value; the single-object marker with a fingerprint no
    schema has; a good event cut short (its header intact); Confluent wire framing, which
    the single-object decoder must refuse. None of these can decode to an event.
    """
    kind = rng.choice(BAD_KINDS)
    if kind == "random_bytes":
        value = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 80)))
        if value.startswith(SINGLE_OBJECT_MARKER):  # would be an unknown_schema instead
            value = b"\x00" + value
    elif kind == "empty":
        value = b""
    elif kind == "unknown_schema":
        fingerprint = bytes(rng.getrandbits(8) for _ in range(8))
        value = SINGLE_OBJECT_MARKER + fingerprint + good_value[len(SINGLE_OBJECT_MARKER) + 8 :]
    elif kind == "truncated":
        value = good_value[: rng.randrange(len(SINGLE_OBJECT_MARKER) + 8, len(good_value))]
    else:
        value = b"\x00" + rng.getrandbits(32).to_bytes(4, "big") + good_value[10:]
    return kind, value


@dataclass
class LoadSummary:
    """What the producers were told. ``acknowledged_ids`` in send order."""

    sent: int
    acknowledged_ids: list[str]
    acknowledged_bad: list[Position]
    acknowledged_miskeyed: list[tuple[str, Position]]
    bad_sent: int
    undelivered: int
    error: str | None
    envelopes: int = 0  # messages of several events (envelope_bytes)


class Load:
    """Send seeded auth traffic at ``rate`` events/s from a thread until :meth:`stop`.

    ``rate``, ``bad_share`` and ``miskey_share`` may change while it runs. ``bad_share`` is
    the share of sends replaced by a bad
    message (keyed by the displaced event's tenant, so it lands amid that tenant's events).
    ``miskey_share`` is the share of good events sent with another tenant's id as Kafka
    key — one whose partition differs — as a producer that does not use the SDK might.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        seed: int,
        rate: float,
        partitions: int,
        tenants: int = 7,
        bad_share: float = 0.0,
        envelope_bytes: int = 0,
    ) -> None:
        self._servers = bootstrap_servers
        self._envelope_bytes = envelope_bytes
        self._topic = topic
        self.rate = rate
        self._rng = random.Random(f"load/{seed}")
        self._events: Iterator[dict[str, Any]] = generate_events(
            TrafficConfig(tenants=tenants, users=40, burst_every=400), seed
        )
        self._codec = SingleObjectCodec(schemas.load_schema(schemas.AUTH_EVENT))
        self.bad_share = bad_share
        self.miskey_share = 0.0
        # Tenants by partition (Kafka's murmur2 partitioner, as the SDK's producer uses).
        self._partition_of = {
            tenant: java_partition(tenant.encode(), partitions) for tenant in tenant_ids(tenants)
        }
        self._miskeyed: list[tuple[str, Position]] = []
        self.bad_kinds: dict[str, int] = dict.fromkeys(BAD_KINDS, 0)
        self._sent_ids: list[str] = []
        self._bad_positions: list[Position] = []
        self._bad_sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-load", daemon=True)
        self._summary: LoadSummary | None = None
        self._close_timeout = 120.0

    @property
    def sent(self) -> int:
        return len(self._sent_ids)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self, close_timeout: float = 120.0) -> LoadSummary:
        """Stop sending, wait for every delivery report (up to ``close_timeout`` s)."""
        self._close_timeout = close_timeout
        self._stop.set()
        self._thread.join(close_timeout + 30)
        if self._summary is None:
            raise RuntimeError("load thread did not finish; see the log")
        return self._summary

    def _run(self) -> None:
        # A linger long enough that envelopes hold several events at the scenarios' rates.
        producer = AuditProducer(self._servers, self._topic, envelope_bytes=self._envelope_bytes,
                                 envelope_linger_ms=100)  # fmt: skip
        raw = Producer(
            {**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": self._servers, "logger": _LOG}
        )
        undelivered: set[str] = set()
        error: str | None = None
        last, budget = time.monotonic(), 0.0
        try:
            while not self._stop.is_set():
                # A budget rather than elapsed * rate: ``rate`` may change while running.
                now = time.monotonic()
                budget += (now - last) * self.rate
                last = now
                while budget >= 1.0:
                    self._send_one(producer, raw)
                    budget -= 1.0
                raw.poll(0)
                time.sleep(_TICK)
        except Exception as exc:  # reported in the summary: the scenario must not hang
            _LOG.exception("load thread failed")
            error = repr(exc)
        finally:
            try:
                producer.close(self._close_timeout)
            except DeliveryError as exc:
                undelivered.update(exc.undelivered)
                error = error or str(exc)
            left = raw.flush(self._close_timeout)
            if left:
                error = error or f"{left} bad messages without a delivery report"
        acknowledged = [event_id for event_id in self._sent_ids if event_id not in undelivered]
        if len(acknowledged) != producer.acknowledged:
            error = error or (
                f"SDK counted {producer.acknowledged} acknowledgements, ids say {len(acknowledged)}"
            )
        self._summary = LoadSummary(
            sent=len(self._sent_ids),
            acknowledged_ids=acknowledged,
            acknowledged_bad=list(self._bad_positions),
            acknowledged_miskeyed=list(self._miskeyed),
            bad_sent=self._bad_sent,
            undelivered=len(undelivered),
            error=error,
            envelopes=producer.envelopes,
        )

    def _send_one(self, producer: AuditProducer, raw: Producer) -> None:
        event = next(self._events)
        if self.bad_share and self._rng.random() < self.bad_share:
            kind, value = bad_message(self._rng, self._codec.encode(event))
            self.bad_kinds[kind] += 1
            self._bad_sent += 1
            raw.produce(
                self._topic, value, event["tenant_id"].encode(), on_delivery=self._on_bad_delivery
            )
            return
        if self.miskey_share and self._rng.random() < self.miskey_share:
            home = self._partition_of[event["tenant_id"]]
            strangers = sorted(t for t, p in self._partition_of.items() if p != home)
            if strangers:
                on_delivery = functools.partial(self._on_miskeyed_delivery, event["event_id"])
                key = self._rng.choice(strangers).encode()
                raw.produce(self._topic, self._codec.encode(event), key, on_delivery=on_delivery)
                return
        producer.send(event)
        self._sent_ids.append(event["event_id"])

    def _on_miskeyed_delivery(
        self, event_id: str, error: KafkaError | None, message: Message
    ) -> None:
        partition, offset = message.partition(), message.offset()
        if error is None and partition is not None and offset is not None:
            self._miskeyed.append((event_id, (partition, offset)))

    def _on_bad_delivery(self, error: KafkaError | None, message: Message) -> None:
        partition, offset = message.partition(), message.offset()
        if error is None and partition is not None and offset is not None:
            self._bad_positions.append((partition, offset))
