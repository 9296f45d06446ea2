"""What a confined statement may reach: the store's own tables, and nothing outside them.

Pure functions over what the engine's parser returned (no I/O, no chdb): the JSON syntax
tree of ``parseQueryToJSON``, or, for the few statements it cannot serialise (DESCRIBE,
EXISTS, SHOW CREATE), the text of ``EXPLAIN AST``. :mod:`authtrail.sinks.embedded_guard` asks the
engine and calls these; every refusal is a StoreError with ClickHouse's code.

Why each rule (measured on chdb 4.4, ClickHouse 26.9, see
tests/integration/test_front_confinement.py):

* Table functions: ``file``, ``url``, ``s3``, ``remote``, ``mysql``, ``executable``,
  ``python`` (objects of this very process) and dozens more reach outside the store, and
  new ones arrive with each release, so table-function positions take an allowlist.
* Scalar functions: ``file('/path')`` returns a file's content; ``joinGet`` and
  ``hasColumnInTable`` take a table *name* (see the next point); the ``ai*`` functions
  call network endpoints.
* Table names: chdb's ``default`` database is an overlay of the store and the file system
  (clickhouse-local's), so ``SELECT * FROM '/any/file'`` and ``SELECT * FROM LICENSE``
  (a file in the working directory) read files, as does ``x IN LICENSE``. Every table
  name must therefore be a table the catalog lists, with an engine that keeps to the
  store, or a WITH name in scope. chdb ignores ``user_files_path`` (its embedded server
  sets "user's files are everywhere"), so the engine cannot confine this itself.
* Settings: some name files (``format_schema``, ``format_template_row``, the errors file
  of ``input_format_record_errors_file_path``), carry SQL the parser never sees
  (``additional_table_filters``), or change the parser (``dialect``): an allowlist again.
* ``{name:Identifier}`` parameters can become table names after this check; refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from authtrail.errors import StoreError
from authtrail.sinks.clickhouse_sql import ACCESS_DENIED, READONLY, UNKNOWN_TABLE, is_identifier

#: Table functions that compute rows from their arguments alone (``view`` and ``format``
#: take a query or inline data, which is checked like the rest of the statement).
TABLE_FUNCTIONS = (
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateSeries",
    "values", "null", "view", "format",
)  # fmt: skip
#: Scalar functions that read files, take a table name, or call out to the network.
DENIED_FUNCTIONS = frozenset(
    {
        "file", "joinget", "joingetornull", "hascolumnintable",
        "aiclassify", "aiembed", "aiextract", "aifilter", "aigenerate", "airedact",
        "aisimilarity", "aitranslate",
    }
)  # fmt: skip
#: Engines whose tables keep their rows in the store (reading them touches nothing else).
_LOCAL_ENGINES = frozenset({"Memory", "Null", "Log", "TinyLog", "StripeLog"})
_VIEW_ENGINES = frozenset({"View", "MaterializedView"})
#: Database engines that resolve only the tables they hold: an unknown name is the engine's
#: UNKNOWN_TABLE, never a file. ``Overlay`` (chdb's ``default``) is not one of them.
CLOSED_DATABASE_ENGINES = ("Atomic", "Memory", "Ordinary", "Lazy", "Replicated")
_TABLE_FUNCTION_NAMES = frozenset(name.lower() for name in TABLE_FUNCTIONS)
_IN_FUNCTIONS = frozenset(
    {"in", "notin", "globalin", "globalnotin", "nullin", "notnullin", "globalnullin",
     "globalnotnullin"}
)  # fmt: skip

_READ_STATEMENTS = frozenset(
    {"SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "ExplainQuery",
     "ShowTablesQuery", "ShowColumnsQuery", "ShowIndexesQuery"}
)  # fmt: skip
# A writer inserts and reads, nothing more: no CREATE, ALTER, DROP, TRUNCATE, RENAME,
# OPTIMIZE or mutation. Schema changes need a grant with ``ddl`` (an administrator's).
_WRITE_STATEMENTS = _READ_STATEMENTS | frozenset({"InsertQuery"})
_DDL_STATEMENTS = _WRITE_STATEMENTS | frozenset(
    {"CreateQuery", "AlterQuery", "DropQuery", "RenameQuery", "OptimizeQuery", "DeleteQuery",
     "UpdateQuery"}
)  # fmt: skip
_SYSTEM_DATABASES = frozenset({"system", "information_schema", "INFORMATION_SCHEMA"})

# Settings a confined request may set: result shape, limits, join and date behaviour; a
# writer also the insert and mutation ones. Anything naming a file, URL, schema or
# template, or changing what the parser reads, stays out even under a listed prefix.
_READ_SETTINGS = frozenset(
    {
        "readonly", "extremes", "session_timezone", "join_use_nulls", "limit", "offset",
        "result_overflow_mode", "timeout_overflow_mode", "read_overflow_mode",
        "transform_null_in", "final", "use_query_cache", "use_uncompressed_cache",
        "log_comment", "send_logs_level", "cast_keep_nullable", "group_by_use_nulls",
        "aggregate_functions_null_for_empty", "prefer_column_name_to_alias", "totals_mode",
        "distributed_product_mode", "enable_analyzer", "allow_experimental_analyzer",
        "cast_string_to_dynamic_use_inference",  # clickhouse-connect sets it on connect
    }
)  # fmt: skip
_READ_SETTING_PREFIXES = (
    "max_", "output_format_", "date_time_", "join_", "format_csv_", "format_tsv_",
    "optimize_", "query_plan_",
)  # fmt: skip
_WRITE_SETTINGS = frozenset(
    {"async_insert", "wait_for_async_insert", "mutations_sync", "alter_sync",
     "lightweight_deletes_sync", "deduplicate_blocks_in_dependent_materialized_views"}
)  # fmt: skip
_WRITE_SETTING_PREFIXES = ("insert_", "input_format_")
_NEVER_IN_SETTINGS = re.compile(r"path|file|url|schema|template|dir|dialect|filter|implicit")
# MergeTree settings that place a table's data elsewhere (``disk = disk(path = …)``).
_NEVER_IN_TABLE_SETTINGS = re.compile(r"disk|storage_policy|path|keeper|s3|url|file")

# One line of EXPLAIN AST: indentation, node text, and how many children it announced.
_EXPLAIN_LINE = re.compile(r"( *)(.*?)(?: \(children (\d+)\))?")
_EXPLAIN_NODES = frozenset({"TableExpression", "TableIdentifier", "Identifier", "ExpressionList"})
_EXPLAIN_ONE_TABLE = frozenset(
    {"ExistsTableQuery", "ExistsViewQuery", "ShowCreateTableQuery", "ShowCreateViewQuery"}
)
_EXPLAIN_DATABASE = frozenset({"ExistsDatabaseQuery", "ShowCreateDatabaseQuery"})


@dataclass(frozen=True)
class Catalog:
    """What a statement may name: ``tables`` ((database, table) → engine; system databases
    may be left out), ``open_databases`` (those whose engine is not in
    :data:`CLOSED_DATABASE_ENGINES`: an unknown name there may be a file), and
    ``current_database``.

    ``working_directory_has`` answers whether a relative path exists where the engine
    would look for it (only needed to tell ``db.table`` from a quoted ``a.b`` in EXPLAIN
    text, which prints both alike).
    """

    tables: Mapping[tuple[str, str], str]
    open_databases: frozenset[str]
    current_database: str
    working_directory_has: Callable[[str], bool] = field(default=lambda _path: False)


@dataclass(frozen=True)
class Grant:
    """What one user may touch in the store, on top of confinement.

    ``readable``: the store's tables (and views) it may read, by name in the current
    database; None: every one. System databases stay readable (catalogs, settings).
    ``insertable``: the tables a writer may insert into; None: every table of the store.
    ``ddl``: a writer may also create, alter, drop, rename, optimize and mutate (still
    confined to the store): an administrator, never a service.
    """

    readable: frozenset[str] | None = None
    insertable: frozenset[str] | None = None
    ddl: bool = False


ANYTHING = Grant()


def check_settings(names: Iterable[str], *, writer: bool) -> None:
    """Raise StoreError (497 ACCESS_DENIED) unless every setting name is allowed.

    ``writer`` adds the insert and mutation settings to the read settings.
    """
    for name in names:
        lowered = name.lower()
        allowed = lowered in _READ_SETTINGS or lowered.startswith(_READ_SETTING_PREFIXES)
        if writer:
            allowed = allowed or lowered in _WRITE_SETTINGS
            allowed = allowed or lowered.startswith(_WRITE_SETTING_PREFIXES)
        if not allowed or _NEVER_IN_SETTINGS.search(lowered):
            raise StoreError(
                f"setting {name!r} is not accepted here (it can name files or URLs, or change "
                "how the statement is read); the front allows result, limit and join settings",
                ACCESS_DENIED,
            )


def check_parsed(
    tree: Mapping[str, Any], catalog: Catalog, *, writer: bool, grant: Grant = ANYTHING
) -> None:
    """Check the JSON syntax tree of one statement (``parseQueryToJSON``) against the policy.

    Raises StoreError: 164 READONLY for a write when not ``writer``, 497 ACCESS_DENIED for
    a statement kind a writer may not run (anything but reads and INSERT unless
    ``grant.ddl``), a table
    ``grant`` does not give, or a function, setting, engine or table that reaches outside
    the store, 60 UNKNOWN_TABLE for a name that is no table of the store.
    """
    kind = str(tree.get("type", ""))
    allowed = (_DDL_STATEMENTS if grant.ddl else _WRITE_STATEMENTS) if writer else _READ_STATEMENTS
    if kind not in allowed:
        who = "the writer" if writer else "read-only mode"
        raise StoreError(
            f"{who} refuses {kind or 'this'} statements here", ACCESS_DENIED if writer else READONLY
        )
    if tree.get("is_dictionary") or tree.get("has_attach_from_path") or "infile" in tree:
        raise StoreError(
            "dictionaries, ATTACH … FROM a path and INSERT … FROM INFILE reach outside the store",
            ACCESS_DENIED,
        )
    for parts in _write_targets(tree):
        _check_table(parts, catalog)  # INSERT INTO / TRUNCATE a *file* in chdb's default
        _check_granted(parts, catalog, grant.insertable, "insert into")
    try:
        _TreeWalker(catalog, writer, grant).visit(tree, frozenset())
    except RecursionError as exc:
        raise StoreError("statement is too deeply nested to be checked", ACCESS_DENIED) from exc


def _write_targets(tree: Mapping[str, Any]) -> list[list[str]]:
    """The existing tables a write statement changes, as name parts (CREATE makes new ones)."""
    kind = tree.get("type")
    if kind in ("InsertQuery", "OptimizeQuery", "DeleteQuery", "UpdateQuery"):
        table, database = tree.get("table"), tree.get("database")
        if not isinstance(table, dict):
            return []
        names = [database.get("name", "")] if isinstance(database, dict) else []
        return [[*names, str(table.get("name", ""))]]
    if kind in ("AlterQuery", "DropQuery") and tree.get("table"):
        return [_parts(tree.get("database"), tree.get("table"))]
    if kind == "RenameQuery":
        sides = ("from", "to") if tree.get("exchange") else ("from",)
        return [
            _parts(element.get(f"{side}_database"), element.get(f"{side}_table"))
            for element in tree.get("elements", [])
            for side in sides
        ]
    return []


def _parts(database: Any, table: Any) -> list[str]:
    return [str(database), str(table)] if database else [str(table)]


def _check_granted(
    parts: list[str], catalog: Catalog, granted: frozenset[str] | None, verb: str
) -> None:
    """Refuse (497) a table of the store outside ``granted`` (None: all granted)."""
    if granted is None:
        return
    database, table = (catalog.current_database, parts[0]) if len(parts) == 1 else parts[:2]
    if database in _SYSTEM_DATABASES and verb == "read":
        return
    if database != catalog.current_database or table not in granted:
        raise StoreError(
            f"this user may not {verb} {database}.{table} (granted: "
            f"{', '.join(sorted(granted)) or 'nothing'})",
            ACCESS_DENIED,
        )


def check_explained(text: str, catalog: Catalog, grant: Grant = ANYTHING) -> None:
    """Check ``EXPLAIN AST`` output of a statement ``parseQueryToJSON`` cannot serialise.

    Only such statements about one table by name (``DESCRIBE t``, ``EXISTS t``, ``SHOW
    CREATE TABLE t``), about a database, or about no table (``SHOW PROCESSLIST``) are
    accepted, with at most a FORMAT: no functions, subqueries or settings. The text prints
    names raw, so a quoted name holding a newline could forge lines; the children count
    each node announces is checked to catch that. Raises StoreError (497 ACCESS_DENIED,
    60 UNKNOWN_TABLE).
    """
    nodes = _explained_nodes(text.removesuffix("\n").split("\n"))
    root = nodes[0]
    kind = root.partition(" ")[0]
    children = [node.partition(" ") for node in nodes[1:]]
    for child, _, _ in children:
        if child not in _EXPLAIN_NODES and child != "Literal":
            raise StoreError(
                f"this statement is only accepted for a table named directly (it holds "
                f"{child}); query system.columns or system.tables instead",
                ACCESS_DENIED,
            )
    if kind in _EXPLAIN_ONE_TABLE:
        # "ShowCreateTableQuery <database> <table>": the names, and FORMAT, as Identifiers.
        words = root.split(" ")
        if len(words) != 3 or not words[2]:
            raise StoreError("cannot check this statement's table name", ACCESS_DENIED)
        parts = [words[1], words[2]] if words[1] else [words[2]]
        _check_table(parts, catalog)
        _check_granted(parts, catalog, grant.readable, "read")
    elif kind not in _EXPLAIN_DATABASE:
        # Elsewhere an Identifier may only be the FORMAT, which the engine prints last.
        named = [index for index, (child, _, _) in enumerate(children) if child == "Identifier"]
        if named not in ([], [len(children) - 1]):
            raise StoreError(f"this statement cannot be checked here ({kind})", ACCESS_DENIED)
    for child, _, name in children:
        if child == "TableIdentifier":
            if "." in name and catalog.working_directory_has(name):
                # "a.b" is also how a quoted single name prints: a file of that name exists.
                raise StoreError(f"{name!r} names a file; files are out of reach", ACCESS_DENIED)
            parts = name.split(".", 1) if "." in name else [name]
            _check_table(parts, catalog)
            _check_granted(parts, catalog, grant.readable, "read")


def _explained_nodes(lines: list[str]) -> list[str]:
    """Each line's node text, once the tree the lines draw is consistent.

    Every line is one node, indented one space per depth; "(children N)" must match the
    lines found one level deeper. Raises StoreError (497) otherwise.
    """
    nodes: list[str] = []
    declared: list[int] = []
    seen: list[int] = []
    stack: list[int] = []  # indices of the open nodes, one per depth
    for index, line in enumerate(lines):
        match = _EXPLAIN_LINE.fullmatch(line)
        depth = len(match.group(1)) if match else -1
        if match is None or depth > len(stack) or (index > 0) != (depth > 0):
            raise StoreError("cannot check this statement's syntax tree", ACCESS_DENIED)
        del stack[depth:]
        if stack:
            seen[stack[-1]] += 1
        nodes.append(match.group(2))
        declared.append(int(match.group(3) or 0))
        seen.append(0)
        stack.append(index)
    if not nodes or declared != seen:
        raise StoreError("cannot check this statement's syntax tree", ACCESS_DENIED)
    return nodes


class _TreeWalker:
    """Walks a parseQueryToJSON tree; ``scope`` holds the WITH names visible at a node."""

    def __init__(self, catalog: Catalog, writer: bool, grant: Grant = ANYTHING) -> None:
        self.catalog = catalog
        self.writer = writer
        self.grant = grant

    def visit(self, node: Any, scope: frozenset[str]) -> None:
        if isinstance(node, list):
            for item in node:
                self.visit(item, scope)
            return
        if not isinstance(node, dict):
            return
        kind = str(node.get("type", ""))
        if kind == "SelectQuery":
            self._select(node, scope)
            return
        if kind == "QueryParameter" and "identifier" in str(node.get("param_type")).lower():
            raise StoreError(
                "{name:Identifier} parameters are not accepted here; write names in the statement",
                ACCESS_DENIED,
            )
        if "out_file" in node:
            raise StoreError("INTO OUTFILE writes a file; it is refused here", ACCESS_DENIED)
        self._fields(node, kind, scope)  # first: a parameter inside a name explains best
        if kind == "TableIdentifier":
            self._table(node, scope)
        elif kind == "Function":
            self._function(node, scope)
        elif kind == "SetQuery":
            check_settings(_setting_names(node), writer=self.writer)
        if node.get("as_table"):  # CREATE TABLE x AS t: structure (and a file's) read from t
            _check_table(_parts(node.get("as_database"), node["as_table"]), self.catalog)
        if node.get("from_table"):  # ALTER … ATTACH/REPLACE PARTITION … FROM t
            _check_table(_parts(node.get("from_database"), node["from_table"]), self.catalog)

    def _fields(self, node: Mapping[str, Any], kind: str, scope: frozenset[str]) -> None:
        for key, value in node.items():
            if key in ("table_function", "as_table_function"):
                self._table_function(value)
            elif key == "engine" and kind == "Storage" and isinstance(value, dict):
                self._engine(value, scope)
            elif key in ("settings", "settings_changes") and isinstance(value, dict):
                if kind in ("Storage", "AlterCommand"):
                    _check_table_settings(_setting_names(value))
                elif kind != "ExplainQuery":  # EXPLAIN's own options are no engine settings
                    check_settings(_setting_names(value), writer=self.writer)
            else:
                self.visit(value, scope)

    def _select(self, node: Mapping[str, Any], scope: frozenset[str]) -> None:
        recursive = bool(node.get("recursive_with"))
        names: set[str] = set()
        for item in (node.get("with") or {}).get("children", []):
            if isinstance(item, dict) and item.get("type") == "WithElement":
                # A WITH query sees the names defined before it (and itself if RECURSIVE);
                # a name it cannot see is a table, or a file in chdb's default database.
                own = {str(item.get("name"))} if recursive else set()
                self.visit(item.get("subquery"), scope | names | own)
                names.add(str(item.get("name")))
            else:
                self.visit(item, scope | names)
        self._fields({k: v for k, v in node.items() if k != "with"}, "SelectQuery", scope | names)

    def _table(self, node: Mapping[str, Any], scope: frozenset[str]) -> None:
        parts = [str(part) for part in node.get("name_parts") or [node.get("name", "")]]
        if len(parts) == 1 and parts[0] in scope:
            return
        _check_table(parts, self.catalog)
        _check_granted(parts, self.catalog, self.grant.readable, "read")

    def _engine(self, node: Mapping[str, Any], scope: frozenset[str]) -> None:
        name = str(node.get("name", ""))
        if not (_stays_local(name) or name in CLOSED_DATABASE_ENGINES):
            raise StoreError(f"engine {name} reaches outside the store", ACCESS_DENIED)
        self.visit(node.get("arguments"), scope)

    def _function(self, node: Mapping[str, Any], scope: frozenset[str]) -> None:
        name = str(node.get("name", ""))
        if name.lower() in DENIED_FUNCTIONS:
            raise StoreError(
                f"function {name}() reaches files, tables by name or the network; it is "
                "refused here",
                ACCESS_DENIED,
            )
        arguments = (node.get("arguments") or {}).get("children") or []
        if name.lower() in _IN_FUNCTIONS and len(arguments) == 2:
            right = arguments[1]
            if isinstance(right, dict) and right.get("type") == "Identifier":
                self._table(right, scope)  # `x IN name` reads the table (or file) `name`

    def _table_function(self, node: Any) -> None:
        name = str(node.get("name", "")) if isinstance(node, dict) else ""
        if name.lower() not in _TABLE_FUNCTION_NAMES:
            raise StoreError(
                f"table function {name}() is refused here: it can reach files, URLs, other "
                f"databases, programs or Python objects (allowed: {', '.join(TABLE_FUNCTIONS)})",
                ACCESS_DENIED,
            )
        self.visit(node.get("arguments"), frozenset())


def _setting_names(set_query: Mapping[str, Any]) -> list[str]:
    return [str(change.get("name", "")) for change in set_query.get("changes", [])]


def _check_table_settings(names: Iterable[str]) -> None:
    for name in names:
        if _NEVER_IN_TABLE_SETTINGS.search(name.lower()):
            raise StoreError(
                f"table setting {name!r} can put the table outside the store", ACCESS_DENIED
            )


def _check_table(parts: list[str], catalog: Catalog) -> None:
    """Accept a table of the store, or a name in a database that holds only its tables."""
    if len(parts) == 1:
        database, table = catalog.current_database, parts[0]
    elif len(parts) == 2:
        database, table = parts
    else:
        raise StoreError(f"{'.'.join(parts)!r} is not a table name", ACCESS_DENIED)
    engine = catalog.tables.get((database, table))
    if engine is not None:
        if not (_stays_local(engine) or engine in _VIEW_ENGINES):
            raise StoreError(
                f"table {database}.{table} has engine {engine}, which reads outside the store",
                ACCESS_DENIED,
            )
        return
    if database not in catalog.open_databases:
        return  # the engine answers UNKNOWN_TABLE (or UNKNOWN_DATABASE) itself
    if not all(is_identifier(part) for part in (database, table)):
        raise StoreError(
            f"{'.'.join(parts)!r} is no table of the store; reading files by name is refused",
            ACCESS_DENIED,
        )
    raise StoreError(f"Unknown table {database}.{table}: no such table in the store", UNKNOWN_TABLE)


def _stays_local(engine: str) -> bool:
    return engine.endswith("MergeTree") or engine in _LOCAL_ENGINES
