"""The confinement policy on syntax trees shaped as chdb 4.4's parser returns them.

The engine-level proof (the same statements refused through the HTTP front and read-only
calls, and the key never read) is tests/integration/test_front_confinement.py; these pin
the rules themselves, including the cases that need a tree built by hand (a forged EXPLAIN
line, a WITH name used outside its scope).
"""

from __future__ import annotations

from typing import Any

import pytest

from authtrail.errors import StoreError
from authtrail.sinks.query_policy import (
    Catalog,
    Grant,
    check_explained,
    check_parsed,
    check_settings,
)

ACCESS_DENIED, UNKNOWN_TABLE, READONLY = 497, 60, 164
CATALOG = Catalog(
    tables={("default", "events"): "MergeTree", ("default", "leak"): "File"},
    open_databases=frozenset({"default"}),  # chdb's overlay: unknown names may be files
    current_database="default",
)


def table(name: str, *parts: str) -> dict[str, Any]:
    identifier: dict[str, Any] = {"type": "TableIdentifier", "name": name}
    if parts:
        identifier["name_parts"] = list(parts)
    return {"type": "TableExpression", "database_and_table_name": identifier}


def function(name: str, *arguments: Any) -> dict[str, Any]:
    return {"type": "Function", "name": name,
            "arguments": {"type": "ExpressionList", "children": list(arguments)}}  # fmt: skip


def select(*tables: dict[str, Any], columns: Any = None, with_: Any = None, **more: Any) -> Any:
    query: dict[str, Any] = {
        "type": "SelectQuery",
        "select": {"type": "ExpressionList", "children": columns or [{"type": "Asterisk"}]},
        **more,
    }
    if tables:
        elements = [{"type": "TablesInSelectQueryElement", "table_expression": t} for t in tables]
        query["tables"] = {"type": "TablesInSelectQuery", "children": elements}
    if with_ is not None:
        query["with"] = {"type": "ExpressionList", "children": with_}
    return {"type": "SelectWithUnionQuery",
            "list_of_selects": {"type": "ExpressionList", "children": [query]}}  # fmt: skip


def cte(name: str, query: Any) -> dict[str, Any]:
    return {"type": "WithElement", "name": name,
            "subquery": {"type": "Subquery", "children": [query]}}  # fmt: skip


def literal(value: Any) -> dict[str, Any]:
    return {"type": "Literal", "value": {"field_type": "String", "value": value}}


def refused(tree: Any, *, writer: bool = False) -> int:
    with pytest.raises(StoreError) as refusal:
        check_parsed(tree, CATALOG, writer=writer)
    return refusal.value.code


def test_tables_of_the_store_and_allowed_table_functions_pass() -> None:
    check_parsed(select(table("events")), CATALOG, writer=False)
    check_parsed(select(table("default.events", "default", "events")), CATALOG, writer=False)
    check_parsed(select(table("system.tables", "system", "tables")), CATALOG, writer=False)
    numbers = {"type": "TableExpression", "table_function": function("numbers", literal(10))}
    check_parsed(select(numbers), CATALOG, writer=False)
    series = {"type": "TableExpression", "table_function": function("generateSeries")}
    check_parsed(select(series), CATALOG, writer=False)


@pytest.mark.parametrize(
    "name", ["file", "url", "s3", "remote", "mysql", "executable", "python", "Python", "merge"]
)
def test_other_table_functions_are_refused(name: str) -> None:
    tree = select({"type": "TableExpression", "table_function": function(name, literal("x"))})
    assert refused(tree) == ACCESS_DENIED


@pytest.mark.parametrize("name", ["file", "FILE", "joinGet", "hasColumnInTable", "aiGenerate"])
def test_scalar_functions_that_reach_out_are_refused(name: str) -> None:
    assert refused(select(columns=[function(name, literal("/etc/passwd"))])) == ACCESS_DENIED


def test_names_the_catalog_does_not_hold_are_files_in_the_overlay_database() -> None:
    assert refused(select(table("/etc/passwd"))) == ACCESS_DENIED
    assert refused(select(table("LICENSE"))) == UNKNOWN_TABLE
    assert refused(select(table("a.b"))) == ACCESS_DENIED  # `a.b` quoted: one name, a file
    assert refused(select(table("leak"))) == ACCESS_DENIED  # engine File
    # A closed database answers for unknown names itself (UNKNOWN_TABLE, never a file).
    check_parsed(select(table("audit.nothing", "audit", "nothing")), CATALOG, writer=False)
    in_file = function("in", {"type": "Identifier", "name": "a"},
                       {"type": "Identifier", "name": "LICENSE"})  # fmt: skip
    assert refused(select(table("events"), columns=[in_file])) == UNKNOWN_TABLE


