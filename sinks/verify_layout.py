"""``authtrail verify``'s check of the store's shape: tables are tables, views say what we wrote.

Records and checkpoints are verified row by row, but analysts also read through what
the store *defines*: a ``lockouts`` view redefined to hide a decision, a
``chain_status`` view that always shows a tail signed, or an ``events`` table renamed
away and replaced by a view over a doctored copy, would change every answer without
changing a verified row. So the definitions are compared with the ones authtrail
creates (:func:`authtrail.sinks.tables.create_statements`, :mod:`authtrail.sinks.views`), as
normalised by the engine's own formatter.
"""

from __future__ import annotations

from dataclasses import dataclass

from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.clickhouse_sql import quote_string_literal
from authtrail.sinks.tables import (
    CHECKPOINTS_TABLE,
    EVENTS_TABLE,
    LOCKOUTS_VIEW,
    REJECTED_TABLE,
    create_statements,
)
from authtrail.sinks.views import VIEWS, view_select

MODIFIED_DEFINITION = "modified definition"
MISSING_DEFINITION = "missing definition"

# Append-only engines that keep every row visible to verification (no merging away).
_APPEND_ONLY_ENGINES = frozenset({"MergeTree", "ReplicatedMergeTree", "SharedMergeTree"})
_TABLES = (EVENTS_TABLE, CHECKPOINTS_TABLE, REJECTED_TABLE)


@dataclass(frozen=True)
class StoreDamage:
    """Damage to the store's definitions: ``name`` is the table or view."""

    name: str
    damage: str
    detail: str


def _expected_view_select(view: str) -> str:
    if view in VIEWS:
        return view_select(view)
    for statement in create_statements():
        head, separator, select = statement.partition(" AS\n")
        if separator and head.endswith(f" {view}"):
            return select
    raise LookupError(f"authtrail creates no view {view}")


def _normalised(query: str) -> str:
    return f"replaceAll(formatQuery({query}), concat(currentDatabase(), '.'), '')"


def check_definitions(backend: ClickHouseBackend) -> list[StoreDamage]:
    """Every authtrail table must be an append-only MergeTree, every view ours.

    Returns the damage found (empty when the definitions are intact).
    """
    views = (LOCKOUTS_VIEW, *VIEWS)
    # Both sides through formatQuery, with the database qualifier the engine adds to
    # stored definitions removed, so only a different query differs. A name that is not
    # one of our views is compared with a constant (its engine is what is judged).
    # Our own definitions as literals in the statement, not as parameters: clickhouse-
    # connect sends parameters over 4 KB as a multipart form, which the front does not read.
    names = ", ".join(map(quote_string_literal, views))
    selects = ", ".join(quote_string_literal(_expected_view_select(view)) for view in views)
    expected_select = f"transform(name, [{names}], [{selects}], 'SELECT 1')"
    table = backend.query_arrow(
        f"""SELECT name, engine, if(engine = 'View', {_normalised("as_select")}
                                    = {_normalised(expected_select)}, 1) AS same_select
            FROM system.tables WHERE database = currentDatabase()"""
    )
    found = {row["name"]: row for row in table.to_pylist()}
    damage = []
    for name in (*_TABLES, *views):
        row = found.get(name)
        if row is None:
            damage.append(StoreDamage(name, MISSING_DEFINITION, f"the store has no {name}"))
            continue
        expected = {"View"} if name in views else _APPEND_ONLY_ENGINES
        if row["engine"] not in expected:
            damage.append(StoreDamage(
                name, MODIFIED_DEFINITION,
                f"{name} is a {row['engine']}, authtrail creates a {'/'.join(sorted(expected))}",
            ))  # fmt: skip
        elif not row["same_select"]:
            damage.append(StoreDamage(
                name, MODIFIED_DEFINITION,
                f"the view {name} selects something other than authtrail's definition",
            ))  # fmt: skip
    return damage
