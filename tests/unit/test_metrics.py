"""Prometheus text exposition of the worker's and sink's counters (authtrail/metrics.py)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass

import pytest

from authtrail.errors import ConfigurationError
from authtrail.metrics import CONTENT_TYPE, Family, MetricsServer, counter_families, render
from stream.worker import Counters


def test_render_known_answer() -> None:
    families = [
        Family("a_total", "things\nseen", samples=[({}, 3.0)]),
        Family("b", "odd", kind="gauge",
               samples=[({"kind": 'x"y\\z', "at": "1"}, 0.5), ({"kind": "n"}, float("nan"))]),
    ]  # fmt: skip
    assert render(families) == (
        b"# HELP a_total things\\nseen\n"
        b"# TYPE a_total counter\n"
        b"a_total 3\n"
        b"# HELP b odd\n"
        b"# TYPE b gauge\n"
        b'b{at="1",kind="x\\"y\\\\z"} 0.5\n'
        b'b{kind="n"} NaN\n'
    )


def test_counter_families_split_by_kind_where_given() -> None:
    @dataclass
    class Some:
        stored: int = 4
        rejected: int = 3
        name: str = "not a number"

    families = counter_families("p", Some(), {"rejected": Counter(empty=1, oversized=2)})
    assert [(f.name, f.samples) for f in families] == [
        ("p_stored_total", [({}, 4.0)]),
        ("p_rejected_total", [({"kind": "empty"}, 1.0), ({"kind": "oversized"}, 2.0)]),
    ]


def test_served_over_http_and_refuses_other_paths() -> None:
    counters = Counters(sequenced=7, rejected=2)
    server = MetricsServer(0, lambda: counter_families("authtrail_worker", counters),
                           host="127.0.0.1")  # fmt: skip
    try:
        url = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE
            body = response.read().decode()
        assert "authtrail_worker_sequenced_total 7\n" in body
        counters.sequenced = 9  # read on each scrape
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            assert "authtrail_worker_sequenced_total 9\n" in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{url}/other", timeout=10)
        assert error.value.code == 404
        with pytest.raises(ConfigurationError, match="cannot serve metrics"):
            MetricsServer(server.port, list, host="127.0.0.1")  # the port is taken
    finally:
        server.close()
    server.close()  # idempotent
