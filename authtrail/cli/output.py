"""Render Arrow query results for people (an aligned table) or programs (CSV, JSON lines)."""

from __future__ import annotations

import csv
import json
from typing import Any, TextIO

import pyarrow as pa

_MAX_WIDTH = 60


def _cell(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):  # Map columns arrive as [(key, value), ...]
        return (
            {str(k): _cell(v) for k, v in value}
            if all(isinstance(item, tuple) and len(item) == 2 for item in value)
            else [_cell(item) for item in value]
        )
    if value is None or isinstance(value, int | float | str | bool):
        return value
    return str(value)


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """The table as JSON-ready dicts: bytes as hex, maps as objects, times as ISO text.

    A ClickHouse String may hold any bytes (the ``rejected`` table keeps undecodable
    input as it came); a column that is not valid UTF-8 is shown as hex.
    """
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            columns[name] = column.to_pylist()
        except UnicodeDecodeError:
            columns[name] = column.cast(pa.binary()).to_pylist()
    return [
        {name: _cell(values[index]) for name, values in columns.items()}
        for index in range(table.num_rows)
    ]


def write_table(table: pa.Table, output_format: str, out: TextIO) -> None:
    """Write ``table`` as ``table`` (aligned text), ``csv`` or ``json`` (one object per line)."""
    data = rows(table)
    if output_format == "json":
        for row in data:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    if output_format == "csv":
        writer = csv.writer(out)
        writer.writerow(table.column_names)
        for row in data:
            writer.writerow([_text(row[name]) for name in table.column_names])
        return
    texts = [[_text(row[name])[:_MAX_WIDTH] for name in table.column_names] for row in data]
    widths = [
        max([len(name), *(len(line[i]) for line in texts)])
        for i, name in enumerate(table.column_names)
    ]
    out.write("  ".join(n.ljust(w) for n, w in zip(table.column_names, widths, strict=True)) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for line in texts:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")
    out.write(f"({len(texts)} rows)\n")


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
