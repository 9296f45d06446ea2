"""What the embedded store (chdb) runs at all, and what it runs confined to the store.

Every statement is first classified by the engine's own parser (``classify_query``): one
statement only, and a read-only call must be READ_ONLY (which also refuses ``INTO
OUTFILE`` and ``INSERT INTO FUNCTION``). A *confined* statement — every read-only call,
and every request through the HTTP front — is then parsed by the engine into a syntax
tree (``parseQueryToJSON``, or ``EXPLAIN AST`` for the few statements it cannot
serialise) and checked by :mod:`authtrail.sinks.query_policy` against the store's catalog, so that
it reaches no file, URL, program, other database or Python object.

Cost: one extra engine round trip per confined statement (syntax tree and catalog in one
query), ~2 ms on a 2-core machine where a small query takes ~2-3 ms; ~1 ms when the
catalog cannot change (a read-only store: it is then read once); the statements this
module cannot check by tree cost one more (EXPLAIN AST).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from authtrail.errors import ConfigurationError, StoreError
from authtrail.sinks.clickhouse_sql import (
    ACCESS_DENIED,
    NOT_IMPLEMENTED,
    READONLY,
    SYNTAX_ERROR,
    error_code,
    format_parameter,
    leading_keyword,
    require_read_only_statement,
)
from authtrail.sinks.query_policy import (
    ANYTHING,
    CLOSED_DATABASE_ENGINES,
    Catalog,
    Grant,
    check_explained,
    check_parsed,
    check_settings,
)

# Statements that would change the shared session for every later caller.
_SESSION_STATEMENTS = frozenset({"SET", "USE"})
_NOT_SERIALISABLE = "does not support JSON serialization"
_NEVER_SERIALISED = frozenset({"DESCRIBE", "DESC", "EXISTS"})  # by chdb 4.4's parseQueryToJSON
# The statement's syntax tree and the tables it may name, in one round trip (scalar
# subqueries would cost ~1 ms each). System databases hold engine-defined tables only.
_TREE_AND_TABLES = """
SELECT parseQueryToJSON({statement:String}), groupArray((database, name, engine)),
    currentDatabase()
FROM system.tables WHERE database NOT IN ('system', 'information_schema', 'INFORMATION_SCHEMA')
"""
_TABLES = _TREE_AND_TABLES.replace("parseQueryToJSON({statement:String})", "''")
_TREE = "SELECT parseQueryToJSON({statement:String})"
_OPEN_DATABASES = "SELECT groupArray(name) FROM system.databases WHERE engine NOT IN ({closed})"


class _CatalogChanges:
    """Counts the writing statements any store of this process has run: each may have
    created, dropped or altered a table (another process cannot open the directory)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def bump(self) -> None:
        with self._lock:
            self.count += 1


#: Bumped by :func:`note_writing_statement`; a cached catalog older than this is re-read.
CATALOG_CHANGES = _CatalogChanges()


def note_writing_statement() -> None:
    """Call after every statement that may change a store's catalog (any writing call)."""
    CATALOG_CHANGES.bump()


class GuardState:
    """What confinement remembers between statements on one store: the databases whose
    unknown names may be files (chdb's ``default`` overlay). Only the engine creates such
    a database (the writer policy refuses ``ENGINE = Filesystem``), so it is read once.

    ``catalog_fixed``: this state's connections cannot change the catalog (a read-only
    store), so the tables and the current database are read once and kept until a
    writing statement runs anywhere in this process (:func:`note_writing_statement`; no
    other process can open the directory), saving ~1 ms per statement. The statement
    itself is still parsed and checked every time.
    """

    def __init__(self, *, catalog_fixed: bool = False) -> None:
        self.open_databases: frozenset[str] | None = None
        self.catalog_fixed = catalog_fixed
        self.catalog_row: list[Any] | None = None  # [unused, tables, current database]
        self.catalog_as_of = -1  # CATALOG_CHANGES.count when catalog_row was read

    def cached_catalog(self) -> list[Any] | None:
        """The cached catalog row, if it may be used (None: read it again)."""
        if self.catalog_fixed and self.catalog_as_of == CATALOG_CHANGES.count:
            return self.catalog_row
        return None

    def keep_catalog(self, row: list[Any], as_of: int) -> None:
        """Cache ``row`` (read after ``CATALOG_CHANGES.count`` was ``as_of``)."""
        if self.catalog_fixed:
            self.catalog_row, self.catalog_as_of = ["", *row[1:]], as_of


