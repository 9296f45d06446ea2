"""Metrics of the worker and the sink through prometheus_client (authtrail/metrics.py)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from authtrail.broker import free_loopback_port
from authtrail.errors import ConfigurationError
from authtrail.metrics import (
    CONTENT_TYPE,
    CountersCollector,
    LagCollector,
    MetricsServer,
    SinkMetrics,
    WorkerMetrics,
    exported_names,
    new_registry,
)
from authtrail.stream.worker.sequencing import Counters


def _samples(registry: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()  # type: ignore[arg-type]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_are_exported_live_with_their_kinds() -> None:
    @dataclass
    class Some:
        stored: int = 4
        rejected: int = 3
        name: str = "not a number"

    some = Some()
    registry = new_registry(
        CountersCollector("p", some, {"rejected": Counter(empty=1, oversized=2)})
    )
    text = generate_latest(registry).decode()
    assert "# TYPE p_stored_total counter\np_stored_total 4.0\n" in text
    assert 'p_rejected_total{kind="empty"} 1.0\np_rejected_total{kind="oversized"} 2.0\n' in text
    assert "p_name" not in text
    some.stored = 9  # read on each scrape
    assert _samples(registry)[("p_stored_total", ())] == 9


def test_process_and_python_metrics_are_there() -> None:
    samples = _samples(new_registry())
    names = {name for name, _ in samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert any(name.startswith("python_gc_") for name in names)


def test_worker_latency_from_occurred_at_to_sequenced_and_signed() -> None:
    now = [100.0]
    registry = new_registry()
    metrics = WorkerMetrics(registry, clock=lambda: now[0])
    metrics.sequenced(0, "acme", [99_900_000])  # 0.1 s after it occurred
    metrics.sequenced(0, "acme", [97_000_000])  # 3 s, a step later
    metrics.sequenced(1, "globex", [99_000_000])
    now[0] = 102.0
    metrics.signed(0, "acme", 2)  # the two acme events: 2.1 s and 5 s after they occurred
    metrics.forget([1])  # globex's batch closes on another worker
    now[0] = 200.0
    metrics.signed(1, "globex", 1)  # nothing of globex is waiting here any more
    samples = _samples(registry)

    def bucket(name: str, le: str) -> float:
        return samples[(f"{name}_bucket", (("le", le),))]

    sequenced = "authtrail_worker_event_to_sequenced_seconds"
    assert (bucket(sequenced, "0.1"), bucket(sequenced, "1.0"), bucket(sequenced, "5.0")) == (
        1, 2, 3,
    )  # fmt: skip
    assert samples[(f"{sequenced}_sum", ())] == pytest.approx(4.1)
    signed = "authtrail_worker_event_to_signed_seconds"
    assert (bucket(signed, "2.5"), bucket(signed, "5.0"), samples[(f"{signed}_count", ())]) == (
        1, 2, 2,
    )  # fmt: skip
    batches = "authtrail_worker_checkpoint_batch_events"
    assert (bucket(batches, "1.0"), bucket(batches, "10.0")) == (1, 2)


def test_one_worker_step_reports_its_events_at_once() -> None:
    now = [100.0]
    registry = new_registry()
    metrics = WorkerMetrics(registry, clock=lambda: now[0])
    metrics.sequenced(0, "acme", [99_900_000, 97_000_000])
    now[0] = 102.0
    metrics.signed(0, "acme", 2)
    samples = _samples(registry)
    assert samples[("authtrail_worker_event_to_sequenced_seconds_count", ())] == 2
    assert samples[("authtrail_worker_event_to_sequenced_seconds_sum", ())] == pytest.approx(3.1)
    assert samples[("authtrail_worker_event_to_signed_seconds_sum", ())] == pytest.approx(7.1)


def test_sink_latency_and_insert_sizes() -> None:
    registry = new_registry()
    metrics = SinkMetrics(registry, clock=lambda: 50.0)
    metrics.inserted("events", 2)  # two chained batches in one insert
    metrics.stored_batch(49_000_000)
    metrics.stored_batch(51_000_000)
    metrics.inserted("checkpoints", 1)
    samples = _samples(registry)
    stored = "authtrail_sink_event_to_stored_seconds"
    # An event from a clock ahead of ours counts as 0 s, not as a negative latency.
    assert samples[(f"{stored}_bucket", (("le", "0.005"),))] == 1
    assert samples[(f"{stored}_sum", ())] == 1.0
    rows = "authtrail_sink_insert_rows"
    assert samples[(f"{rows}_sum", (("table", "events"),))] == 2
    assert samples[(f"{rows}_count", (("table", "checkpoints"),))] == 1


def test_lag_collector_says_when_kafka_does_not_answer() -> None:
    port = free_loopback_port()  # nothing listens there
    collector = LagCollector(f"127.0.0.1:{port}", {"g": ["t"]}, timeout=0.5)
    samples = _samples(new_registry(collector))
    assert samples[("authtrail_consumer_lag_up", ())] == 0
    assert not any(name == "authtrail_consumer_lag" for name, _ in samples)


def test_exported_names_are_what_a_scrape_shows() -> None:
    from authtrail.sinks.sink import SinkCounters

    registry = new_registry(
        CountersCollector("authtrail_worker", Counters()),
        CountersCollector("authtrail_sink", SinkCounters()),
        LagCollector(f"127.0.0.1:{free_loopback_port()}", {"g": ["t"]}, timeout=0.5),
    )
    WorkerMetrics(registry)
    SinkMetrics(registry)
    # As a query names them: a counter with its _total, a histogram by its family name.
    shown = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in registry.collect()
        if family.name.startswith("authtrail_")
    }
    assert shown == exported_names()


def test_served_over_http_and_refuses_other_paths() -> None:
    counters = Counters(sequenced=7, rejected=2)
    registry = new_registry(CountersCollector("authtrail_worker", counters))
    server = MetricsServer(0, registry, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE
            body = response.read().decode()
        assert "authtrail_worker_sequenced_total 7.0\n" in body
        counters.sequenced = 9
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            assert "authtrail_worker_sequenced_total 9.0\n" in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{url}/other", timeout=10)
        assert error.value.code == 404
        with pytest.raises(ConfigurationError, match="cannot serve metrics"):
            MetricsServer(server.port, registry, host="127.0.0.1")  # the port is taken
    finally:
        server.close()
    server.close()  # idempotent
