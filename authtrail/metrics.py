"""Metrics of the worker and the sink for Prometheus, through ``prometheus_client``.

Operators scrape ``http://<host>:<port>/metrics`` (``AUTHTRAIL_WORKER_METRICS_PORT``,
``AUTHTRAIL_SINK_METRICS_PORT``; 0, the default, serves nothing). Each process has a
registry of its own (no module-level state) holding:

* its counters, read from its counters dataclass on every scrape
  (``authtrail_worker_<field>_total``, ``authtrail_sink_<field>_total``);
* latency histograms from the event's ``occurred_at`` (the producer's clock) to sequenced
  and to signed (worker) and to stored (sink), batch sizes (events per signed batch, rows
  per insert);
* ``authtrail_consumer_lag`` per partition of its consumer group(s) (authtrail/lag.py,
  read from Kafka on each scrape);
* the standard ``process_*`` and ``python_*`` metrics of prometheus_client.

The names are what docs/DEPLOYMENT.md and the Grafana dashboard
(deploy/grafana/dashboards/authtrail.json) use; :data:`EXPORTED` lists them, and a test
keeps the dashboard to it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from authtrail.errors import ConfigurationError

_LOG = logging.getLogger(__name__)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds: sub-batch delays up to an hour behind (old events ingested from logs land in +Inf).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000)

WORKER_EVENT_TO_SEQUENCED = "authtrail_worker_event_to_sequenced_seconds"
WORKER_EVENT_TO_SIGNED = "authtrail_worker_event_to_signed_seconds"
WORKER_BATCH_EVENTS = "authtrail_worker_checkpoint_batch_events"
SINK_EVENT_TO_STORED = "authtrail_sink_event_to_stored_seconds"
SINK_INSERT_ROWS = "authtrail_sink_insert_rows"
CONSUMER_LAG = "authtrail_consumer_lag"
CONSUMER_LAG_UP = "authtrail_consumer_lag_up"


def counter_families(
    prefix: str, counters: Any, by_label: Mapping[str, Mapping[str, int]] | None = None
) -> list[CounterMetricFamily]:
    """A counter ``<prefix>_<field>_total`` per int field of dataclass ``counters``;
    ``by_label`` adds, per field name, its samples split by label ``kind``."""
    families = []
    for spec in fields(counters):
        value = getattr(counters, spec.name)
        if not isinstance(value, int):
            continue
        split = (by_label or {}).get(spec.name)
        documentation = f"{spec.name.replace('_', ' ')} so far"
        if split:
            family = CounterMetricFamily(f"{prefix}_{spec.name}", documentation, labels=["kind"])
            for kind, count in sorted(split.items()):
                family.add_metric([kind], count)
        else:
            family = CounterMetricFamily(f"{prefix}_{spec.name}", documentation, value=value)
        families.append(family)
    return families


class CountersCollector(Collector):
    """:func:`counter_families` of ``counters`` on every scrape (the values stay live)."""

    def __init__(
        self, prefix: str, counters: Any, by_label: Mapping[str, Mapping[str, int]] | None = None
    ) -> None:
        self._prefix, self._counters, self._by_label = prefix, counters, by_label

    def collect(self) -> Iterator[Metric]:
        yield from counter_families(self._prefix, self._counters, self._by_label)


class LagCollector(Collector):
    """``authtrail_consumer_lag{group,topic,partition}`` from Kafka on every scrape, and
    ``authtrail_consumer_lag_up`` (0 when Kafka did not answer within ``timeout``)."""

    def __init__(
        self, bootstrap_servers: str, groups: Mapping[str, Sequence[str]], timeout: float = 5.0
    ) -> None:
        self._servers, self._groups, self._timeout = bootstrap_servers, groups, timeout

    def collect(self) -> Iterator[Metric]:
        from authtrail.lag import consumer_lags

        lag = GaugeMetricFamily(
            CONSUMER_LAG, "records after the group's committed offset",
            labels=["group", "topic", "partition"],
        )  # fmt: skip
        up = 1
        try:
            for item in consumer_lags(self._servers, self._groups, timeout=self._timeout):
                lag.add_metric([item.group, item.topic, str(item.partition)], item.lag)
        except ConfigurationError as exc:
            _LOG.warning("consumer lag unavailable: %s", exc)
            up = 0
        yield lag
        yield GaugeMetricFamily(CONSUMER_LAG_UP, "1 when the lag could be read", value=up)


def new_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry with the process, platform and GC collectors and ``collectors``."""
    registry = CollectorRegistry(auto_describe=False)  # never call Kafka when registering
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)
    return registry


