"""Prometheus and Grafana in docker-compose.yml agree with what authtrail exports.

No Docker engine runs here, so the files are parsed and compared with the code: the
scrape targets with the services' metrics ports, the provisioned data sources with the
ClickHouse service and the analyst user of init-db, and every metric the dashboard
queries with the names a scrape of the worker or the sink shows. Each check runs on
the real files (it must pass) and on a tampered copy (it must fail). The dashboard's SQL
runs against a real store in tests/integration/test_front_roles.py.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authtrail.metrics import exported_names, new_registry
from tests.unit.test_compose import ROOT, Compose, environment, load_compose

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "authtrail.json"
_METRIC = re.compile(r"\b(?:authtrail|process|python)_[a-z0-9_]+")
_HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


def _configs(compose: Compose, service: str) -> dict[str, Path]:
    """Target path in the container -> file in this repository, of a service's configs."""
    declared = compose.get("configs") or {}
    mounted = {}
    for item in compose["services"][service].get("configs") or []:
        source = declared[item["source"]]["file"]
        mounted[item["target"]] = (ROOT / source).resolve()
    return mounted


def _yaml_at(compose: Compose, service: str, target: str) -> Any:
    return yaml.safe_load(_configs(compose, service)[target].read_text())


def _targets(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield from panel.get("targets") or []


def _standard_names() -> set[str]:
    """prometheus_client's own process and Python metrics, as a query names them."""
    return {
        family.name + ("_total" if family.type == "counter" else "")
        for family in new_registry().collect()
    }


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads, histogram series by family name."""
    names = set()
    for name in _METRIC.findall(expression):
        for suffix in _HISTOGRAM_PARTS:
            if name.endswith(suffix) and name.removesuffix(suffix).endswith(
                ("_seconds", "_events", "_rows")
            ):
                name = name.removesuffix(suffix)
        names.add(name)
    return names


# --- checks: each raises AssertionError on drift --------------------------------------------


def check_config_files_exist(compose: Compose, dashboard: dict[str, Any]) -> None:
    for service in ("prometheus", "grafana"):
        assert service in compose["services"], f"no {service} service"
        for target, path in _configs(compose, service).items():
            assert path.is_file(), f"{service}: {target} comes from missing {path}"


def check_scrape_targets(compose: Compose, dashboard: dict[str, Any]) -> None:
    config = _yaml_at(compose, "prometheus", "/etc/prometheus/prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_port = int(environment(compose["services"]["worker"])["AUTHTRAIL_WORKER_METRICS_PORT"])
    sink_port = int(environment(compose["services"]["sink"])["AUTHTRAIL_SINK_METRICS_PORT"])
    (discovery,) = jobs["authtrail-worker"]["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and discovery["port"] == worker_port, (
        "Prometheus does not scrape every worker replica on its metrics port"
    )
    (static,) = jobs["authtrail-sink"]["static_configs"]
    assert static["targets"] == [f"sink:{sink_port}"], "Prometheus misses the sink's port"


def check_data_sources(compose: Compose, dashboard: dict[str, Any]) -> None:
    provisioned = _yaml_at(
        compose, "grafana", "/etc/grafana/provisioning/datasources/authtrail.yml"
    )
    sources = {source["uid"]: source for source in provisioned["datasources"]}
    prometheus = sources["authtrail-prometheus"]
    assert prometheus["type"] == "prometheus" and prometheus["url"] == "http://prometheus:9090"
    clickhouse = sources["authtrail-clickhouse"]
    assert clickhouse["type"] == "grafana-clickhouse-datasource"
    grafana = environment(compose["services"]["grafana"])
    assert clickhouse["type"] in grafana["GF_PLUGINS_PREINSTALL"].split(","), "plugin missing"
    settings = clickhouse["jsonData"]
    database = environment(compose["services"]["clickhouse"])["CLICKHOUSE_DB"]
    assert (settings["host"], settings["port"], settings["protocol"]) == (
        "clickhouse", 8123, "http",
    ), "the ClickHouse data source does not point at the clickhouse service"  # fmt: skip
    assert settings["username"] == "analyst", "Grafana must read as the analyst"
    assert settings["defaultDatabase"] == database, "Grafana reads another database"
    variable = clickhouse["secureJsonData"]["password"].removeprefix("$").strip("{}")
    assert variable in grafana, f"${variable} is not in the grafana service's environment"
    for target in _targets(dashboard):
        assert target["datasource"]["uid"] in sources, f"unknown data source {target}"


def check_dashboard_provisioned(compose: Compose, dashboard: dict[str, Any]) -> None:
    provider = _yaml_at(compose, "grafana", "/etc/grafana/provisioning/dashboards/authtrail.yml")
    (entry,) = provider["providers"]
    folder = entry["options"]["path"].rstrip("/")
    mounted = _configs(compose, "grafana")
    assert mounted.get(f"{folder}/authtrail.json") == DASHBOARD.resolve(), (
        "the dashboard is not mounted where the provider reads"
    )


def check_dashboard_metrics(compose: Compose, dashboard: dict[str, Any]) -> None:
    known = exported_names() | _standard_names()
    used: set[str] = set()
    for target in _targets(dashboard):
        if "expr" in target:
            names = metric_names(target["expr"])
            assert names, f"no metric in {target['expr']!r}"
            used |= names
    unknown = used - known
    assert not unknown, f"the dashboard queries metrics nobody exports: {sorted(unknown)}"
    # The operator's essentials are on it: lag, the three latencies, batch sizes.
    assert {"authtrail_consumer_lag", "authtrail_worker_event_to_sequenced_seconds",
            "authtrail_worker_event_to_signed_seconds", "authtrail_sink_event_to_stored_seconds",
            "authtrail_worker_checkpoint_batch_events", "authtrail_sink_insert_rows",
            "process_resident_memory_bytes"} <= used  # fmt: skip


CHECKS: list[Callable[[Compose, dict[str, Any]], None]] = [
    check_config_files_exist,
    check_scrape_targets,
    check_data_sources,
    check_dashboard_provisioned,
    check_dashboard_metrics,
]


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_monitoring_files_pass(
    check: Callable[[Compose, dict[str, Any]], None], compose: Compose, dashboard: dict[str, Any]
) -> None:
    check(compose, dashboard)


def test_metric_names_known_answers() -> None:
    expression = (
        "histogram_quantile(0.99, sum by (le) (rate(authtrail_sink_event_to_stored_seconds_bucket"
        "[5m]))) / sum(rate(authtrail_worker_sequenced_total[1m])) + process_cpu_seconds_total"
    )
    assert metric_names(expression) == {
        "authtrail_sink_event_to_stored_seconds", "authtrail_worker_sequenced_total",
        "process_cpu_seconds_total",
    }  # fmt: skip


def _tamper_compose(compose: Compose, service: str, key: str, value: Any) -> Compose:
    tampered = copy.deepcopy(compose)
    tampered["services"][service]["environment"][key] = value
    return tampered


def test_tampered_files_fail(compose: Compose, dashboard: dict[str, Any]) -> None:
    cases: list[tuple[Callable[[Compose, dict[str, Any]], None], Compose, dict[str, Any]]] = []
    cases.append((check_scrape_targets,
                  _tamper_compose(compose, "worker", "AUTHTRAIL_WORKER_METRICS_PORT", "9999"),
                  dashboard))  # fmt: skip
    cases.append((check_scrape_targets,
                  _tamper_compose(compose, "sink", "AUTHTRAIL_SINK_METRICS_PORT", "9999"),
                  dashboard))  # fmt: skip
    cases.append(
        (
            check_data_sources,
            _tamper_compose(compose, "grafana", "GF_PLUGINS_PREINSTALL", ""),
            dashboard,
        )
    )
    no_password = copy.deepcopy(compose)
    del no_password["services"]["grafana"]["environment"]["CLICKHOUSE_ANALYST_PASSWORD"]
    cases.append((check_data_sources, no_password, dashboard))
    missing = copy.deepcopy(compose)
    missing["configs"]["grafana-dashboard-authtrail"]["file"] = "./deploy/nothing.json"
    cases.append((check_config_files_exist, missing, dashboard))
    cases.append((check_dashboard_provisioned, missing, dashboard))
    for expression in ("rate(authtrail_worker_sequenced[1m])",  # no _total
                       "authtrail_sink_event_to_stored_bucket", "sum(up)"):  # fmt: skip
        renamed = copy.deepcopy(dashboard)
        renamed["panels"][0]["targets"][0]["expr"] = expression
        cases.append((check_dashboard_metrics, compose, renamed))
    foreign = copy.deepcopy(dashboard)
    foreign["panels"][0]["targets"][0]["datasource"]["uid"] = "elsewhere"
    cases.append((check_data_sources, compose, foreign))
    for check, tampered_compose, tampered_dashboard in cases:
        with pytest.raises((AssertionError, KeyError)):
            check(tampered_compose, tampered_dashboard)
