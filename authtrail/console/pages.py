"""The web console's pages: server-rendered HTML from query results (pure functions).

Every value from the store or the request goes through :func:`_text` (``html.escape``,
quotes included) or :func:`urlencode` before it reaches the markup: user names,
addresses, reasons and attributes are whatever a client sent to an identity provider.
The pages carry no inline script (the server's Content-Security-Policy forbids it);
the live lockout panel is ``/static/console.js``, which writes with ``textContent`` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from authtrail.errors import InvalidArgumentError
from authtrail.sinks.console_queries import SEARCH_COLUMNS, SearchFilters, SearchPage
from authtrail.verify_report import StoredReport

_NAV = (("/", "Dashboard"), ("/search", "Search"), ("/lockouts", "Lockouts"),
        ("/integrity", "Integrity"))  # fmt: skip
_CHAIN_FIELDS = ("prev_hash", "leaf_hash", "hash", "epoch", "stored_at", "kafka_partition",
                 "kafka_offset")  # fmt: skip
LOCKOUT_COLUMNS = ("occurred_at", "tenant_id", "event_type", "user_name", "client_ip",
                   "reason", "failure_count", "locked_until", "distinct_users")  # fmt: skip
_LOCK_DECISIONS = ("ACCOUNT_LOCKED", "ACCOUNT_UNLOCKED")
_DECISION_FIELDS = ("decision", "decided_at", "user_name", "reason", "failure_count",
                    "permanent", "locked_until")  # fmt: skip
_FAILURE_COLUMNS = ("failure_seq", "failed_at", "failure_client_ip", "failure_service",
                    "failure_reason", "failure_event_id")  # fmt: skip


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # attributes: a map
        value = "; ".join(f"{key}={item}" for key, item in sorted(value.items()))
    return escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A whole document: the navigation, ``title`` and ``body`` (already markup)."""
    links = "".join(f'<a href="{href}">{name}</a>' for href, name in _NAV)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_text(title)} · authtrail</title>"
        '<link rel="stylesheet" href="/static/console.css"></head><body>'
        f"<nav><strong>authtrail</strong>{links}</nav><main><h1>{_text(title)}</h1>"
        f"{body}</main></body></html>"
    )


def error_page(status: int, message: str) -> str:
    return page(f"Error {status}", f'<p class="error">{_text(message)}</p>')


# --- Forms ---------------------------------------------------------------------------


def parse_time(text: str, field: str) -> int | None:
    """Microseconds since the epoch for ``YYYY-MM-DDTHH:MM[:SS]`` (UTC unless an offset
    is given; what ``<input type=datetime-local>`` sends) or a date; None for "".

    Raises InvalidArgumentError naming ``field`` for anything else.
    """
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        message = f"{field}: {text!r} is not a time (YYYY-MM-DDTHH:MM, UTC)"
        raise InvalidArgumentError(message) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def parse_search(query: Mapping[str, str]) -> SearchFilters:
    """The search form's fields as filters. Raises InvalidArgumentError on bad values."""
    page_text = query.get("page", "1").strip() or "1"
    if not page_text.isdigit():
        raise InvalidArgumentError(f"page {page_text!r} is not a number")
    return SearchFilters(
        tenant_id=query.get("tenant", "").strip(),
        user_name=query.get("user", "").strip(),
        client_ip=query.get("ip", "").strip(),
        event_type=query.get("type", "").strip(),
        since=parse_time(query.get("since", ""), "from"),
        until=parse_time(query.get("until", ""), "until"),
        page=int(page_text),
    )


def parse_position(query: Mapping[str, str]) -> tuple[str, int]:
    """``tenant`` and ``seq`` of an event or proof request. Raises InvalidArgumentError."""
    tenant_id, seq_text = query.get("tenant", ""), query.get("seq", "")
    if not tenant_id or not seq_text.isdigit() or int(seq_text) < 1:
        raise InvalidArgumentError("name an event with tenant=T and seq=N (N >= 1)")
    return tenant_id, int(seq_text)


def _event_link(tenant_id: str, seq: Any, text: str) -> str:
    return f'<a href="/event?{_text(urlencode({"tenant": tenant_id, "seq": seq}))}">{text}</a>'


# --- Pages ---------------------------------------------------------------------------


def dashboard_page(charts: Sequence[tuple[str, str, str]]) -> str:
    """``charts``: ``(heading, svg markup, note)`` each; the markup is trusted (it comes
    from :mod:`authtrail.console.charts`, which escapes its labels)."""
    sections = "".join(
        f'<section class="chart-box"><h2>{_text(heading)}</h2>{svg}'
        f'<p class="note">{_text(note)}</p></section>'
        for heading, svg, note in charts
    )
    return page("Dashboard", f'<div class="charts">{sections}</div>')