def _latency(name: str, until: str, registry: CollectorRegistry) -> Histogram:
    return Histogram(
        name, f"seconds from an event's occurred_at {until}", buckets=LATENCY_BUCKETS,
        registry=registry,
    )  # fmt: skip


class WorkerMetrics:
    """The worker's latency and batch histograms (the observer of stream/worker/sequencing.py).

    An event's signing latency is known only when its batch closes, so the ``occurred_at``
    of each event of an open batch is kept until then (at most a batch per tenant).
    ``clock`` returns seconds since the epoch.
    """

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._to_sequenced = _latency(WORKER_EVENT_TO_SEQUENCED, "to its sequencing", registry)
        self._to_signed = _latency(
            WORKER_EVENT_TO_SIGNED, "to the signing of the checkpoint covering it", registry
        )
        self._batch_events = Histogram(
            WORKER_BATCH_EVENTS, "records per signed checkpoint batch",
            buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip
        self._unsigned: dict[tuple[int, str], list[int]] = {}

    def sequenced(self, partition: int, tenant_id: str, occurred_at_micros: list[int]) -> None:
        """Events of ``tenant_id`` read from ``partition`` got their seq (one worker step:
        the clock is read once for all of them)."""
        now = self._clock()
        for occurred_at in occurred_at_micros:
            self._to_sequenced.observe(max(now - occurred_at / 1e6, 0.0))
        self._unsigned.setdefault((partition, tenant_id), []).extend(occurred_at_micros)

    def signed(self, partition: int, tenant_id: str, batch_records: int) -> None:
        """A checkpoint of ``batch_records`` records closed ``tenant_id``'s batch."""
        self._batch_events.observe(batch_records)
        now = self._clock()
        for occurred_at in self._unsigned.pop((partition, tenant_id), ()):
            self._to_signed.observe(max(now - occurred_at / 1e6, 0.0))

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions another worker owns now: their open batches close there."""
        gone = set(partitions)
        self._unsigned = {key: v for key, v in self._unsigned.items() if key[0] not in gone}


class SinkMetrics:
    """The sink's latency and insert-size histograms. ``clock``: seconds since the epoch."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Per chained message, from its newest event: the sink never decodes the records.
        self._to_stored = _latency(
            SINK_EVENT_TO_STORED, "to its insert (per chained batch, its newest event)", registry
        )
        self._insert_rows = Histogram(
            SINK_INSERT_ROWS, "rows per insert, by table", ["table"],
            buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip

    def inserted(self, table: str, rows: int) -> None:
        """One insert stored ``rows`` rows in ``table``."""
        self._insert_rows.labels(table).observe(rows)

    def stored_batch(self, newest_occurred_at: int) -> None:
        """A chained message's records were stored; ``newest_occurred_at`` in µs."""
        self._to_stored.observe(max(self._clock() - newest_occurred_at / 1e6, 0.0))


def exported_names() -> frozenset[str]:
    """Every metric name a scrape of the worker or the sink can show (counters with their
    ``_total``, histograms by family name), besides prometheus_client's own."""
    from authtrail.sinks.sink import SinkCounters
    from authtrail.stream.worker.sequencing import Counters

    counters = {f"authtrail_worker_{spec.name}_total" for spec in fields(Counters)}
    counters |= {f"authtrail_sink_{spec.name}_total" for spec in fields(SinkCounters)}
    return frozenset(
        counters
        | {WORKER_EVENT_TO_SEQUENCED, WORKER_EVENT_TO_SIGNED, WORKER_BATCH_EVENTS,
           SINK_EVENT_TO_STORED, SINK_INSERT_ROWS, CONSUMER_LAG, CONSUMER_LAG_UP}
    )  # fmt: skip


class MetricsServer:
    """Serves ``registry`` on ``GET /metrics`` at ``host:port`` until :meth:`close`.

    Raises ConfigurationError when the port cannot be bound.
    """

    def __init__(self, port: int, registry: CollectorRegistry, host: str = "0.0.0.0") -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would drown the process log

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._closed = False
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        _LOG.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