def test_with_names_count_only_where_they_are_visible() -> None:
    check_parsed(select(table("x"), with_=[cte("x", select())]), CATALOG, writer=False)
    # Outside the subquery that defines it, `x` is a table again (or a file).
    defining = {"type": "Subquery", "children": [select(with_=[cte("x", select())])]}
    inner = {"type": "TableExpression", "subquery": defining}
    assert refused(select(inner, table("x"))) == UNKNOWN_TABLE
    # A WITH query does not see its own name unless RECURSIVE.
    assert refused(select(table("x"), with_=[cte("x", select(table("x")))])) == UNKNOWN_TABLE
    recursive = select(table("x"), with_=[cte("x", select(table("x")))], recursive_with=True)
    check_parsed(recursive, CATALOG, writer=False)


def test_identifier_parameters_settings_and_outfile_are_refused() -> None:
    parameter = {"type": "QueryParameter", "name": "t", "param_type": "Identifier"}
    identifier = {"type": "TableIdentifier", "name": "", "children": [parameter]}
    named = {"type": "TableExpression", "database_and_table_name": identifier}
    assert refused(select(named)) == ACCESS_DENIED
    settings = {"type": "SetQuery", "changes": [{"name": "format_schema", "value": 1}]}
    assert refused(select(settings=settings)) == ACCESS_DENIED
    assert refused({**select(), "out_file": literal("/tmp/x")}) == ACCESS_DENIED


def test_statement_kinds_depend_on_the_user() -> None:
    insert = {"type": "InsertQuery", "table": {"type": "Identifier", "name": "events"}}
    assert refused(insert) == READONLY
    check_parsed(insert, CATALOG, writer=True)
    into_file = {"type": "InsertQuery", "table": {"type": "Identifier", "name": "LICENSE"}}
    assert refused(into_file, writer=True) == UNKNOWN_TABLE  # would append to the file
    assert refused({"type": "SystemQuery"}, writer=True) == ACCESS_DENIED


@pytest.mark.parametrize(
    "kind", ["CreateQuery", "AlterQuery", "DropQuery", "RenameQuery", "OptimizeQuery",
             "DeleteQuery", "UpdateQuery", "UndropQuery", "TruncateQuery"],
)  # fmt: skip
def test_the_writer_only_inserts_and_reads(kind: str) -> None:
    """No DDL and no mutation for the writer: it cannot change or remove a stored row."""
    tree = {"type": kind, "table": "events", "storage": {"type": "Storage"}}
    assert refused(tree, writer=True) == ACCESS_DENIED
    assert refused(tree) == READONLY


def test_an_administrator_creates_only_inside_the_store() -> None:
    admin = Grant(ddl=True)
    engine = {"type": "Function", "name": "File", "kind": "TABLE_ENGINE"}
    create = {"type": "CreateQuery", "table": "x", "storage": {"type": "Storage", "engine": engine}}
    with pytest.raises(StoreError) as refusal:
        check_parsed(create, CATALOG, writer=True, grant=admin)
    assert refusal.value.code == ACCESS_DENIED
    disk = {"type": "SetQuery", "changes": [{"name": "disk", "value": "x"}]}
    merge_tree = {"type": "Function", "name": "MergeTree", "kind": "TABLE_ENGINE"}
    create["storage"] = {"type": "Storage", "engine": merge_tree, "settings": disk}
    with pytest.raises(StoreError) as refusal:
        check_parsed(create, CATALOG, writer=True, grant=admin)
    assert refusal.value.code == ACCESS_DENIED
    window = {"type": "SetQuery", "changes": [{"name": "non_replicated_deduplication_window"}]}
    create["storage"] = {"type": "Storage", "engine": merge_tree, "settings": window}
    check_parsed(create, CATALOG, writer=True, grant=admin)
    assert refused(create, writer=True) == ACCESS_DENIED  # the same, without the grant


AUDIT_TABLES = frozenset({"events"})
CATALOG_WITH_VIEW = Catalog(
    tables={("default", "events"): "MergeTree", ("default", "chain_status"): "View",
            ("default", "tenants"): "Memory"},
    open_databases=frozenset(), current_database="default",
)  # fmt: skip


