"""The events benchmarks send: realistic shapes from the traffic model, cheap to make.

:mod:`authtrail.producers.traffic` models sessions, MFA and bursts, but picking among 10 000
weighted tenants per event would cost more than the pipeline it feeds. So a few thousand
of its events serve as templates, and each benchmark event is a template with a chosen
tenant, a fresh event id and (when latency is measured) ``occurred_at`` = now.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

from authtrail.producers.traffic import TrafficConfig, generate_events

TEMPLATE_COUNT = 4000


def tenant_names(count: int) -> list[str]:
    """``count`` tenant ids: ``tenant-00000``, ``tenant-00001``, ..."""
    return [f"tenant-{index:05d}" for index in range(count)]


def templates(seed: int = 7) -> list[dict[str, Any]]:
    """Generated events (logins, failures, MFA, tokens, bursts) to copy from."""
    config = TrafficConfig(tenants=5, users=200, burst_every=400)
    return list(itertools.islice(generate_events(config, seed), TEMPLATE_COUNT))


#: A backlog as sources make it, 10 000 events/s: 300 000 events span 30 s of event time.
#: Stamped 1 µs apart (before 2026-12-06) they spanned 0.3 s, less than the guard's
#: allowed lateness (5 s): the lockout and spraying detectors, which apply an event once
#: its tenant's event time has passed it by that much, applied none during a drain, and
#: drains measured the worker without that work (~8 µs/event, docs/PERFORMANCE.md).
BACKLOG_SPACING_US = 100


class EventFactory:
    """Makes benchmark events for ``tenants`` tenants, chosen uniformly at random.

    Deterministic per ``seed`` except ``occurred_at`` when ``now`` is used.
    """

    def __init__(self, tenants: int, seed: int) -> None:
        self._rng = random.Random(seed)
        self._tenants = tenant_names(tenants)
        self._templates = templates()
        # Event ids shaped as UUID v4: 74 random bits per factory, then a 48-bit counter.
        # Unique within a factory (and across factories, but for a 2^-74 chance), and
        # ~0.2 µs each where uuid.UUID(int=...) took ~2.4: the live phases' loader makes
        # an event per send, beside the pipeline on the same two cores.
        prefix = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        self._id_prefix = prefix[:24]
        self._serial = itertools.count()

    def make(self, occurred_at: int | None = None) -> dict[str, Any]:
        """One event; ``occurred_at`` in µs since the epoch, default now."""
        rng = self._rng
        tenant = self._tenants[rng.randrange(len(self._tenants))]
        event = dict(self._templates[rng.randrange(len(self._templates))])
        event["tenant_id"] = tenant
        event["realm"] = tenant
        event["event_id"] = f"{self._id_prefix}{next(self._serial):012x}"
        event["occurred_at"] = time.time_ns() // 1000 if occurred_at is None else occurred_at
        return event

    def batch(self, count: int) -> list[dict[str, Any]]:
        """``count`` events of a backlog (for throughput runs, where latency is not read):
        stamped :data:`BACKLOG_SPACING_US` apart, the last one now."""
        first = time.time_ns() // 1000 - (count - 1) * BACKLOG_SPACING_US
        return [self.make(first + index * BACKLOG_SPACING_US) for index in range(count)]

    def stream(self) -> Iterator[dict[str, Any]]:
        """Events stamped at the moment each is made, forever."""
        while True:
            yield self.make()
