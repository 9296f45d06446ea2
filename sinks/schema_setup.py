"""Create what the store lacks of authtrail's tables and views, and nothing else.

The sink runs this at start: on a store ``authtrail init-db`` prepared, nothing is
missing and no DDL is sent, so the sink's writer credential (INSERT and SELECT only,
sinks/access.py) suffices; the embedded store of ``authtrail up`` is created here on
first start, with no setup.
"""

from __future__ import annotations

import re

from authtrail.errors import ConfigurationError, StoreError
from authtrail.sinks.backend import ClickHouseBackend
from authtrail.sinks.clickhouse_sql import ACCESS_DENIED
from authtrail.sinks.tables import REJECTED_TABLE, create_statements

_CREATED = re.compile(r"CREATE (?:TABLE|VIEW) IF NOT EXISTS (\w+)")
_ADDED_COLUMN = re.compile(r"ADD COLUMN IF NOT EXISTS `(\w+)`")


def missing_statements(backend: ClickHouseBackend) -> list[str]:
    """The statements of :func:`create_statements` whose table, view or columns the
    store's current database lacks, in order."""
    existing = set(
        backend.query_arrow(
            "SELECT name FROM system.tables WHERE database = currentDatabase()"
        ).column(0).to_pylist()
    )  # fmt: skip
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
            what = _CREATED.match(statement)
            raise ConfigurationError(
                f"the store lacks {what.group(1) if what else 'columns of ' + REJECTED_TABLE} "
                f"and this credential may not create it ({exc}); run `authtrail init-db` "
                "with an administrator's ClickHouse URL first"
            ) from exc
    return missing
