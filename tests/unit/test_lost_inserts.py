"""An insert the engine dropped as a duplicate while its rows are not stored is inserted
again under a new token (sinks/lost_inserts.py).

The decision runs here against a stand-in for the engine's deduplication: a log of the
tokens it recorded and the rows it kept, where a token may be recorded without its rows
(the process killed between the two). The real engine does the same in
tests/integration/test_chained_batches_store.py.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import pytest

from authtrail.errors import StoreError
from authtrail.sinks.lost_inserts import (
    KEY_COLUMNS,
    MAX_RETRIES,
    insert_until_stored,
    key_ranges,
    retry_token,
)
from authtrail.sinks.tables import create_statements


@dataclass
class _Deduplicating:
    """Stores ``rows`` once per token; tokens in ``lost`` were recorded, their rows lost."""

    rows: int
    lost: set[str] = field(default_factory=set)
    stored: int = 0
    tokens: list[str] = field(default_factory=list)

    def insert(self, *, dedup_token: str) -> None:
        self.tokens.append(dedup_token)
        if dedup_token not in self.lost:
            self.lost.add(dedup_token)  # recorded: the same token again adds nothing
            self.stored += self.rows

    def count(self) -> int:
        return self.stored


def test_key_ranges_are_each_tenants_lowest_and_highest() -> None:
    keys = [("acme", 5), ("globex", 2), ("acme", 3), ("acme", 9), ("globex", 2)]
    assert key_ranges(keys) == {"acme": (3, 9), "globex": (2, 2)}
    assert key_ranges([]) == {}


def test_retry_tokens_extend_the_token_and_differ_from_it_and_each_other() -> None:
    token = "events:cluster:0:10:0:12:3"
    tokens = [token] + [retry_token(token, retry) for retry in range(1, MAX_RETRIES + 1)]
    assert len(set(tokens)) == len(tokens)
    assert all(again.startswith(token + ":") for again in tokens[1:])
    assert retry_token(token, 1) == retry_token(token, 1)  # the same in every process
    with pytest.raises(ValueError, match="at least 1"):
        retry_token(token, 0)


def test_stored_rows_are_inserted_once_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    engine = _Deduplicating(rows=3)
    with caplog.at_level(logging.WARNING):
        retries = insert_until_stored(engine.insert, engine.count, token="t", sent=3, what="x")
    assert (retries, engine.tokens, engine.stored) == (0, ["t"], 3)
    assert not caplog.records


def test_rows_dropped_as_a_duplicate_are_inserted_again_under_a_new_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = _Deduplicating(rows=3, lost={"t"})
    with caplog.at_level(logging.WARNING):
        retries = insert_until_stored(
            engine.insert, engine.count, token="t", sent=3, what="insert of 3 rows into events"
        )
    assert (retries, engine.tokens, engine.stored) == (1, ["t", retry_token("t", 1)], 3)
    [warning] = caplog.records
    assert "insert of 3 rows into events under deduplication token 't'" in warning.getMessage()
    assert "0 of 3 rows stored" in warning.getMessage()
    assert "dropped the rest as a duplicate" in warning.getMessage()


def test_a_lost_retry_too_is_inserted_again_under_the_next_token() -> None:
    """A process killed during its own retry: the next one finds both tokens recorded."""
    engine = _Deduplicating(rows=2, lost={"t", retry_token("t", 1)})
    assert insert_until_stored(engine.insert, engine.count, token="t", sent=2, what="x") == 2
    assert engine.tokens == ["t", retry_token("t", 1), retry_token("t", 2)]
    assert engine.stored == 2


def test_rows_never_stored_raise_store_error_after_the_last_retry() -> None:
    lost = {"t"} | {retry_token("t", retry) for retry in range(1, MAX_RETRIES + 1)}
    engine = _Deduplicating(rows=2, lost=lost)
    with pytest.raises(StoreError, match=r"x: 0 of 2 rows stored after 5 inserts"):
        insert_until_stored(engine.insert, engine.count, token="t", sent=2, what="x")
    assert len(engine.tokens) == 1 + MAX_RETRIES


def test_key_and_month_columns_are_the_tables_order_and_partition_keys() -> None:
    """The count reads through each table's primary key where it has one on the keys
    (``rejected`` is ordered by error kind and time: read within the month), in the month
    partition the sink cuts its runs by (sinks/tables.py MONTH_COLUMNS)."""
    order_keys, partition_keys = {}, {}
    for statement in create_statements():
        table = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", statement)
        order = re.search(r"ORDER BY \((\w+), (\w+)\)", statement)
        partition = re.search(r"PARTITION BY toYYYYMM\((\w+)\)", statement)
        if table and order and partition:
            order_keys[table.group(1)] = (order.group(1), order.group(2))
            partition_keys[table.group(1)] = partition.group(1)
    assert {t: partition_keys[t] for t in KEY_COLUMNS} == {
        "events": "occurred_at", "checkpoints": "time_micros", "rejected": "rejected_at"
    }  # fmt: skip
    assert KEY_COLUMNS["events"] == order_keys["events"] == ("tenant_id", "seq")
    assert KEY_COLUMNS["checkpoints"] == order_keys["checkpoints"] == ("tenant_id", "size")
    assert KEY_COLUMNS["rejected"] == ("chain_tenant_id", "seq")