def test_a_grant_limits_what_is_read_and_written() -> None:
    auditor = Grant(readable=AUDIT_TABLES, insertable=frozenset())
    writer = Grant(readable=AUDIT_TABLES, insertable=AUDIT_TABLES)
    check_parsed(select(table("events")), CATALOG_WITH_VIEW, writer=False, grant=auditor)
    system = select(table("system.tables", "system", "tables"))
    check_parsed(system, CATALOG_WITH_VIEW, writer=False, grant=auditor)  # verify reads it
    for name in ("chain_status", "tenants"):
        with pytest.raises(StoreError, match="may not read") as refusal:
            check_parsed(select(table(name)), CATALOG_WITH_VIEW, writer=False, grant=auditor)
        assert refusal.value.code == ACCESS_DENIED
    # Through a subquery, a WITH query or IN, too.
    nested = select(with_=[cte("x", select(table("tenants")))], columns=[literal(1)])
    with pytest.raises(StoreError, match="may not read"):
        check_parsed(nested, CATALOG_WITH_VIEW, writer=False, grant=auditor)
    insert = {"type": "InsertQuery", "table": {"type": "Identifier", "name": "events"}}
    check_parsed(insert, CATALOG_WITH_VIEW, writer=True, grant=writer)
    other = {"type": "InsertQuery", "table": {"type": "Identifier", "name": "tenants"}}
    with pytest.raises(StoreError, match=r"may not insert into default\.tenants"):
        check_parsed(other, CATALOG_WITH_VIEW, writer=True, grant=writer)
    with pytest.raises(StoreError, match="may not read"):
        check_explained(DESCRIBE.replace("events", "tenants"), CATALOG_WITH_VIEW, auditor)
    check_explained(DESCRIBE, CATALOG_WITH_VIEW, auditor)


@pytest.mark.parametrize(
    "name", ["max_threads", "output_format_arrow_string_as_string", "date_time_input_format"]
)
def test_result_and_limit_settings_pass(name: str) -> None:
    check_settings([name], writer=False)


@pytest.mark.parametrize(
    "name",
    ["format_schema", "format_template_row", "additional_table_filters", "dialect",
     "implicit_table_at_top_level", "output_format_schema", "input_format_record_errors_file_path",
     "url_base"],
)  # fmt: skip
def test_settings_that_name_files_or_change_parsing_are_refused(name: str) -> None:
    with pytest.raises(StoreError) as refusal:
        check_settings([name], writer=True)
    assert refusal.value.code == ACCESS_DENIED


def test_insert_settings_are_the_writers() -> None:
    check_settings(["insert_deduplication_token", "input_format_null_as_default"], writer=True)
    with pytest.raises(StoreError):
        check_settings(["insert_deduplication_token"], writer=False)


DESCRIBE = """DescribeQuery (children 2)
 TableExpression (children 1)
  TableIdentifier events
 Identifier Native
"""


def test_explain_text_of_a_table_by_name_passes() -> None:
    check_explained(DESCRIBE, CATALOG)
    check_explained("ExistsTableQuery  events (children 1)\n Identifier events\n", CATALOG)
    check_explained("ShowProcesslistQuery (children 1)\n Identifier JSON\n", CATALOG)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (DESCRIBE.replace("events", "LICENSE"), UNKNOWN_TABLE),
        (DESCRIBE.replace("events", "/etc/passwd"), ACCESS_DENIED),
        ("ExistsTableQuery  notes (children 1)\n Identifier notes\n", UNKNOWN_TABLE),
        ("ExistsTableQuery  a b (children 1)\n Identifier a b\n", ACCESS_DENIED),  # spaces
        # A quoted name holding a newline forges a line: the children counts expose it.
        ("DescribeQuery (children 1)\n TableExpression (children 1)\n  TableIdentifier events\n"
         "  TableIdentifier LICENSE\n", ACCESS_DENIED),
        ("DescribeQuery (children 1)\n TableExpression (children 1)\n  TableIdentifier x\n\n",
         ACCESS_DENIED),
        ("DescribeQuery (children 1)\n TableExpression (children 1)\n  Function file\n",
         ACCESS_DENIED),
        ("DescribeQuery (children 2)\n TableExpression (children 1)\n  TableIdentifier events\n"
         " Set\n", ACCESS_DENIED),
        ("ShowProcesslistQuery (children 2)\n Identifier LICENSE\n Identifier JSON\n",
         ACCESS_DENIED),
    ],
)  # fmt: skip
def test_explain_text_reaching_further_is_refused(text: str, code: int) -> None:
    with pytest.raises(StoreError) as refusal:
        check_explained(text, CATALOG)
    assert refusal.value.code == code


def test_a_dotted_name_that_is_a_file_is_refused_in_explain_text() -> None:
    catalog = Catalog(
        tables={("system", "tables"): "SystemTables"},
        open_databases=frozenset({"default"}),
        current_database="default",
        working_directory_has=lambda path: path == "system.tables",
    )
    with pytest.raises(StoreError) as refusal:
        check_explained(DESCRIBE.replace("events", "system.tables"), catalog)
    assert refusal.value.code == ACCESS_DENIED
