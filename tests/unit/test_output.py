"""Query results rendered for people and programs; bytes never break the output."""

from __future__ import annotations

import io
import json

import pyarrow as pa

from authtrail.cli.output import write_table


def _table() -> pa.Table:
    return pa.table(
        {
            "tenant_id": ["acme", None],
            "hash": pa.array([b"\x00\xff", b"\x01"], type=pa.binary()),
            "original": pa.array(["ok", "x"], type=pa.string()),
            "attributes": pa.array([[("k", "v")], []], type=pa.map_(pa.string(), pa.string())),
        }
    )


def test_json_lines_with_hex_bytes_and_maps() -> None:
    out = io.StringIO()
    write_table(_table(), "json", out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows[0] == {
        "tenant_id": "acme",
        "hash": "00ff",
        "original": "ok",
        "attributes": {"k": "v"},
    }
    assert rows[1]["tenant_id"] is None and rows[1]["attributes"] == {}


def test_table_and_csv() -> None:
    out = io.StringIO()
    write_table(_table(), "table", out)
    text = out.getvalue()
    assert text.splitlines()[0].split() == ["tenant_id", "hash", "original", "attributes"]
    assert "NULL" in text and text.rstrip().endswith("(2 rows)")
    out = io.StringIO()
    write_table(_table(), "csv", out)
    assert out.getvalue().splitlines()[1] == 'acme,00ff,ok,"{""k"": ""v""}"'


def test_invalid_utf8_in_a_string_column_is_shown_as_hex() -> None:
    raw = pa.array([b"\xc3\x01garbage"], type=pa.binary()).cast(pa.string(), safe=False)
    out = io.StringIO()
    write_table(pa.table({"original": raw}), "json", out)
    assert json.loads(out.getvalue()) == {"original": b"\xc3\x01garbage".hex()}


def test_progress_draws_only_when_enabled() -> None:
    from authtrail.cli.progress import Progress

    shown = io.StringIO()
    progress = Progress("verifying", stream=shown, enabled=True)
    progress.update(3, 3)
    progress.close()
    assert "[" + "#" * 30 + "] 3/3" in shown.getvalue() and shown.getvalue().endswith("\n")
    silent = io.StringIO()
    quiet = Progress("verifying", stream=silent)  # a StringIO is not a terminal
    quiet.update(1, 2)
    quiet.close()
    assert silent.getvalue() == ""