class _Session(Protocol):
    def query(
        self, sql: str, fmt: str = ..., udf_path: str = ..., params: dict[str, str] | None = ...
    ) -> Any: ...


def check_statement(
    session: _Session,
    sql: str,
    *,
    read_only: bool,
    confined: bool = False,
    parameters: Mapping[str, str] | None = None,
    database: str | None = None,
    state: GuardState | None = None,
    grant: Grant = ANYTHING,
) -> None:
    """Refuse what must not run on ``session``; the caller holds the session.

    Always: several statements, SET/USE on a writing call; when ``read_only``, anything
    the engine does not classify READ_ONLY. When ``confined`` (implied by ``read_only``),
    anything :func:`authtrail.sinks.query_policy.check_parsed` refuses, with ``parameters`` (escaped
    text form) bound and unqualified names resolved in ``database`` (the session's when
    None), and tables limited to ``grant``; ``state`` caches what does not change between
    calls. Raises StoreError (62
    syntax, 164 read-only, 48 SET/USE, 497 access denied, 60 unknown table) and
    ConfigurationError when chdb lacks the parser entry points.
    """
    if read_only:
        require_read_only_statement(sql)
    elif leading_keyword(sql) in _SESSION_STATEMENTS:
        raise StoreError(
            "SET and USE would change the session every caller shares; pass settings "
            "with the query (HTTP parameters or the settings argument) instead",
            NOT_IMPLEMENTED,
        )
    report = _classify(session, sql)
    if report is None:
        if read_only or confined:
            raise ConfigurationError("read-only mode needs chdb>=4.4 (classify_query)")
        return
    kind, count = report
    if read_only and kind == "UNKNOWN":
        raise StoreError("read-only mode refuses text the engine cannot parse", SYNTAX_ERROR)
    if read_only and (count != 1 or kind != "READ_ONLY"):
        raise StoreError(
            f"read-only mode refuses this statement (engine classified it {kind}, "
            f"{count} statements)",
            READONLY,
        )
    if count > 1:
        raise StoreError("multi-statements are not allowed", SYNTAX_ERROR)
    if read_only or confined:
        confinement = _Confinement(session, state or GuardState(), database)
        confinement.check(sql, parameters or {}, writer=not read_only, kind=kind, grant=grant)


def check_request_settings(settings: Mapping[str, object], *, writer: bool) -> None:
    """Refuse per-request settings a confined call may not set (``readonly`` is decided by
    the connection). Raises StoreError (497)."""
    check_settings((name for name in settings if name != "readonly"), writer=writer)