def search_page(
    query: Mapping[str, str],
    tenants: Sequence[str],
    event_types: Sequence[str],
    result: SearchPage | None,
    error: str = "",
) -> str:
    """The search form filled with ``query``, and one page of results (or ``error``)."""

    def field(name: str, label: str, kind: str = "text") -> str:
        return (f'<label>{label} <input type="{kind}" name="{name}" '
                f'value="{_text(query.get(name, ""))}"></label>')  # fmt: skip

    def options(name: str, values: Sequence[str]) -> str:
        chosen = query.get(name, "")
        items = "".join(
            f'<option value="{_text(value)}"{" selected" if value == chosen else ""}>'
            f"{_text(value)}</option>"
            for value in values
        )
        return f'<option value="">any</option>{items}'

    form = (
        '<form method="get" action="/search" class="search">'
        f'<label>Tenant <select name="tenant">{options("tenant", tenants)}</select></label>'
        f"{field('user', 'User')}{field('ip', 'IP address')}"
        f'<label>Type <select name="type">{options("type", event_types)}</select></label>'
        f"{field('since', 'From (UTC)', 'datetime-local')}"
        f"{field('until', 'Until (UTC)', 'datetime-local')}"
        '<button type="submit">Search</button></form>'
    )
    if error:
        return page("Search events", form + f'<p class="error">{_text(error)}</p>')
    if result is None:
        return page("Search events", form)
    header = "".join(f"<th>{name}</th>" for name in SEARCH_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{_event_link(row['tenant_id'], row['seq'], _text(row[name]))}</td>"
            if name == "seq"
            else f"<td>{_text(row[name])}</td>"
            for name in SEARCH_COLUMNS
        )
        + "</tr>"
        for row in result.rows
    )
    first = (result.page - 1) * result.page_size + 1
    shown = f"{first} to {first + len(result.rows) - 1}" if result.rows else "none"
    kept = {name: value for name, value in query.items() if name != "page" and value}
    links = []
    if result.page > 1:
        previous = urlencode(kept | {"page": str(result.page - 1)})
        links.append(f'<a rel="prev" href="/search?{_text(previous)}">← previous</a>')
    if result.has_next:
        following = urlencode(kept | {"page": str(result.page + 1)})
        links.append(f'<a rel="next" href="/search?{_text(following)}">next →</a>')
    summary = (f'<p class="summary">{result.total:,} matching events; showing {shown} '
               f'(page {result.page})</p>')  # fmt: skip
    table = f'<table class="results"><tr>{header}</tr>{body}</table>'
    return page("Search events", form + summary + table + f'<p class="pager">{" ".join(links)}</p>')


def event_page(tenant_id: str, seq: int, detail: Mapping[str, Any] | None) -> str:
    """One stored event: its fields, its place in the tenant's chain, its proof."""
    title = f"{tenant_id} · seq {seq}"
    if detail is None:
        return page(title, f"<p>No stored event of tenant {_text(tenant_id)} has seq {seq}.</p>")
    last, signed = detail["last_seq"], detail["signed_by_size"]
    neighbours = " ".join(
        _event_link(tenant_id, other, label)
        for other, label in ((seq - 1, "← seq " + str(seq - 1)), (seq + 1, f"seq {seq + 1} →"))
        if 1 <= other <= last
    )
    position = _text(urlencode({"tenant": tenant_id, "seq": seq}))
    proof = (
        f"<p>Signed: the newest stored checkpoint covering it has size {signed}. "
        f'<a class="proof" download href="/proof?{position}">'
        "Download the inclusion proof</a> (JSON; check it offline with "
        "<code>authtrail verify-proof FILE --key authtrail.pub</code>).</p>"
        if signed is not None
        else "<p>Not signed yet: no stored checkpoint covers this seq. The proof can be "
        "downloaded once the sequencer has closed its batch.</p>"
    )
    chain = (
        f"<h2>Chain position</h2><p>Record {seq} of {last} in the hash chain of tenant "
        f'{_text(tenant_id)}. {neighbours}</p><table class="fields">'
        + "".join(
            f"<tr><th>{name}</th><td><code>{_text(detail.get(name))}</code></td></tr>"
            for name in _CHAIN_FIELDS
        )
        + f"</table>{proof}"
    )
    skipped = {"last_seq", "signed_by_size", "prev_hash", "leaf_hash", "hash", "epoch",
               "stored_at", "kafka_cluster", "kafka_partition", "kafka_offset"}  # fmt: skip
    fields = "".join(
        f"<tr><th>{_text(name)}</th><td>{_text(value)}</td></tr>"
        for name, value in detail.items()
        if name not in skipped and value not in (None, "", {})
    )
    event = (f'<h2>Event</h2><table class="fields" id="event">{fields}</table>'
             '<p class="note">Fields without a value are not shown.</p>')  # fmt: skip
    return page(title, chain + event)


