"""Inserts the engine dropped as duplicates although their rows are not stored.

The sink names each insert by the Kafka records it holds (a deduplication token derived
from their positions), so that the same insert repeated — a retry after a timeout, or
another sink after a consumer-group rebalance, while the first insert may still be in
flight on a server — adds no rows. But a process killed after the engine recorded the
token in its deduplication log and before it committed the data part leaves the token
without the rows: the next process inserts the same records under the same token and the
engine drops them, silently (chdb even reports them written). Rows would be missing from
the table for good while the resume point moved past them.

So after each such insert the sink counts the rows of the insert's key range, through the
table's primary key, and when fewer than it sent are there it inserts again under the
same token with a retry suffix (``…:again1``, ``…:again2``…). The suffix is deterministic
for the same reason the token is: two sinks repairing the same lost insert still
deduplicate against each other.

Where no earlier process can have recorded the token, the sink skips the count
(``Sink._counted`` in sinks/sink.py): on the embedded store, for records written to Kafka
after the sink was assigned their partition, until one of its inserts fails. Elsewhere
(on a server, where other sinks may insert) every insert is counted, so the count must
cost what the insert costs, not what the month holds: reading the keys' rows anywhere in
the month reads every row of their tenants (the primary key narrows it by tenant only).
So it first reads only the parts made since the insert began (:func:`stored_counter`):
an insert's part takes a block number above every part's before it, and merges keep the
highest of their parts'. Only when those hold fewer rows than were sent (a duplicate of
an earlier insert, or a lost one) is the whole month counted.

:func:`key_ranges` and :func:`retry_token` are pure; :func:`insert_until_stored` runs the
insert and the count it is given; :func:`stored_counter` and :func:`count_stored` are
that count in ClickHouse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from authtrail.errors import StoreError
from authtrail.sinks.clickhouse_sql import in_key_ranges
from authtrail.sinks.tables import CHECKPOINTS_TABLE, EVENTS_TABLE, MONTH_COLUMNS, REJECTED_TABLE

if TYPE_CHECKING:
    from authtrail.sinks.backend import ClickHouseBackend

_LOG = logging.getLogger(__name__)
# Each try under a new suffix; more would mean the engine drops fresh tokens too.
MAX_RETRIES = 5
#: Tenants a counting query names: each costs ~40 bytes of SQL, and a query must stay
#: far below ClickHouse's max_query_size (256 KiB by default), which the checkpoints of
#: one flush of 10 000 tenants exceeded: the sink then retried that flush forever.
TENANTS_PER_COUNT = 1000
# The (tenant, number) of a row of each table the sink inserts under position-derived
# tokens.
KEY_COLUMNS = {
    EVENTS_TABLE: ("tenant_id", "seq"),
    CHECKPOINTS_TABLE: ("tenant_id", "size"),
    REJECTED_TABLE: ("chain_tenant_id", "seq"),
}


class Insert(Protocol):
    """One insert of fixed rows, under the deduplication token it is given."""

    def __call__(self, *, dedup_token: str) -> None: ...


def key_ranges(keys: Iterable[tuple[str, int]]) -> dict[str, tuple[int, int]]:
    """The lowest and highest number (``seq``, ``size``) of each tenant among ``keys``."""
    ranges: dict[str, tuple[int, int]] = {}
    for tenant_id, number in keys:
        low, high = ranges.get(tenant_id, (number, number))
        ranges[tenant_id] = (min(low, number), max(high, number))
    return ranges


def retry_token(token: str, retry: int) -> str:
    """The token of the ``retry``-th insert again (``retry`` >= 1) of the insert ``token``."""
    if retry < 1:
        raise ValueError(f"retry must be at least 1, not {retry}")
    return f"{token}:again{retry}"


def insert_until_stored(
    insert: Insert,
    count_stored: Callable[[], int],
    *,
    token: str,
    sent: int,
    what: str,
) -> int:
    """Run ``insert`` under ``token``; while ``count_stored()`` finds fewer than ``sent`` rows, run
    ``insert`` again under :func:`retry_token` (a warning each time). Returns the number of
    retries (0: the rows were there after the first insert).

    ``count_stored`` must count the rows of this insert's keys only, so that it reaches
    ``sent`` exactly when they are stored. Raises StoreError when they are still missing
    after :data:`MAX_RETRIES`, and whatever ``insert`` and ``count_stored`` raise.
    """
    insert(dedup_token=token)
    for retry in range(1, MAX_RETRIES + 1):
        present = count_stored()
        if present >= sent:
            return retry - 1
        again = retry_token(token, retry)
        _LOG.warning(
            "%s under deduplication token %r: %d of %d rows stored, the engine dropped the "
            "rest as a duplicate (an earlier insert recorded the token, then its part was "
            "lost, e.g. the process was killed); inserting them again under %r",
            what, token if retry == 1 else retry_token(token, retry - 1), present, sent, again,
        )  # fmt: skip
        insert(dedup_token=again)
    present = count_stored()
    if present >= sent:
        return MAX_RETRIES
    raise StoreError(
        f"{what}: {present} of {sent} rows stored after {MAX_RETRIES} inserts under new "
        f"deduplication tokens ({token!r} with a retry suffix)"
    )


def stored_counter(
    backend: ClickHouseBackend, table: str, month: int, ranges: Mapping[str, tuple[int, int]],
    sent: int,
) -> Callable[[], int]:  # fmt: skip
    """The count of an insert of ``sent`` rows about to run, for :func:`insert_until_stored`:
    :func:`count_stored` of its keys in the parts made from now on, and only when those
    hold fewer than ``sent``, in the whole month. To be called right before the insert.

    Raises StoreError; if the parts' block numbers cannot be read, every count is of the
    whole month, with a warning.
    """
    try:
        newest = newest_block(backend, table, month)
    except StoreError as exc:
        _LOG.warning("%s: its parts' block numbers are unreadable, so counts after inserts "
                     "read the whole month: %s", table, exc)  # fmt: skip
        newest = None

    def count() -> int:
        if newest is not None:
            present = count_stored(backend, table, month, ranges, after_block=newest)
            if present >= sent:
                return present
        return count_stored(backend, table, month, ranges)

    return count


def newest_block(backend: ClickHouseBackend, table: str, month: int) -> int:
    """The highest block number of the active parts of ``table``'s partition ``month``
    (0 for none): every part an insert makes from now on has a higher one. Raises
    StoreError."""
    result = backend.query_arrow(
        "SELECT max(max_block_number) FROM system.parts WHERE database = currentDatabase() "
        "AND table = {table:String} AND partition_id = {partition:String} AND active",
        {"table": table, "partition": str(month)},
    )
    return int(result.column(0)[0].as_py() or 0)


def count_stored(
    backend: ClickHouseBackend, table: str, month: int, ranges: Mapping[str, tuple[int, int]],
    *, after_block: int | None = None,
) -> int:  # fmt: skip
    """Rows of ``table`` (a key of :data:`KEY_COLUMNS`) in its partition ``month``
    (``YYYYMM``) whose (tenant, number) lie in ``ranges``: tenant -> (lowest, highest);
    with ``after_block``, only in parts whose highest block number is above it.

    Through the primary key for ``events`` and ``checkpoints``; ``rejected`` is read in
    the one month. At most :data:`TENANTS_PER_COUNT` tenants a query. Raises StoreError.
    """
    items = list(ranges.items())
    return sum(
        _count(backend, table, month, items[start : start + TENANTS_PER_COUNT], after_block)
        for start in range(0, len(items), TENANTS_PER_COUNT)
    )


def _count(
    backend: ClickHouseBackend, table: str, month: int, ranges: list[tuple[str, tuple[int, int]]],
    after_block: int | None,
) -> int:  # fmt: skip
    tenant_column, number_column = KEY_COLUMNS[table]
    keys, in_ranges = in_key_ranges(
        tenant_column, number_column, [(tenant_id, low, high) for tenant_id, (low, high) in ranges]
    )
    sql = (
        f"WITH {keys} SELECT count() FROM {table} "
        f"WHERE toYYYYMM({MONTH_COLUMNS[table]}) = {{month:UInt32}} AND {in_ranges}"
    )
    parameters: dict[str, int] = {"month": month}
    if after_block is not None:
        # A part's name is partition_minblock_maxblock_level[_mutation]: ClickHouse picks the
        # parts to read by a condition on it, before reading any.
        sql += " AND toUInt64(splitByChar('_', _part)[3]) > {after_block:UInt64}"
        parameters["after_block"] = after_block
    result = backend.query_arrow(sql, parameters)
    return int(result.column(0)[0].as_py())
