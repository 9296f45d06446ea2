"""``python -m benchmarks.flood_loader``: good events with bad messages mixed in.

The good events are the benchmark's usual ones (:class:`~benchmarks.workload.EventFactory`),
sent with the SDK. After each good event, ``--bad-per-good`` bad messages on average go
through a plain confluent-kafka producer (the SDK refuses to send them, as it should),
keyed by a tenant so they land in that tenant's partition amid its events. The bad kinds:

* the fault suite's five (:func:`tests.faults.load.bad_message`): random bytes, empty,
  unknown schema fingerprint, a good event cut short, Confluent wire framing;
* ``oversized``: a valid event over the worker's 64 KiB record limit (2 % of the flood:
  each is 66 KB, so a flood of them measures bandwidth, not the worker);
* ``duplicate_id``: an earlier good event sent again verbatim (8 %): not rejected but
  dropped by the sequencer's duplicate window, so it is in neither ``events`` nor
  ``rejected``.

Unpaced (``--good N``), a backlog for a drain; or paced (``--rate R --seconds D``, good
events/s, each stamped ``occurred_at`` = send time) for a live phase's latency.
Writes one JSON object to ``--out``: counts sent and acknowledged per kind, and
``expected_rejected`` (acknowledged bad messages the worker must put in ``rejected``).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from authtrail import schemas
from authtrail.producers.sdk import DEFAULT_PRODUCER_CONFIG, AuditProducer
from authtrail.schemas.codec import SingleObjectCodec
from benchmarks.loader import pace
from benchmarks.workload import EventFactory
from tests.faults.load import bad_message

OVERSIZED, DUPLICATE = "oversized", "duplicate_id"
OVERSIZED_SHARE, DUPLICATE_SHARE = 0.02, 0.08
OVERSIZED_PADDING = 66 * 1024  # over authtrail.stream.worker.admission's 64 KiB record limit
_QUEUE = {"queue.buffering.max.messages": 1_000_000}


def flood_message(
    rng: random.Random, codec: SingleObjectCodec, events: list[dict[str, Any]], index: int
) -> tuple[str, str, bytes]:
    """(kind, Kafka key, value) of one bad message sent after ``events[index]``.

    Requires ``0 <= index < len(events)``. A duplicate repeats one of ``events[: index + 1]``
    under its own tenant's key (so it reaches the partition that saw the original).
    """
    event = events[index]
    draw = rng.random()
    if draw < OVERSIZED_SHARE:
        padded = {**event, "event_id": f"{event['event_id']}-oversized"}
        padded["attributes"] = {
            **(event.get("attributes") or {}),
            "padding": "x" * OVERSIZED_PADDING,
        }
        return OVERSIZED, event["tenant_id"], codec.encode(padded)
    if draw < OVERSIZED_SHARE + DUPLICATE_SHARE:
        earlier = events[rng.randrange(index + 1)]
        return DUPLICATE, earlier["tenant_id"], codec.encode(earlier)
    kind, value = bad_message(rng, codec.encode(event))
    return kind, event["tenant_id"], value


class FloodSender:
    """Sends good events through the SDK, each followed by its share of bad messages.

    Use as a context manager; :meth:`finish` waits for every acknowledgement and returns
    the counts. ``bad_per_good`` may be fractional: the remainder carries over.
    """

    def __init__(self, servers: str, topic: str, bad_per_good: float, seed: int) -> None:
        self._topic, self._bad_per_good = topic, bad_per_good
        self._rng = random.Random(seed)
        self._codec = SingleObjectCodec(schemas.load_schema(schemas.AUTH_EVENT))
        self._raw = Producer({**DEFAULT_PRODUCER_CONFIG, **_QUEUE, "bootstrap.servers": servers})
        # Bare: the flood compares per-message costs, one good message among the bad.
        self._producer = AuditProducer(servers, topic, config=_QUEUE, envelope_bytes=0)
        self._sent: list[dict[str, Any]] = []  # duplicates repeat one of these
        self._budget = 0.0
        self._sent_kinds: Counter[str] = Counter()
        self._acknowledged_kinds: Counter[str] = Counter()

    def __enter__(self) -> FloodSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._producer.close()

    def send(self, event: dict[str, Any]) -> None:
        """Send ``event``, then the bad messages due after it."""
        self._producer.send(event)
        self._sent.append(event)
        self._budget += self._bad_per_good
        while self._budget >= 1.0:
            self._budget -= 1.0
            last = len(self._sent) - 1
            kind, key, value = flood_message(self._rng, self._codec, self._sent, last)
            self._sent_kinds[kind] += 1
            on_delivery = functools.partial(self._delivered, kind)
            self._raw.produce(self._topic, value, key.encode(), on_delivery=on_delivery)
        self._raw.poll(0)

    def _delivered(self, kind: str, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self._acknowledged_kinds[kind] += 1

    def finish(self) -> dict[str, Any]:
        """Wait for every acknowledgement; counts sent and acknowledged, per kind."""
        left = self._raw.flush(120)
        self._producer.flush(120)
        bad_acknowledged = sum(self._acknowledged_kinds.values())
        return {
            "good_sent": self._producer.sent,
            "good_acknowledged": self._producer.acknowledged,
            "good_failed": self._producer.failed,
            "bad_sent": sum(self._sent_kinds.values()),
            "bad_acknowledged": bad_acknowledged,
            "bad_unacknowledged": left,
            "bad_kinds_sent": dict(sorted(self._sent_kinds.items())),
            "bad_kinds_acknowledged": dict(sorted(self._acknowledged_kinds.items())),
            "expected_rejected": bad_acknowledged - self._acknowledged_kinds[DUPLICATE],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flood_loader")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--good", type=int, default=0, help="unpaced: this many good events")
    parser.add_argument("--rate", type=float, default=0.0, help="paced: good events/s")
    parser.add_argument("--seconds", type=float, default=0.0, help="paced: for this long")
    parser.add_argument("--bad-per-good", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    # The same good events whatever the flood: the seed of the events is fixed.
    factory = EventFactory(args.tenants, args.seed)
    backlog = [] if args.rate > 0 else factory.batch(args.good)
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    with FloodSender(
        args.bootstrap_servers, args.topic, args.bad_per_good, args.seed + 1
    ) as sender:
        if args.rate > 0:  # occurred_at = send time, for latency
            result = pace(args.rate, args.seconds, lambda: sender.send(factory.make()))
        else:
            result = {"mode": "unpaced", "start_us": time.time_ns() // 1000}
            for event in backlog:
                sender.send(event)
        result.update(sender.finish())
    result["seconds"] = time.perf_counter() - started_wall
    result["cpu_seconds"] = time.process_time() - started_cpu
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