def with_evidence(decision: Mapping[str, Any]) -> dict[str, Any]:
    """``decision`` (a ``lockouts`` view row) with ``evidence_url`` and ``evidence``, the
    link to what caused it: a lock's or unlock's failed logins (:func:`lockout_page`), a
    spraying alert's failed logins from its address (a search), else the decision itself.
    The URL is a path built here, never a value from the store, so the live panel can set
    it as an ``href``."""
    tenant_id, seq = decision.get("tenant_id") or "", decision.get("seq")
    if decision.get("event_type") in _LOCK_DECISIONS:
        url = "/lockout?" + urlencode({"tenant": tenant_id, "seq": seq})
        text = f"{decision.get('failure_count') or ''} failures".strip()
    elif decision.get("event_type") == "BRUTE_FORCE_SUSPECTED" and decision.get("client_ip"):
        query = {"tenant": tenant_id, "ip": decision["client_ip"], "type": "LOGIN_FAILED"}
        url, text = "/search?" + urlencode(query), "failures from this address"
    else:
        url, text = "/event?" + urlencode({"tenant": tenant_id, "seq": seq}), "decision"
    return {**decision, "evidence_url": url, "evidence": text}


def lockouts_page(decisions: Sequence[Mapping[str, Any]]) -> str:
    """The newest lockout and spraying decisions; /static/console.js refreshes them."""
    header = "".join(f"<th>{name}</th>" for name in (*LOCKOUT_COLUMNS, "evidence"))
    return page(
        "Lockouts and spraying alerts",
        '<p class="note">Live: refreshed every 2 seconds. <span id="updated"></span></p>'
        f'<table class="results" id="lockouts" data-columns="{",".join(LOCKOUT_COLUMNS)}">'
        f"<thead><tr>{header}</tr></thead><tbody>{lockout_rows(decisions)}</tbody></table>"
        '<script src="/static/console.js"></script>',
    )


def lockout_rows(decisions: Sequence[Mapping[str, Any]]) -> str:
    return "".join(
        f'<tr class="{_text(row.get("event_type"))}">'
        + "".join(f"<td>{_text(row.get(name))}</td>" for name in LOCKOUT_COLUMNS)
        + f'<td><a href="{_text(row["evidence_url"])}">{_text(row["evidence"])}</a></td></tr>'
        for row in map(with_evidence, decisions)
    )


def lockout_page(tenant_id: str, seq: int, failures: Sequence[Mapping[str, Any]]) -> str:
    """Lock or unlock decision ``seq`` of ``tenant_id`` and the failed logins it counted
    (rows of the ``lockout_failures`` view), each linked to its event page."""
    title = f"Lockout decision {seq} of {tenant_id}"
    if not failures:
        return page(title, '<p class="error">No lock or unlock decision with failed logins '
                    "at this position (docs/QUERIES.md, lockout_failures).</p>")  # fmt: skip
    first = failures[0]
    summary = "".join(
        f"<tr><th>{name}</th><td>{_text(first.get(name))}</td></tr>" for name in _DECISION_FIELDS
    )
    rows = "".join(
        "<tr>"
        + f"<td>{_event_link(tenant_id, row['failure_seq'], _text(row['failure_seq']))}</td>"
        + "".join(f"<td>{_text(row.get(name))}</td>" for name in _FAILURE_COLUMNS[1:])
        + "</tr>"
        for row in failures
    )
    header = "".join(f"<th>{name}</th>" for name in _FAILURE_COLUMNS)
    return page(
        title,
        f"<p>{_event_link(tenant_id, seq, 'The decision event')} (its chain position and "
        f'proof).</p><table class="fields" id="decision">{summary}</table>'
        f"<h2>The {len(failures)} failed logins it counted</h2>"
        f'<table class="results" id="failures"><tr>{header}</tr>{rows}</table>',
    )


