"""Create what the store lacks of authtrail's tables and views, and nothing else.

The sink runs this at start: on a store ``authtrail init-db`` prepared, nothing is
missing and no DDL is sent, so the sink's writer credential (INSERT and SELECT only,
sinks/access.py) suffices; the embedded store of ``authtrail up`` is created here on
first start, with no setup. A table of an older store also gets the part settings its
inserts and merges now use (:func:`~authtrail.sinks.tables.part_settings_statement`);
where the credential may not change them, the store works as before and a warning says so.
"""

from __future__ import annotations

import logging
import re

from authtrail.errors import ConfigurationError, StoreError
from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.clickhouse_sql import ACCESS_DENIED
from authtrail.sinks.tables import (
    MERGE_TREE_TABLES,
    PART_SETTING_NAMES,
    REJECTED_TABLE,
    create_statements,
    part_settings_statement,
)

_LOG = logging.getLogger(__name__)
_PART_SETTINGS = frozenset(part_settings_statement(table) for table in MERGE_TREE_TABLES)

_CREATED = re.compile(r"CREATE (?:TABLE|VIEW) IF NOT EXISTS (\w+)")
_ADDED_COLUMN = re.compile(r"ADD COLUMN IF NOT EXISTS `(\w+)`")


def missing_statements(backend: ClickHouseBackend) -> list[str]:
    """The statements of :func:`create_statements` whose table, view or columns the
    store's current database lacks, in order; then the part settings for each of its
    tables created before one of them."""
    tables = backend.query_arrow(
        "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()"
    )
    engines = dict(zip(tables.column(0).to_pylist(), tables.column(1).to_pylist(), strict=True))
    existing = set(engines)
    columns = set(
        backend.query_arrow(
            "SELECT name FROM system.columns WHERE database = currentDatabase() "
            "AND table = {table:String}",
            {"table": REJECTED_TABLE},
        ).column(0).to_pylist()
    )  # fmt: skip
    missing = []
    for statement in create_statements():
        created = _CREATED.match(statement)
        if created is not None:
            if created.group(1) not in existing:
                missing.append(statement)
        elif REJECTED_TABLE in existing and not set(_ADDED_COLUMN.findall(statement)) <= columns:
            missing.append(statement)  # an older store's table, without the newer columns
    missing += [
        part_settings_statement(table)
        for table in MERGE_TREE_TABLES
        if table in existing and any(name not in engines[table] for name in PART_SETTING_NAMES)
    ]
    return missing


def ensure_schema(backend: ClickHouseBackend) -> list[str]:
    """Run :func:`missing_statements`; returns them. Raises ConfigurationError when the
    credential may not create them (run ``authtrail init-db`` as an administrator)."""
    missing = missing_statements(backend)
    for statement in missing:
        try:
            backend.command(statement)
        except StoreError as exc:
            if exc.code != ACCESS_DENIED:
                raise
            if statement in _PART_SETTINGS:  # they only make inserts and merges cheaper
                _LOG.warning("%s: not allowed for this credential (%s); inserts and merges "
                             "cost more until `authtrail init-db` runs as an administrator",
                             statement, exc)  # fmt: skip
                continue
            what = _CREATED.match(statement)
            raise ConfigurationError(
                f"the store lacks {what.group(1) if what else 'columns of ' + REJECTED_TABLE} "
                f"and this credential may not create it ({exc}); run `authtrail init-db` "
                "with an administrator's ClickHouse URL first"
            ) from exc
    return missing
