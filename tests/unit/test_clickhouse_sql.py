"""The SQL text helpers the ClickHouse backends rely on: known answers and refusals.

The engine-level proof (every hostile value binds as itself on both backends) is in
tests/integration/test_clickhouse_backends.py; these pin the text itself.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from authtrail.errors import InvalidArgumentError, StoreError
from authtrail.sinks.clickhouse_sql import (
    READONLY,
    arrow_stream_bytes,
    check_parameters,
    error_code,
    format_parameter,
    insert_settings,
    leading_keyword,
    quote_identifier,
    quote_string_literal,
    quote_table_name,
    require_read_only_statement,
    setting_literal,
    settings_clause,
)

_ESCAPED = re.compile(r"\\(x[0-9a-f]{2}|.)", re.S)
_UNESCAPES = {"t": "\t", "n": "\n", "r": "\r", "N": "<NULL>"}


def _unescape(text: str) -> str:
    """Reference reading of ClickHouse's escaped text format (for the property test only)."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("x") and len(code) == 3:
            return chr(int(code[1:], 16))
        return _UNESCAPES.get(code, code)

    return _ESCAPED.sub(one, text)


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", "'plain'"),
        ("it's", "'it\\'s'"),
        ("back\\slash", "'back\\\\slash'"),
        ("\\'", "'\\\\\\''"),
        ("", "''"),
        ("new\nline", "'new\nline'"),
    ],
)
def test_string_literals(value: str, literal: str) -> None:
    assert quote_string_literal(value) == literal


@given(st.text())
def test_string_literal_never_ends_early(value: str) -> None:
    inner = quote_string_literal(value)[1:-1]
    # Every quote inside is escaped by an odd run of backslashes.
    for match in re.finditer(r"(\\*)'", inner):
        assert len(match.group(1)) % 2 == 1


def test_table_names() -> None:
    assert quote_table_name("events") == "`events`"
    assert quote_table_name("audit.events") == "`audit`.`events`"
    for bad in ["", "a.b.c", "events; DROP TABLE x", "1events", "ev`ents", "a..b", "ev ents"]:
        with pytest.raises(InvalidArgumentError):
            quote_table_name(bad)


def test_identifiers_escape_backticks() -> None:
    assert quote_identifier("weird`name\\") == "`weird\\`name\\\\`"
    with pytest.raises(InvalidArgumentError):
        quote_identifier("")


def test_settings_clause() -> None:
    assert settings_clause({}) == ""
    clause = settings_clause({"insert_deduplication_token": "it's", "max_threads": 2})
    assert clause == "SETTINGS insert_deduplication_token = 'it\\'s', max_threads = 2"
    with pytest.raises(InvalidArgumentError):
        settings_clause({"max_threads = 1, readonly": 0})
    for bad in (True, 1.5, None):
        with pytest.raises(InvalidArgumentError):
            setting_literal(bad)  # type: ignore[arg-type]


def test_insert_settings() -> None:
    assert insert_settings(None) == {"input_format_null_as_default": 0}
    assert insert_settings("t1")["insert_deduplication_token"] == "t1"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "\\N"),
        (42, "42"),
        (-(2**63), "-9223372036854775808"),
        (b"\x00\xff'", "\\x00\\xff\\x27"),
        ("tab\tnew\nline\rcr", "tab\\tnew\\nline\\rcr"),
        ("it's `x` \\", "it\\'s \\`x\\` \\\\"),
        ("\\N", "\\\\N"),  # the text \N, not NULL
    ],
)
def test_parameter_values(value: str | int | bytes | None, text: str) -> None:
    assert format_parameter(value) == text


@given(st.text())
def test_parameter_text_reads_back_as_itself(value: str) -> None:
    formatted = format_parameter(value)
    assert "\t" not in formatted and "\n" not in formatted  # would end the value early
    assert _unescape(formatted) == value


def test_parameters_are_checked() -> None:
    assert check_parameters(None) == {}
    assert check_parameters({"tenant": "t", "n": 1, "raw": b"x", "none": None}) == {
        "tenant": "t",
        "n": 1,
        "raw": b"x",
        "none": None,
    }
    for bad in ({"n": True}, {"n": 1.5}, {"n": ["a"]}, {"bad-name": 1}, {"": 1}):
        with pytest.raises(InvalidArgumentError):
            check_parameters(bad)


@pytest.mark.parametrize(
    ("sql", "keyword"),
    [
        ("SELECT 1", "SELECT"),
        ("  select 1", "SELECT"),
        ("-- note\nWITH x AS (SELECT 1) SELECT * FROM x", "WITH"),
        ("/* a */ ((SELECT 1))", "SELECT"),
        ("# hash comment\nshow tables", "SHOW"),
        ("/* SELECT */ DROP TABLE t", "DROP"),
        ("-- SELECT\nDROP TABLE t", "DROP"),
        ("", ""),
        ("   -- only a comment", ""),
    ],
)
def test_leading_keyword(sql: str, keyword: str) -> None:
    assert leading_keyword(sql) == keyword


@pytest.mark.parametrize(
    "sql", ["SELECT 1", "with 1 AS a SELECT a", "SHOW TABLES", "DESC t", "EXPLAIN SELECT 1"]
)
def test_read_only_statements_pass(sql: str) -> None:
    require_read_only_statement(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t VALUES (1)",
        "ALTER TABLE t DELETE WHERE 1",
        "DROP TABLE t",
        "/* SELECT */ DROP TABLE t",
        "SET readonly = 0",
        "",
        "SYSTEM FLUSH LOGS",
    ],
)
def test_other_statements_are_refused(sql: str) -> None:
    with pytest.raises(StoreError) as refused:
        require_read_only_statement(sql)
    assert refused.value.code == READONLY


def test_error_codes() -> None:
    assert error_code("Code: 60. DB::Exception: Unknown table") == 60
    assert error_code("Streaming insert finish failed: Code: 6. DB::Exception: x") == 6
    assert error_code("no code here") == 0


def test_arrow_stream_round_trip() -> None:
    table = pa.table(
        {"a": pa.array([1, 2], pa.uint64()), "h": pa.array([b"ab", b"cd"], pa.binary(2))}
    )
    assert pa.ipc.open_stream(arrow_stream_bytes(table)).read_all().equals(table)