def integrity_page(
    report: StoredReport | None,
    report_path: str,
    report_error: str,
    chains: Sequence[Mapping[str, Any]],
) -> str:
    """The last verify run's verdict per tenant, and what the store says of each chain."""
    if report_error:
        verdict = f'<p class="error">{_text(report_error)}</p>'
    elif report is None:
        verdict = (
            f'<p class="never"><strong>Never verified</strong>: no report at '
            f"<code>{_text(report_path)}</code>. Run <code>authtrail verify --key FILE "
            f"--report-json {_text(report_path)}</code>.</p>"
        )
    else:
        outcome = "intact" if report.exit_code == 0 else "DAMAGE FOUND"
        rows = "".join(
            f'<tr class="{"ok" if tenant.ok else "damaged"}"><td>{_text(tenant.tenant_id)}</td>'
            f"<td>{'ok' if tenant.ok else 'DAMAGED'}</td><td>{tenant.records}</td>"
            f"<td>{tenant.signed_size}</td><td>{_text(tenant.damage)}</td>"
            f"<td>{_text(tenant.seq)}</td><td>{_text(tenant.detail)}</td></tr>"
            for tenant in report.tenants
        )
        damage = "".join(
            f"<li>{_text(entry.get('name'))}: {_text(entry.get('damage'))}: "
            f"{_text(entry.get('detail'))}</li>"
            for entry in report.store_damage
        )
        verdict = (
            f"<p>Last verify run: <strong>{_text(report.verified_at)}</strong>, "
            f"{outcome} (exit code {report.exit_code}), from <code>{_text(report_path)}</code>."
            '</p><table class="results" id="verdicts"><tr><th>tenant</th><th>verdict</th>'
            "<th>records</th><th>signed size</th><th>damage</th><th>seq</th><th>detail</th>"
            f"</tr>{rows}</table>" + (f'<ul class="error">{damage}</ul>' if damage else "")
        )
    columns = ("tenant_id", "records", "last_seq", "signed_size", "newest_checkpoint",
               "unsigned_tail")  # fmt: skip
    status = "".join(
        "<tr>" + "".join(f"<td>{_text(row.get(name))}</td>" for name in columns) + "</tr>"
        for row in chains
    )
    header = "".join(f"<th>{name}</th>" for name in columns)
    return page(
        "Integrity",
        f"<h2>Verified</h2>{verdict}<h2>What the store says now</h2>"
        '<p class="note">The chain_status view: counted, not proved (docs/QUERIES.md).</p>'
        f'<table class="results">{header}{status}</table>',
    )


STYLESHEET = """
body { font-family: sans-serif; margin: 0; color: #222; }
nav { background: #1f2d3d; padding: 8px 16px; }
nav strong { color: #fff; margin-right: 24px; }
nav a { color: #cfe3ff; margin-right: 16px; text-decoration: none; }
main { padding: 8px 16px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
td code { word-break: break-all; }
.fields td { max-width: 900px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.chart-box { border: 1px solid #ddd; padding: 8px; }
.chart-box h2 { font-size: 15px; margin: 0 0 6px 0; }
.note { color: #666; font-size: 12px; }
.error, .damaged td { color: #b00020; }
.never { color: #8a5a00; }
form.search label { margin-right: 10px; display: inline-block; margin-bottom: 6px; }
tr.ACCOUNT_LOCKED td:nth-child(3) { color: #b00020; font-weight: bold; }
tr.BRUTE_FORCE_SUSPECTED td:nth-child(3) { color: #8a5a00; font-weight: bold; }
"""

# The live lockout panel: poll the JSON endpoint, rebuild the rows with textContent.
SCRIPT = """
"use strict";
(function () {
  const table = document.getElementById("lockouts");
  if (!table) { return; }
  const columns = table.dataset.columns.split(",");
  const body = table.tBodies[0];
  const updated = document.getElementById("updated");
  async function refresh() {
    try {
      const response = await fetch("/api/lockouts", {credentials: "same-origin"});
      if (!response.ok) { updated.textContent = "refresh failed: " + response.status; return; }
      const decisions = await response.json();
      const rows = decisions.map(function (decision) {
        const row = document.createElement("tr");
        row.className = String(decision.event_type || "");
        columns.forEach(function (name) {
          const cell = document.createElement("td");
          const value = decision[name];
          cell.textContent = value === null || value === undefined ? "" : String(value);
          row.appendChild(cell);
        });
        // evidence_url is a same-origin path the server built (with_evidence).
        const cell = document.createElement("td");
        const link = document.createElement("a");
        link.href = String(decision.evidence_url).startsWith("/") ? decision.evidence_url : "#";
        link.textContent = String(decision.evidence || "");
        cell.appendChild(link);
        row.appendChild(cell);
        return row;
      });
      body.replaceChildren.apply(body, rows);
      updated.textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    } catch (error) {
      updated.textContent = "refresh failed: " + error;
    }
  }
  setInterval(refresh, 2000);
})();
"""
