"""SQL text helpers shared by the ClickHouse backends and the HTTP front.

Pure functions, no I/O: quoting of identifiers, string literals and setting values;
formatting of ``{name:Type}`` query parameter values; the keyword gate of read-only mode;
the settings and Arrow encoding every insert uses; and reading ClickHouse's error code
out of an engine message.

Values reach SQL text through this module only where ClickHouse offers no binding
(table names, ``SETTINGS`` clauses); everything else goes through query parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pyarrow as pa

from authtrail.errors import InvalidArgumentError, StoreError

#: ClickHouse error codes this package raises or recognises by number.
SYNTAX_ERROR = 62
UNKNOWN_TABLE = 60
NOT_IMPLEMENTED = 48
READONLY = 164
UNKNOWN_SETTING = 115
AUTHENTICATION_FAILED = 516
ACCESS_DENIED = 497

#: Statements read-only mode lets through (first keyword, after comments and brackets).
READ_ONLY_STATEMENTS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"}
)

#: What a ``{name:Type}`` query parameter may be bound to, on both backends alike.
ParameterValue = str | int | bytes | None

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ERROR_CODE = re.compile(r"\bCode:\s*(\d+)")
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|#[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
# Characters that end or escape a value in ClickHouse's "escaped" text format, which is
# how the server parses ``param_<name>`` values; a raw tab or newline would cut it short.
_PARAMETER_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "'": "\\'", "`": "\\`"}


def is_identifier(name: str) -> bool:
    """True if ``name`` is a plain identifier: letters, digits and ``_``, not digit-first."""
    return _IDENTIFIER.fullmatch(name) is not None


def quote_identifier(name: str) -> str:
    """Backtick-quote any column name, escaping backslashes and backticks inside it.

    Raises InvalidArgumentError for an empty name.
    """
    if not name:
        raise InvalidArgumentError("an identifier cannot be empty")
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_table_name(table: str) -> str:
    """Quote ``table`` or ``database.table`` for SQL text.

    Requires each part to be a plain identifier (see :func:`is_identifier`): table names
    come from code, not users, so anything unusual is a bug and raises InvalidArgumentError.
    """
    parts = table.split(".")
    if len(parts) > 2 or not all(is_identifier(part) for part in parts):
        raise InvalidArgumentError(f"not a table name: {table!r} (expected table or db.table)")
    return ".".join(quote_identifier(part) for part in parts)


def quote_string_literal(value: str) -> str:
    """ClickHouse string literal for ``value``: single quotes, ``\\`` and ``'`` escaped.

    Inside a ClickHouse literal only an unescaped quote ends the string and a backslash
    starts an escape, so escaping those two is enough for any text, newlines included.
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def in_key_ranges(key: str, number: str, ranges: Sequence[tuple[str, int, int]]) -> tuple[str, str]:
    """A ``WITH`` item and a condition: ``key`` is one of the ranges' keys and ``number``
    lies within that key's ``(key, low, high)`` range, bounds included. ``ranges`` must not
    be empty; the query starts ``WITH <item>`` (it names the keys' array ``range_keys``).

    Each key's bounds are looked up by ``transform()`` over literal arrays (a hash lookup
    per row), not one ``key = … AND number BETWEEN …`` term per key: ClickHouse's analysis
    of an OR of a thousand terms cost ~0.5 CPU s a query, ~15 times this, and an OR of 100
    cost ~90 CPU ms where this costs 20-40 (a tile round, docs/PERFORMANCE.md). The IN
    keeps the primary key in use (it needs the keys spelled out: each is in the text twice).
    """
    keys = ", ".join(quote_string_literal(name) for name, _, _ in ranges)
    lows = ", ".join(str(int(low)) for _, low, _ in ranges)
    highs = ", ".join(str(int(high)) for _, _, high in ranges)
    condition = (
        f"{key} IN ({keys}) AND {number} BETWEEN "
        f"transform({key}, range_keys, [{lows}], toUInt64(0)) AND "
        f"transform({key}, range_keys, [{highs}], toUInt64(0))"
    )
    return f"[{keys}] AS range_keys", condition


