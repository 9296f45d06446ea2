"""``python -m benchmarks.flood_loader``: good events with bad messages mixed in, unpaced.

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

import schemas
from benchmarks.workload import EventFactory
from producers.sdk import DEFAULT_PRODUCER_CONFIG, AuditProducer
from schemas.codec import SingleObjectCodec
from tests.faults.load import bad_message

OVERSIZED, DUPLICATE = "oversized", "duplicate_id"
OVERSIZED_SHARE, DUPLICATE_SHARE = 0.02, 0.08
OVERSIZED_PADDING = 66 * 1024  # over stream.admission's 64 KiB record limit
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


def send(
    servers: str, topic: str, events: list[dict[str, Any]], bad_per_good: float, seed: int
) -> dict[str, Any]:
    """Send ``events`` with bad messages mixed in; wait for every acknowledgement."""
    rng = random.Random(seed)
    codec = SingleObjectCodec(schemas.load_schema(schemas.AUTH_EVENT))
    raw = Producer({**DEFAULT_PRODUCER_CONFIG, **_QUEUE, "bootstrap.servers": servers})
    sent_kinds: Counter[str] = Counter()
    acknowledged_kinds: Counter[str] = Counter()

    def delivered(kind: str, error: KafkaError | None, message: Message) -> None:
        if error is None:
            acknowledged_kinds[kind] += 1

    started_wall, started_cpu = time.perf_counter(), time.process_time()
    budget = 0.0
    with AuditProducer(servers, topic, config=_QUEUE) as producer:
        for index, event in enumerate(events):
            producer.send(event)
            budget += bad_per_good
            while budget >= 1.0:
                budget -= 1.0
                kind, key, value = flood_message(rng, codec, events, index)
                sent_kinds[kind] += 1
                on_delivery = functools.partial(delivered, kind)
                raw.produce(topic, value, key.encode(), on_delivery=on_delivery)
            raw.poll(0)
        left = raw.flush(120)
        good_sent = producer.sent
    bad_acknowledged = sum(acknowledged_kinds.values())
    return {
        "good_sent": good_sent,
        "good_acknowledged": producer.acknowledged,
        "good_failed": producer.failed,
        "bad_sent": sum(sent_kinds.values()),
        "bad_acknowledged": bad_acknowledged,
        "bad_unacknowledged": left,
        "bad_kinds_sent": dict(sorted(sent_kinds.items())),
        "bad_kinds_acknowledged": dict(sorted(acknowledged_kinds.items())),
        "expected_rejected": bad_acknowledged - acknowledged_kinds[DUPLICATE],
        "seconds": time.perf_counter() - started_wall,
        "cpu_seconds": time.process_time() - started_cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flood_loader")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--good", type=int, required=True)
    parser.add_argument("--bad-per-good", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    # The same good events whatever the flood: the seed of the events is fixed.
    events = EventFactory(args.tenants, args.seed).batch(args.good)
    result = send(args.bootstrap_servers, args.topic, events, args.bad_per_good, args.seed + 1)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