class _Confinement:
    """Asks the engine for a statement's syntax tree and catalog, and checks them."""

    def __init__(self, session: _Session, state: GuardState, database: str | None) -> None:
        self.session = session
        self.state = state
        self.database = database

    def check(
        self, sql: str, parameters: Mapping[str, str], *, writer: bool, kind: str, grant: Grant
    ) -> None:
        if kind == "READ_ONLY" and leading_keyword(sql) in _NEVER_SERIALISED:
            self._check_explained(sql, parameters, grant)  # saves a failing round trip (~2 ms)
            return
        try:
            row = self._tree_and_tables(sql)
        except StoreError as exc:
            if _NOT_SERIALISABLE not in str(exc):
                raise _parse_error(exc) from None
            if kind != "READ_ONLY":
                raise StoreError(
                    f"this statement cannot be checked here (the engine has no syntax tree "
                    f"for it): {leading_keyword(sql)}",
                    ACCESS_DENIED,
                ) from None
            self._check_explained(sql, parameters, grant)
            return
        try:
            tree = json.loads(row[0])
        except ValueError as exc:
            raise StoreError(f"unreadable syntax tree from chdb: {exc}") from exc
        check_parsed(tree, self._catalog(row), writer=writer, grant=grant)

    def _tree_and_tables(self, sql: str) -> list[Any]:
        """[syntax tree, tables, current database] of ``sql``, the catalog from the
        cache when it cannot change."""
        statement = {"statement": format_parameter(sql)}
        cached = self.state.cached_catalog()
        if cached is not None:
            (tree,) = _query_row(self.session, _TREE, statement, 1)
            return [tree, *cached[1:]]
        as_of = CATALOG_CHANGES.count  # before reading: a change meanwhile invalidates it
        row = _query_row(self.session, _TREE_AND_TABLES, statement)
        self.state.keep_catalog(row, as_of)
        return row

    def _check_explained(self, sql: str, parameters: Mapping[str, str], grant: Grant) -> None:
        """DESCRIBE, EXISTS, SHOW CREATE…: checked on EXPLAIN AST text, more strictly."""
        row = self.state.cached_catalog() or _query_row(self.session, _TABLES, {})
        catalog = self._catalog(row)
        text = _query_text(self.session, f"EXPLAIN AST {sql}", parameters)
        check_explained(text, catalog, grant)

    def _catalog(self, row: list[Any]) -> Catalog:
        _, tables, current = row
        if self.state.open_databases is None:
            closed = ", ".join(f"'{engine}'" for engine in CLOSED_DATABASE_ENGINES)
            (names,) = _query_row(self.session, _OPEN_DATABASES.format(closed=closed), {}, 1)
            self.state.open_databases = frozenset(str(name) for name in names)
        return Catalog(
            tables={(str(db), str(name)): str(engine) for db, name, engine in tables},
            open_databases=self.state.open_databases,
            current_database=self.database or str(current),
            # chdb resolves a relative file name against this process's working directory.
            working_directory_has=os.path.lexists,
        )


def _query_row(session: _Session, sql: str, params: dict[str, str], columns: int = 3) -> list[Any]:
    text = _query_text(session, sql, params, "JSONCompactEachRow")
    try:
        row = json.loads(text)
    except ValueError as exc:
        raise StoreError(f"unreadable catalog from chdb: {exc}") from exc
    if not isinstance(row, list) or len(row) != columns:
        raise StoreError("unexpected catalog from chdb")
    return row


def _query_text(
    session: _Session, sql: str, params: Mapping[str, str], fmt: str = "TabSeparatedRaw"
) -> str:
    try:
        result = session.query(sql, fmt, params=dict(params))
    except RuntimeError as exc:
        message = str(exc).strip()
        raise StoreError(message, error_code(message)) from exc
    return bytes(result.bytes()).decode("utf-8", errors="replace")


def _parse_error(exc: StoreError) -> StoreError:
    """The engine's parse error, without the wrapping query it was found in."""
    message = str(exc).split(": In scope SELECT parseQueryToJSON(")[0]
    return StoreError(message, exc.code or SYNTAX_ERROR)


def _classify(session: _Session, sql: str) -> tuple[str, int] | None:
    """(query class, statement count) from the engine's parser; None if chdb lacks it."""
    # classify_query is bound on the extension object, not on the Python wrapper; chdb's
    # own chdb.durable reaches through the same way.
    raw = getattr(getattr(session, "_conn", None), "_conn", None)
    classify = getattr(raw, "classify_query", None)
    if classify is None:
        return None
    report = classify(sql)
    kind = report["query_class"]
    return getattr(kind, "name", str(kind)), int(report["statement_count"])
