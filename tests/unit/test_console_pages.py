"""The web console's pure parts: charts, pages, forms, filters and the stored verify report.

What the pipeline stores is whatever clients sent to an identity provider, so every test
here feeds markup and quotes where a value goes and checks that none of it comes out live.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from authtrail.console.charts import bar_chart, line_chart
from authtrail.console.pages import (
    SCRIPT,
    event_page,
    integrity_page,
    lockout_page,
    lockouts_page,
    parse_position,
    parse_search,
    parse_time,
    search_page,
    with_evidence,
)
from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.sinks.console_queries import SEARCH_COLUMNS, SearchFilters, SearchPage
from authtrail.verify_report import StoredReport, TenantVerdict, read_report, write_report

HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


def _live_markup(markup: str) -> list[str]:
    """Tags a browser would build from ``markup`` that the hostile text tried to add."""
    return re.findall(r"<(script|img)\b", markup.replace('<script src="/static/console.js">', ""))


def test_chart_labels_are_escaped_and_bars_are_proportional() -> None:
    chart = bar_chart(HOSTILE, [(HOSTILE, 10), ("b", 5), ("c", 0)])
    assert _live_markup(chart) == []
    widths = [float(w) for w in re.findall(r'<rect x="150" y="\d+" width="([\d.]+)"', chart)]
    assert widths == [340.0, 170.0, 0.0]  # 560 wide: 340 px for the bars, the largest full


def test_line_chart_draws_each_series_and_escapes_names() -> None:
    chart = line_chart("t", ["a", HOSTILE], {HOSTILE: [1, 2], "other": [0, 4]})
    assert chart.count("<polyline") == 2 and _live_markup(chart) == []
    top = re.search(r'text-anchor="end" [^>]*>([\d,]+)</text>', chart)
    assert top and top[1] == "4"
    assert 'r="3"' in line_chart("t", ["only"], {"s": [5]})  # one point: a dot
    assert "no data yet" in line_chart("t", [], {}) and "no data yet" in bar_chart("t", [])


def test_parse_time_reads_utc_and_offsets() -> None:
    assert parse_time("", "from") is None
    assert parse_time("2026-01-01T10:00", "from") == 1_767_261_600_000_000
    assert parse_time("2026-01-01T12:00+02:00", "from") == 1_767_261_600_000_000
    assert parse_time("2026-01-01", "from") == 1_767_225_600_000_000
    with pytest.raises(InvalidArgumentError, match=r"until: .* is not a time"):
        parse_time("yesterday'; DROP TABLE events", "until")


def test_search_filters_keep_values_out_of_the_sql() -> None:
    filters = parse_search(
        {"tenant": HOSTILE, "user": "' OR 1=1 --", "ip": "", "type": "LOGIN",
         "since": "2026-01-01T00:00", "until": "", "page": "3"}
    )  # fmt: skip
    where, parameters = filters.where()
    assert HOSTILE not in where and "OR 1=1" not in where
    assert parameters == {"tenant": HOSTILE, "user": "' OR 1=1 --", "type": "LOGIN",
                          "since": 1_767_225_600_000_000}  # fmt: skip
    assert "client_ip" not in where and "until" not in where
    assert SearchFilters().where() == ("1", {})
    assert filters.page == 3


@pytest.mark.parametrize("page", ["0", "abc", "-1", "2001"])
def test_search_refuses_pages_out_of_range(page: str) -> None:
    with pytest.raises(InvalidArgumentError, match="page"):
        parse_search({"page": page})


def test_event_positions_must_be_a_tenant_and_a_positive_seq() -> None:
    assert parse_position({"tenant": "acme", "seq": "7"}) == ("acme", 7)
    for query in ({"tenant": "acme"}, {"seq": "1"}, {"tenant": "a", "seq": "0"},
                  {"tenant": "a", "seq": "1 OR 1=1"}):  # fmt: skip
        with pytest.raises(InvalidArgumentError):
            parse_position(query)


def test_search_page_escapes_the_form_and_the_results() -> None:
    query = {"tenant": "acme", "user": HOSTILE, "ip": HOSTILE, "page": "2"}
    row = dict.fromkeys(SEARCH_COLUMNS, HOSTILE) | {"tenant_id": "acme", "seq": 9}
    result = SearchPage([row], total=120, page=2, page_size=50)
    markup = search_page(query, ["acme", HOSTILE], ["LOGIN"], result)
    assert _live_markup(markup) == []
    assert "120 matching events; showing 51 to 51 (page 2)" in markup
    assert 'rel="prev"' in markup and 'rel="next"' in markup
    assert 'href="/event?tenant=acme&amp;seq=9"' in markup
    last = SearchPage([row], total=51, page=2, page_size=50)
    assert 'rel="next"' not in search_page(query, [], [], last)
    assert _live_markup(search_page(query, [], [], None, error=HOSTILE)) == []


def test_event_page_shows_the_chain_and_offers_the_proof_once_signed() -> None:
    detail = {"event_id": HOSTILE, "attributes": {"k": HOSTILE}, "user_id": None,
              "prev_hash": "00" * 32, "hash": "ab" * 32, "last_seq": 12}  # fmt: skip
    signed = event_page(HOSTILE, 3, detail | {"signed_by_size": 10})
    assert _live_markup(signed) == []
    assert "Record 3 of 12" in signed and 'href="/proof?tenant=' in signed
    assert "<th>user_id</th>" not in signed  # fields without a value are left out
    unsigned = event_page("acme", 12, detail | {"signed_by_size": None})
    assert "Not signed yet" in unsigned and "/proof?" not in unsigned
    assert "seq 13" not in unsigned and "seq 11" in unsigned  # no link past the last seq
    assert "No stored event" in event_page(HOSTILE, 1, None)


def test_lockout_panel_rows_are_escaped_and_the_script_writes_text_only() -> None:
    markup = lockouts_page([{"event_type": HOSTILE, "user_name": HOSTILE, "tenant_id": "t"}])
    assert _live_markup(markup) == []
    assert "innerHTML" not in SCRIPT and "textContent" in SCRIPT


def test_each_decision_links_to_its_evidence_by_a_path_built_here() -> None:
    lock = with_evidence({"event_type": "ACCOUNT_LOCKED", "tenant_id": "a&b", "seq": 7,
                          "failure_count": 3})  # fmt: skip
    assert (lock["evidence_url"], lock["evidence"]) == ("/lockout?tenant=a%26b&seq=7", "3 failures")
    spray = with_evidence({"event_type": "BRUTE_FORCE_SUSPECTED", "tenant_id": "t", "seq": 9,
                           "client_ip": 'javascript:alert(1)"'})  # fmt: skip
    assert spray["evidence_url"] == (
        "/search?tenant=t&ip=javascript%3Aalert%281%29%22&type=LOGIN_FAILED"
    )
    other = with_evidence({"event_type": HOSTILE, "tenant_id": HOSTILE, "seq": 1})
    assert other["evidence_url"].startswith("/event?tenant=%3Cscript%3E")
    markup = lockouts_page([{"event_type": "ACCOUNT_LOCKED", "tenant_id": HOSTILE, "seq": 2,
                             "failure_count": HOSTILE}])  # fmt: skip
    assert _live_markup(markup) == [] and 'href="/lockout?tenant=%3Cscript' in markup
    assert "evidence_url" in SCRIPT and 'startsWith("/")' in SCRIPT


def test_lockout_page_lists_the_counted_failures_escaped() -> None:
    failures = [
        {"decision": "ACCOUNT_LOCKED", "user_name": HOSTILE, "failure_count": 2,
         "failure_seq": seq, "failure_client_ip": HOSTILE, "failure_reason": HOSTILE}
        for seq in (4, 6)
    ]  # fmt: skip
    markup = lockout_page(HOSTILE, 9, failures)
    assert _live_markup(markup) == []
    assert "The 2 failed logins it counted" in markup
    assert markup.count('<a href="/event?tenant=%3Cscript') == 3  # the decision and both failures
    assert "No lock or unlock decision" in lockout_page("t", 1, [])


def test_integrity_page_says_never_verified_or_the_verdicts() -> None:
    chains = [{"tenant_id": HOSTILE, "records": 3}]
    never = integrity_page(None, "/data/verify-report.json", "", chains)
    assert "Never verified" in never and _live_markup(never) == []
    report = StoredReport(
        "2026-12-04T08:00:00Z", 1,
        (TenantVerdict("acme", True, 5, 5, "", None, ""),
         TenantVerdict(HOSTILE, False, 5, 4, "modified", 3, HOSTILE)),
        ({"name": "lockouts", "damage": "modified definition", "detail": HOSTILE},),
    )  # fmt: skip
    shown = integrity_page(report, "r.json", "", chains)
    assert "DAMAGE FOUND (exit code 1)" in shown and "2026-12-04T08:00:00Z" in shown
    assert shown.count('class="damaged"') == 1 and _live_markup(shown) == []
    assert HOSTILE not in integrity_page(None, "r", HOSTILE, [])


def test_verify_report_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "verify-report.json"
    assert read_report(path) is None
    tenant = {"tenant_id": "acme", "records": 5, "checkpoints": 1, "signed_size": 4,
              "signed_by": [], "damage": "modified", "seq": 3, "detail": "leaf differs",
              "signed_ranges": []}  # fmt: skip
    write_report(path, {"store": "s", "trusted_keys": [], "tenants": [tenant],
                        "store_damage": [], "verified_at": "T", "exit_code": 1})  # fmt: skip
    report = read_report(path)
    assert report is not None and report.exit_code == 1 and report.verified_at == "T"
    assert report.tenants == (TenantVerdict("acme", False, 5, 4, "modified", 3, "leaf differs"),)
    path.write_text(json.dumps({"tenants": "not a list"}))
    with pytest.raises(ConfigurationError, match="not a verify report"):
        read_report(path)