def setting_literal(value: str | int) -> str:
    """The SQL form of a setting value: an integer as digits, anything else as a string literal.

    ClickHouse converts a quoted number to a numeric setting, so strings are safe for every
    setting type. Raises InvalidArgumentError for bools and other types (ambiguous).
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidArgumentError(f"setting values must be str or int, not {type(value).__name__}")
    return str(value) if isinstance(value, int) else quote_string_literal(value)


def settings_clause(settings: Mapping[str, str | int]) -> str:
    """``SETTINGS a = 1, b = 'x'`` for ``settings`` (empty string when there are none).

    Raises InvalidArgumentError if a name is not a plain identifier or a value not str/int.
    """
    if not settings:
        return ""
    for name in settings:
        if not is_identifier(name):
            raise InvalidArgumentError(f"not a setting name: {name!r}")
    return "SETTINGS " + ", ".join(f"{k} = {setting_literal(v)}" for k, v in settings.items())


def check_parameters(parameters: Mapping[str, object] | None) -> dict[str, ParameterValue]:
    """Validate query parameters for ``{name:Type}`` placeholders and return them as a dict.

    Requires identifier names and values of type str, int (not bool), bytes or None, the
    types both backends bind identically. Raises InvalidArgumentError otherwise.
    """
    checked: dict[str, ParameterValue] = {}
    for name, value in (parameters or {}).items():
        if not is_identifier(name):
            raise InvalidArgumentError(f"not a query parameter name: {name!r}")
        if isinstance(value, bool) or not isinstance(value, str | int | bytes | type(None)):
            raise InvalidArgumentError(
                f"query parameter {name!r} must be str, int, bytes or None, "
                f"not {type(value).__name__}"
            )
        checked[name] = value
    return checked


def format_parameter(value: ParameterValue) -> str:
    """``value`` in the escaped text form ClickHouse parses ``{name:Type}`` values from.

    None becomes ``\\N`` (NULL), bytes become ``\\xNN`` escapes, str has backslash, tab,
    newline, CR and quotes escaped; this matches what clickhouse-connect sends a server.
    """
    if value is None:
        return "\\N"
    if isinstance(value, bytes):
        return "".join(f"\\x{byte:02x}" for byte in value)
    if isinstance(value, int):
        return str(value)
    return "".join(_PARAMETER_ESCAPES.get(char, char) for char in value)


def leading_keyword(sql: str) -> str:
    """The first word of ``sql`` in upper case, skipping comments and opening brackets.

    Returns "" when the text holds no word at all.
    """
    noise = _LEADING_NOISE.match(sql)
    word = _FIRST_WORD.match(sql, noise.end() if noise else 0)
    return word.group(0).upper() if word else ""


def require_read_only_statement(sql: str) -> None:
    """Raise StoreError (code 164, READONLY) unless ``sql`` starts like a read-only statement.

    This is a first, lexical gate: it looks at the leading keyword only. The backends
    add the real guard (the engine's own classification or the server's ``readonly``).
    """
    keyword = leading_keyword(sql)
    if keyword not in READ_ONLY_STATEMENTS:
        allowed = "/".join(sorted(READ_ONLY_STATEMENTS))
        raise StoreError(
            f"read-only mode refuses {keyword or 'an empty'} statement (allowed: {allowed})",
            READONLY,
        )


def error_code(message: str) -> int:
    """ClickHouse's numeric error code from an engine message (``Code: 60. ...``), else 0."""
    match = _ERROR_CODE.search(message)
    return int(match.group(1)) if match else 0


def insert_settings(dedup_token: str | None) -> dict[str, str | int]:
    """The settings every Arrow insert runs with, on both backends.

    A NULL arriving for a non-Nullable column is an error instead of the column default
    (a stored default would look like real data). ``dedup_token`` makes a replayed insert
    add nothing where the table keeps a deduplication window.
    """
    settings: dict[str, str | int] = {"input_format_null_as_default": 0}
    if dedup_token is not None:
        settings["insert_deduplication_token"] = dedup_token
    return settings


def arrow_stream_bytes(data: pa.Table) -> bytes:
    """``data`` in the Arrow IPC stream format (ClickHouse's ``ArrowStream``)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write_table(data)
    return bytes(sink.getvalue().to_pybytes())
