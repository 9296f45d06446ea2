"""What the web console (authtrail/console/server.py) asks the store: fixed, parameterised SQL.

Every statement here is a constant text; a filter the analyst typed only chooses which
constant ``WHERE`` clauses are joined and travels as a ``{name:Type}`` query parameter,
never as SQL. The answers come back as JSON-ready rows (:func:`authtrail.cli.output.rows`:
hashes as hex, times as text). All of it reads: the console's backend is read-only too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authtrail.cli.output import rows
from authtrail.errors import InvalidArgumentError
from authtrail.sinks.clickhouse import ClickHouseBackend
from authtrail.sinks.proofs import ProofUnavailableError, newest_size
from authtrail.sinks.tables import EVENTS_TABLE, LOCKOUTS_VIEW, REJECTED_TABLE
from authtrail.sinks.views import (
    CHAIN_STATUS,
    FAILED_LOGINS_HOURLY,
    LOCKOUT_FAILURES,
    TENANT_VOLUME_HOURLY,
)
from authtrail.stream.core.rejection import REJECTION_TENANT_PREFIX

PAGE_SIZE = 50
MAX_PAGE = 2000  # OFFSET costs what it skips: deeper than 100 000 rows, narrow the search
_MAX_TEXT = 512  # longer than any tenant, user or address the pipeline admits

SEARCH_COLUMNS = (
    "tenant_id", "seq", "occurred_at", "event_type", "outcome", "user_name", "client_ip",
    "service", "event_id",
)  # fmt: skip


@dataclass(frozen=True)
class SearchFilters:
    """One search: empty strings and None mean "any". Times are microseconds since the
    epoch, ``since`` included, ``until`` excluded; ``page`` counts from 1.

    Raises InvalidArgumentError for a page outside 1..MAX_PAGE or an over-long text.
    """

    tenant_id: str = ""
    user_name: str = ""
    client_ip: str = ""
    event_type: str = ""
    since: int | None = None
    until: int | None = None
    page: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.page <= MAX_PAGE:
            raise InvalidArgumentError(f"page must be in 1..{MAX_PAGE}")
        texts = (self.tenant_id, self.user_name, self.client_ip, self.event_type)
        if any(len(text) > _MAX_TEXT for text in texts):
            raise InvalidArgumentError(f"a search field is longer than {_MAX_TEXT} characters")

    def where(self) -> tuple[str, dict[str, Any]]:
        """The ``WHERE`` condition (constant clauses only) and the parameters it binds."""
        clauses, parameters = ["1"], {}
        chosen = (
            ("tenant_id = {tenant:String}", "tenant", self.tenant_id or None),
            ("user_name = {user:String}", "user", self.user_name or None),
            ("client_ip = {ip:String}", "ip", self.client_ip or None),
            ("toString(event_type) = {type:String}", "type", self.event_type or None),
            ("occurred_at >= fromUnixTimestamp64Micro({since:Int64}, 'UTC')", "since",
             self.since),
            ("occurred_at < fromUnixTimestamp64Micro({until:Int64}, 'UTC')", "until", self.until),
        )  # fmt: skip
        for clause, name, value in chosen:
            if value is not None:
                clauses.append(clause)
                parameters[name] = value
        return " AND ".join(clauses), parameters


@dataclass(frozen=True)
class SearchPage:
    rows: list[dict[str, Any]]
    total: int
    page: int
    page_size: int

    @property
    def has_next(self) -> bool:
        return self.page * self.page_size < self.total


def search_events(
    backend: ClickHouseBackend, filters: SearchFilters, page_size: int = PAGE_SIZE
) -> SearchPage:
    """One page of the events matching ``filters``, newest first, and how many match."""
    where, parameters = filters.where()
    bound = {**parameters, "limit": page_size, "offset": (filters.page - 1) * page_size}
    found = backend.query_arrow(
        f"SELECT {', '.join(SEARCH_COLUMNS)} FROM {EVENTS_TABLE} WHERE {where} "
        "ORDER BY occurred_at DESC, tenant_id, seq DESC "
        "LIMIT {limit:UInt32} OFFSET {offset:UInt64}",
        bound,
    )
    total = backend.query_arrow(f"SELECT count() FROM {EVENTS_TABLE} WHERE {where}", parameters)
    return SearchPage(rows(found), int(total.column(0)[0].as_py()), filters.page, page_size)


def event_detail(backend: ClickHouseBackend, tenant_id: str, seq: int) -> dict[str, Any] | None:
    """Every stored column of record ``seq`` of ``tenant_id`` (hashes in hex) and its place
    in the log: ``last_seq`` of the tenant and ``signed_by_size``, the size of the newest
    checkpoint covering it (None while none does). None when no such record is stored.
    Several stored copies of one seq are damage for verify; the first is shown."""
    found = backend.query_arrow(
        f"SELECT * FROM {EVENTS_TABLE} WHERE tenant_id = {{tenant:String}} "
        "AND seq = {seq:UInt64} ORDER BY stored_at LIMIT 1",
        {"tenant": tenant_id, "seq": seq},
    )
    if found.num_rows == 0:
        return None
    detail = rows(found)[0]
    last = backend.query_arrow(
        f"SELECT max(seq) FROM {EVENTS_TABLE} WHERE tenant_id = {{tenant:String}}",
        {"tenant": tenant_id},
    )
    detail["last_seq"] = int(last.column(0)[0].as_py() or 0)
    try:
        detail["signed_by_size"] = newest_size(backend, tenant_id, seq)
    except ProofUnavailableError:
        detail["signed_by_size"] = None
    return detail


def recent_lockouts(backend: ClickHouseBackend, limit: int = 25) -> list[dict[str, Any]]:
    """The newest lockout and spraying decisions (``lockouts`` view), newest first."""
    table = backend.query_arrow(
        "SELECT tenant_id, seq, occurred_at, event_type, user_name, client_ip, reason, "
        "failure_count, permanent, locked_until, distinct_users, sample_user_names "
        f"FROM {LOCKOUTS_VIEW} ORDER BY occurred_at DESC, tenant_id, seq DESC "
        "LIMIT {limit:UInt32}",
        {"limit": limit},
    )
    return rows(table)


def lockout_evidence(backend: ClickHouseBackend, tenant_id: str, seq: int) -> list[dict[str, Any]]:
    """The failed logins that lock or unlock decision ``seq`` of ``tenant_id`` counted
    (``lockout_failures`` view), oldest first; [] when ``seq`` is no such decision."""
    table = backend.query_arrow(
        f"SELECT * FROM {LOCKOUT_FAILURES} WHERE tenant_id = {{tenant:String}} "
        "AND decision_seq = {seq:UInt64} ORDER BY failure_seq LIMIT 1000",
        {"tenant": tenant_id, "seq": seq},
    )
    return rows(table)


def failed_logins_per_hour(backend: ClickHouseBackend, hours: int = 48) -> list[tuple[str, int]]:
    """Failed logins per hour over the ``hours`` hours up to the newest one stored (event
    time: replayed or simulated traffic has its own clock)."""
    table = backend.query_arrow(
        f"SELECT formatDateTime(hour, '%Y-%m-%d %H:00') AS label, sum(failures) AS failures "
        f"FROM {FAILED_LOGINS_HOURLY} "
        f"WHERE hour > (SELECT max(hour) FROM {FAILED_LOGINS_HOURLY}) - "
        "toIntervalHour({hours:UInt32}) GROUP BY hour ORDER BY hour",
        {"hours": hours},
    )
    return [(row["label"], int(row["failures"])) for row in table.to_pylist()]


def top_attacking_addresses(backend: ClickHouseBackend, limit: int = 10) -> list[tuple[str, int]]:
    """The client addresses with the most failed logins, across tenants."""
    table = backend.query_arrow(
        f"SELECT ifNull(client_ip, '(none)') AS address, sum(failures) AS failures "
        f"FROM {FAILED_LOGINS_HOURLY} GROUP BY address ORDER BY failures DESC, address "
        "LIMIT {limit:UInt32}",
        {"limit": limit},
    )
    return [(row["address"], int(row["failures"])) for row in table.to_pylist()]


def events_per_tenant(backend: ClickHouseBackend) -> list[tuple[str, int]]:
    """Stored events per tenant (the rejection logs left out, as in the view)."""
    table = backend.query_arrow(
        f"SELECT tenant_id, sum(events) AS events FROM {TENANT_VOLUME_HOURLY} "
        "GROUP BY tenant_id ORDER BY tenant_id"
    )
    return [(row["tenant_id"], int(row["events"])) for row in table.to_pylist()]


def tenant_ids(backend: ClickHouseBackend) -> list[str]:
    """Every tenant with a stored event (rejection logs left out), sorted."""
    table = backend.query_arrow(
        f"SELECT DISTINCT tenant_id FROM {EVENTS_TABLE} "
        "WHERE NOT startsWith(tenant_id, {prefix:String}) ORDER BY tenant_id",
        {"prefix": REJECTION_TENANT_PREFIX},
    )
    return [str(value) for value in table.column(0).to_pylist()]


def stored_count(backend: ClickHouseBackend) -> int:
    """Records stored: events plus rejected input (both leave the sequencer as records)."""
    table = backend.query_arrow(
        f"SELECT (SELECT count() FROM {EVENTS_TABLE}) + (SELECT count() FROM {REJECTED_TABLE})"
    )
    return int(table.column(0)[0].as_py())


def chain_status(backend: ClickHouseBackend) -> list[dict[str, Any]]:
    """The ``chain_status`` view: what the store says of each chained log."""
    return rows(backend.query_arrow(f"SELECT * FROM {CHAIN_STATUS} ORDER BY tenant_id"))
