"""``authtrail loadgen``: send generated traffic to Kafka at a chosen rate.

The traffic itself comes from :mod:`authtrail.producers.traffic` (pure, deterministic per seed);
this module is the thin runner around it: :class:`authtrail.producers.sdk.producer.AuditProducer`
for delivery, a :class:`TokenBucket` for pacing, a progress bar on stderr, and a
:class:`LoadgenSummary` for the caller to print.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from authtrail.errors import InvalidArgumentError
from authtrail.producers.sdk.envelope import DEFAULT_ENVELOPE_BYTES
from authtrail.producers.traffic import SERVICES, TrafficConfig, generate_events, tenant_ids

__all__ = [
    "SERVICES",
    "LoadgenSummary",
    "TokenBucket",
    "TrafficConfig",
    "generate_events",
    "run_loadgen",
    "tenant_ids",
]


class TokenBucket:
    """Paces work at ``rate`` per second, allowing bursts of up to ``capacity`` at once.

    Pure: the caller passes the time. :meth:`reserve` takes one token and returns how long
    to wait before using it; waits accumulate, so a caller that sleeps as told keeps the
    long-run rate exact. Requires ``rate > 0`` and ``capacity >= 1``, else
    :class:`InvalidArgumentError`.
    """

    def __init__(self, rate: float, capacity: float | None = None, now: float = 0.0) -> None:
        capacity = max(1.0, rate / 20) if capacity is None else capacity  # 50 ms of slack
        if not rate > 0 or not capacity >= 1:
            raise InvalidArgumentError(f"need rate > 0 and capacity >= 1, got {rate}, {capacity}")
        self._rate = rate
        self._capacity = capacity
        self._tokens = capacity
        self._updated = now

    def reserve(self, now: float) -> float:
        """Take one token at time ``now`` (seconds); return the seconds to wait first."""
        elapsed = max(0.0, now - self._updated)
        self._updated = max(self._updated, now)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate) - 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


@dataclass(frozen=True)
class LoadgenSummary:
    """What a loadgen run did. ``seconds`` includes the final flush; ``rate`` is sent/s.

    ``error`` is the :class:`DeliveryError` message when some events were not delivered
    (then ``failed > 0``); ``interrupted`` says Ctrl-C ended the run early.
    """

    sent: int
    acknowledged: int
    failed: int
    seconds: float
    rate: float
    error: str | None = None
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Progress:
    """A one-line progress bar; on a non-terminal, a plain line every few seconds."""

    stream: TextIO
    total: int | None
    duration: float | None
    interactive: bool
    _shown_at: float = field(default=-1e9, init=False)

    def show(self, sent: int, acknowledged: int, elapsed: float, final: bool = False) -> None:
        interval = 0.1 if self.interactive else 5.0
        if not final and elapsed - self._shown_at < interval:
            return
        self._shown_at = elapsed
        if self.total:
            fraction, of = sent / self.total, f"/{self.total}"
        elif self.duration:
            fraction, of = elapsed / self.duration, ""
        else:
            fraction, of = None, ""
        bar = "" if fraction is None else f"[{'#' * int(30 * min(1.0, fraction)):<30}] "
        rate = sent / elapsed if elapsed > 0 else 0.0
        line = f"{bar}{sent}{of} sent, {acknowledged} acknowledged, {rate:,.0f}/s, {elapsed:.1f}s"
        end = "\n" if final or not self.interactive else ""
        self.stream.write(("\r\x1b[K" if self.interactive else "") + line + end)
        self.stream.flush()


def run_loadgen(
    bootstrap_servers: str,
    topic: str,
    *,
    rate: float,
    count: int | None = None,
    duration: float | None = None,
    tenants: int = 5,
    users: int = 50,
    failure_share: float = 0.1,
    burst_every: int = 0,
    seed: int = 0,
    progress: bool | None = True,
    partitions: int | None = None,
    producer_config: Mapping[str, Any] | None = None,
    envelope_bytes: int = DEFAULT_ENVELOPE_BYTES,
    close_timeout: float = 30.0,
    stream: TextIO | None = None,
) -> LoadgenSummary:
    """Send generated traffic to ``topic`` until ``count`` events or ``duration`` seconds.

    ``rate`` is events per second (0: as fast as possible). With neither ``count`` nor
    ``duration`` it runs until Ctrl-C; Ctrl-C always ends a run cleanly (flush, summary).
    ``partitions``: create ``topic`` with that many partitions if missing (and check an
    existing one). ``progress``: True always, None only if ``stream`` (default stderr)
    is a terminal, False never. The simulated clock starts now and runs at ``rate``
    (1000/s when 0), so ``occurred_at`` looks live. Events of one partition share
    envelopes of up to ``envelope_bytes`` (0: one message per event; docs/PIPELINE.md).

    Delivery failures do not raise: they are counted in the summary (``failed``,
    ``error``); the caller decides the exit code.

    Raises:
        InvalidArgumentError: a negative rate or count, a non-positive duration, or a
            traffic parameter out of range (see :class:`TrafficConfig`).
        ConfigurationError: no broker answers, or the topic has another partition count.
        ProducerQueueFullError: the broker took nothing for 30 s (queue stayed full).
        DeliveryError: the producer failed fatally mid-run.
    """
    from authtrail.errors import DeliveryError
    from authtrail.producers.sdk import AuditProducer
    from authtrail.topics import TopicSpec, check_reachable, ensure_topics

    if rate < 0 or (count is not None and count < 0) or (duration is not None and duration <= 0):
        raise InvalidArgumentError(
            f"need rate >= 0, count >= 0, duration > 0; got {rate}, {count}, {duration}"
        )
    config = TrafficConfig(
        tenants=tenants,
        users=users,
        failure_share=failure_share,
        burst_every=burst_every,
        events_per_second=rate or 1000.0,
        start_us=time.time_ns() // 1000,
    )
    stream = stream or sys.stderr
    check_reachable(bootstrap_servers, timeout=10.0)
    if partitions is not None:
        ensure_topics(bootstrap_servers, [TopicSpec(topic, partitions)])
    show = progress if progress is not None else stream.isatty()
    bar = _Progress(stream, count, duration, interactive=stream.isatty()) if show else None
    producer = AuditProducer(
        bootstrap_servers, topic, config=producer_config, envelope_bytes=envelope_bytes
    )
    started = time.monotonic()
    bucket = TokenBucket(rate, now=started) if rate > 0 else None
    interrupted = False
    error: str | None = None
    try:
        for event in generate_events(config, seed):
            now = time.monotonic()
            if (count is not None and producer.sent >= count) or (
                duration is not None and now - started >= duration
            ):
                break
            if bucket is not None:
                _wait(producer, now + bucket.reserve(now))
            producer.send(event)
            if bar is not None:
                bar.show(producer.sent, producer.acknowledged, time.monotonic() - started)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            producer.close(close_timeout)
        except DeliveryError as exc:
            error = str(exc)
    seconds = time.monotonic() - started
    if bar is not None:
        bar.show(producer.sent, producer.acknowledged, seconds, final=True)
    return LoadgenSummary(
        sent=producer.sent,
        acknowledged=producer.acknowledged,
        failed=producer.failed,
        seconds=seconds,
        rate=producer.sent / seconds if seconds > 0 else 0.0,
        error=error,
        interrupted=interrupted,
    )


def _wait(producer: Any, until: float) -> None:
    """Sleep until ``until`` (monotonic) while serving delivery reports."""
    # Sub-millisecond waits cost more in wake-ups than they pace; the bucket carries them.
    while (remaining := until - time.monotonic()) > 0.001:
        producer.poll(remaining)
