"""Bulk leaf hashes for a whole batch against today's per-event path:
``python -m benchmarks.bulk_leaf``.

Issue 12 asks whether the worker's per-event decode, canonical leaf and leaf hash
(docs/INTEGRITY.md §2) get cheaper when done for a whole Faust batch at once in an engine.
One run measures, side by side, CPU µs per event (``time.process_time``: this process,
every thread, so chdb's threads count) at batch sizes ``--sizes``, best of ``--repeat``
rounds (each round runs every method, in a rotating order):

* ``per_event``: today's path: ``codec.decode`` (the compiled flat reader), ``canonical_leaf``,
  ``merkle.leaf_hash`` per event.
* ``chdb_leaf``: one Avro object container (the header fastavro writes for zero records,
  one block of the raw record bodies joined, no Python decode) written to a file and
  queried once with chdb: the project's own leaf expression
  (``authtrail.sinks.tables.leaf_hash_sql()``, the one ``verify`` runs) plus the columns the worker
  still needs (tenant_id, event_id, event_type, outcome, service, user_id, user_name,
  client_ip, occurred_at) as Arrow, converted to Python rows. Includes building and
  writing the container, the query and the conversion.
* ``chdb_lean``: the same with a shorter leaf expression (one lambda over an array of the
  fields, ~4x less SQL to analyse) and the guards a real bulk path needs so that a bad
  event cannot slip through or shift its neighbours: a per-row fence (16 random bytes
  appended to every body, checked per row: trailing or missing bytes in one body
  misalign it), UTF-8 validity of every string, no repeated map key. A guard that fires
  fails the query (the worker would fall back to the per-event path).
* ``chdb_decode``: chdb as a decoder only: every column to Python dicts, then
  ``canonical_leaf`` and ``leaf_hash`` in Python.
* ``fastavro_container``: fastavro's container ``reader`` over the same container, then
  ``canonical_leaf`` and ``leaf_hash``.
* ``per_event_decode_only`` (reference): today's ``codec.decode`` alone, what would be left
  per event if the leaf and its hash cost nothing.
* ``chdb_columns_only`` (reference): the chdb path's container, query and conversion of
  the needed columns without any leaf: the floor of any chdb variant.

The bulk rows stop at Python rows of the needed columns and the leaf hash: the real
worker would still build what admission, the detectors and the sealer read, so they are
lower bounds for a bulk worker path.

Before timing, every method's leaf hashes are compared with ``canonical_leaf`` on generated
demo traffic (``producers/traffic.py``) plus hand-made events (nulls, empty and unicode
map keys, unicode text, empty strings, sealed values: leaf v2, extreme integers); the
leaf bytes of both SQL expressions are compared too. Damaged bodies (repeated map key,
invalid UTF-8, an encoded surrogate, trailing and missing bytes) show what each bulk path
does with input the per-event path rejects or reads differently. The process's resident
memory before and after chdb is loaded and queried is reported.

JSON to ``--out`` (default ``benchmarks/results/bulk_leaf.json``), a summary on stdout.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fastavro

from authtrail.errors import AuthtrailError
from authtrail.producers.traffic import TrafficConfig, generate_events
from authtrail.schemas import AUTH_EVENT, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.sinks.avro_rows import RowsContainer
from authtrail.sinks.tables import canonical_leaf_sql, event_columns, leaf_hash_sql
from authtrail.stream.core.canonical import SEALED_PREFIX, canonical_leaf
from authtrail.stream.core.merkle import leaf_hash
from authtrail.stream.worker.app import codec
from benchmarks.machine import describe_machine
from benchmarks.procs import REPOSITORY_ROOT, load_average, rss_bytes

#: What the worker still needs per event besides the leaf hash (admission, detectors,
#: batching): occurred_at as integer microseconds.
NEEDED = ("tenant_id", "event_id", "event_type", "outcome", "service", "user_id",
          "user_name", "client_ip", "occurred_at")  # fmt: skip
_HEADER = 10  # Avro single-object header: marker and fingerprint

Row = tuple[Any, ...]
Method = Callable[[Sequence[bytes]], list[Row]]


def _rss_kib() -> int:
    return (rss_bytes(os.getpid()) or 0) // 1024


def _literal(data: bytes) -> str:
    return "'" + "".join(f"\\x{byte:02x}" for byte in data) + "'"


def _u32(expression: str) -> str:
    return f"reverse(reinterpretAsFixedString(toUInt32({expression})))"


def _structure(*, micros_as_int: bool) -> str:
    """The file() structure of the event: enums read as String, timestamps as DateTime64
    (what the project's leaf expression expects) or as plain Int64 microseconds."""
    parts = []
    for column in event_columns():
        kind = column.clickhouse_type.replace("LowCardinality(String)", "String")
        if micros_as_int and column.kind == "t":
            kind = "Nullable(Int64)" if column.nullable else "Int64"
        parts.append(f"`{column.name}` {kind}".replace("'", "\\'"))
    return ", ".join(parts)


def lean_leaf_sql() -> str:
    """The canonical leaf (v1 or v2) as one lambda over an array of every field's value:
    the same bytes as ``authtrail.sinks.tables.canonical_leaf_sql()`` with ~4x less SQL. Expects
    the fields as columns (timestamps as Int64) and ``__vs``, :func:`lean_values_sql`."""
    fields = sorted(event_columns(), key=lambda column: column.name.encode())
    labels = ", ".join(_literal(len(c.name).to_bytes(4, "big") + c.name.encode()) for c in fields)
    types = ", ".join("'m'" if c.kind == "m" else "'i'" if c.kind in "ti" else "'s'"
                      for c in fields)  # fmt: skip
    sealed = f"t = 's' AND startsWith(assumeNotNull(v), '{SEALED_PREFIX}')"
    magic = (f"if(arrayExists((t, v) -> {sealed}, [{types}], __vs), "
             "'authtrail-event-v2\\n', 'authtrail-event-v1\\n')")  # fmt: skip
    field = (
        f"if(isNull(v), '', concat(l, if({sealed}, 'c', t), "
        f"if(t = 'm', '', {_u32('length(assumeNotNull(v))')}), assumeNotNull(v)))"
    )
    return (f"concat({magic}, arrayStringConcat(arrayMap((l, t, v) -> {field}, "
            f"[{labels}], [{types}], __vs)))")  # fmt: skip


def lean_values_sql() -> str:
    """``__vs``: every field's value in leaf order as Nullable(String) (NULL: omitted)."""
    values = []
    for column in sorted(event_columns(), key=lambda column: column.name.encode()):
        name = f"`{column.name}`"
        if column.kind == "m":
            entries = (f"arrayStringConcat(arrayMap((k, v) -> concat({_u32('length(k)')}, k, "
                       f"{_u32('length(v)')}, v), mapKeys(mapSort({name})), "
                       f"mapValues(mapSort({name}))))")  # fmt: skip
            values.append(f"if(empty({name}), NULL, concat({_u32(f'length({name})')}, {entries}))")
        elif column.kind in "ti":
            values.append(f"toString({name})")
        else:
            values.append(name)
    return f"[{', '.join(values)}]"


def _guards_sql(fence: bytes) -> str:
    """Per-row checks that fail the query (the worker falls back to the per-event path)."""
    strings = [f"`{c.name}`" for c in event_columns() if c.kind == "s"]
    text = f"arrayStringConcat([{', '.join(f'ifNull({s}, {chr(39)}{chr(39)})' for s in strings)}"
    text += ", arrayStringConcat(mapKeys(`attributes`), '\\n'), "
    text += "arrayStringConcat(mapValues(`attributes`), '\\n')], '\\n')"
    return (
        f"throwIf(__fence != {_literal(fence)}, 'misframed body') + "
        f"throwIf(NOT isValidUTF8({text}), 'invalid UTF-8') + "
        "throwIf(length(mapKeys(`attributes`)) != length(arrayDistinct(mapKeys(`attributes`))),"
        " 'repeated map key')"
    )


class Bulk:
    """The bulk methods: containers of one batch's bodies, queried with chdb or fastavro."""

    def __init__(self, event_codec: SingleObjectCodec, scratch: Path) -> None:
        import chdb  # only here: the RSS figures show what loading it costs

        self._codec = event_codec
        self._path = scratch / "batch.avro"
        fields = load_schema(AUTH_EVENT)["fields"]
        self._plain = RowsContainer(fields)
        fence_type = {"type": "fixed", "name": "Fence", "size": 16}
        self._fenced = RowsContainer([*fields, {"name": "__fence", "type": fence_type}])
        self._fastavro = RowsContainer(_strip_logical(fields))
        self._fastavro_schema = fastavro.parse_schema(
            {
                "type": "record",
                "name": "Row",
                "namespace": "io.authtrail",
                "fields": _strip_logical(fields),
            }
        )
        self._conn = chdb.connect(":memory:")
        needed = ", ".join(f"`{name}`" for name in NEEDED[:-1])
        source = f"file('{self._path}', 'Avro', '{_structure(micros_as_int=False)}')"
        self.leaf_sql = (
            f"SELECT {needed}, toUnixTimestamp64Micro(`occurred_at`), {leaf_hash_sql()} AS __hash "
            f"FROM {source} SETTINGS max_threads = 1"
        )
        self.columns_sql = (
            f"SELECT {needed}, toUnixTimestamp64Micro(`occurred_at`) "
            f"FROM {source} SETTINGS max_threads = 1"
        )
        int_structure = _structure(micros_as_int=True) + ", `__fence` FixedString(16)"
        fenced = f"file('{self._path}', 'Avro', '{int_structure}')"
        self._lean_template = (
            f"SELECT {needed}, `occurred_at`, "
            f"SHA256(concat(unhex('00'), {lean_leaf_sql()})) AS __hash, {{guards}} AS __guard "
            f"FROM (SELECT *, {lean_values_sql()} AS __vs FROM {fenced}) "
            "SETTINGS max_threads = 1"
        )
        self.lean_leaf_bytes_sql = (
            f"SELECT {lean_leaf_sql()} AS __leaf "
            f"FROM (SELECT *, {lean_values_sql()} AS __vs FROM {fenced})"
        )
        self.leaf_bytes_sql = f"SELECT {canonical_leaf_sql()} AS __leaf FROM {source}"
        names = [column.name for column in event_columns()]
        self._names = names
        self.decode_sql = (
            f"SELECT {', '.join(f'`{n}`' for n in names)} FROM "
            f"file('{self._path}', 'Avro', '{_structure(micros_as_int=True)}') "
            "SETTINGS max_threads = 1"
        )

    # -- building the container ------------------------------------------------------

    def _bodies(self, values: Sequence[bytes]) -> list[bytes | memoryview]:
        bodies: list[bytes | memoryview] = []
        for value in values:
            body = self._codec.current_body(value)
            if body is None:  # an older writer: a real bulk path sends it per event
                raise ValueError("not in the reader schema")
            bodies.append(body)
        return bodies

    def _write(self, data: bytes) -> None:
        with open(self._path, "wb") as out:
            out.write(data)

    def _arrow(self, sql: str) -> Any:
        import pyarrow as pa

        try:
            result = self._conn.query(sql, "Arrow")
        except Exception:
            # chdb 4.4: the query after a failed one returns a broken Arrow file
            # ("Unexpected empty message in IPC file format"); a throwaway query absorbs it.
            self._conn.query("SELECT 1", "Arrow")
            raise
        return pa.ipc.open_file(pa.py_buffer(result.bytes())).read_all()

    # -- the methods -------------------------------------------------------------------

    def chdb_leaf(self, values: Sequence[bytes]) -> list[Row]:
        self._write(self._plain.container([self._plain.block(self._bodies(values), b"")]))
        table = self._arrow(self.leaf_sql)
        return list(zip(*(column.to_pylist() for column in table.columns), strict=True))

    def chdb_columns_only(self, values: Sequence[bytes]) -> list[Row]:
        """Reference: the needed columns without any leaf (the floor of a chdb path)."""
        self._write(self._plain.container([self._plain.block(self._bodies(values), b"")]))
        table = self._arrow(self.columns_sql)
        return list(zip(*(column.to_pylist() for column in table.columns), strict=True))

    def chdb_lean(self, values: Sequence[bytes]) -> list[Row]:
        fence = secrets.token_bytes(16)
        block = self._fenced.block(self._bodies(values), fence)
        self._write(self._fenced.container([block]))
        table = self._arrow(self._lean_template.format(guards=_guards_sql(fence)))
        columns = [column.to_pylist() for column in table.columns[:-1]]  # not the guards
        return list(zip(*columns, strict=True))

    def chdb_decode(self, values: Sequence[bytes]) -> list[Row]:
        self._write(self._plain.container([self._plain.block(self._bodies(values), b"")]))
        table = self._arrow(self.decode_sql)
        columns = [column.to_pylist() for column in table.columns]
        names = self._names
        attributes = names.index("attributes")
        rows = []
        for values_of_row in zip(*columns, strict=True):
            event = dict(zip(names, values_of_row, strict=True))
            event["attributes"] = dict(values_of_row[attributes])
            rows.append(_needed(event, leaf_hash(canonical_leaf(event))))
        return rows

    def fastavro_container(self, values: Sequence[bytes]) -> list[Row]:
        data = self._fastavro.container([self._fastavro.block(self._bodies(values), b"")])
        reader = fastavro.reader(io.BytesIO(data), reader_schema=self._fastavro_schema)
        return [_needed(event, leaf_hash(canonical_leaf(event))) for event in reader]

    def leaf_bytes(self, values: Sequence[bytes], *, lean: bool) -> list[bytes]:
        """The leaves themselves (not hashed) from one of the two SQL expressions."""
        import pyarrow as pa

        if lean:
            block = self._fenced.block(self._bodies(values), b"\0" * 16)
            self._write(self._fenced.container([block]))
            table = self._arrow(self.lean_leaf_bytes_sql)
        else:
            self._write(self._plain.container([self._plain.block(self._bodies(values), b"")]))
            table = self._arrow(self.leaf_bytes_sql)
        return table.column(0).cast(pa.binary()).to_pylist()  # type: ignore[no-any-return]


def _strip_logical(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k not in ("logicalType", "doc")}
    if isinstance(node, list):
        return [_strip_logical(item) for item in node]
    return node


def _needed(event: dict[str, Any], hashed: bytes) -> Row:
    return (*(event[name] for name in NEEDED), hashed)


def per_event(event_codec: SingleObjectCodec) -> Method:
    decode = event_codec.decode

    def run(values: Sequence[bytes]) -> list[Row]:
        rows = []
        for value in values:
            event = decode(value)
            rows.append(_needed(event, leaf_hash(canonical_leaf(event))))
        return rows

    return run


def decode_only(event_codec: SingleObjectCodec) -> Method:
    """Reference, not a method: today's decode alone, no leaf (what a free leaf leaves)."""
    decode = event_codec.decode

    def run(values: Sequence[bytes]) -> list[Row]:
        return [_needed(decode(value), b"") for value in values]

    return run


# -- inputs ------------------------------------------------------------------------------


def _sealed_text(rng_bytes: Callable[[int], bytes]) -> str:
    b64 = base64.b64encode
    return (f"{SEALED_PREFIX}{rng_bytes(16).hex()}:{b64(rng_bytes(12)).decode()}:"
            f"{b64(rng_bytes(40)).decode()}")  # fmt: skip


def special_events(start_us: int) -> list[dict[str, Any]]:
    """Hand-made events for the byte-identity check (docs/INTEGRITY.md §2 and §2.1)."""
    base = {"tenant_id": "acme", "event_type": "LOGIN", "outcome": "SUCCESS",
            "occurred_at": start_us}  # fmt: skip
    token = secrets.token_bytes
    cases: list[dict[str, Any]] = [
        {**base},  # required fields only: every other one null, attributes {}
        {**base, "user_name": "Zoë Ünïcødé 山田太郎 🙂", "message": "e\u0301 \u00e9 \u2028 \x00"},
        {**base, "attributes": {"b": "2", "a": "é", "Z": "x", "é": "y", "aa": "", "": "k"}},
        {**base, "attributes": {"ü": "1", "u\u0308": "2", "🙂": "3", "a" * 300: "z" * 70_000}},
        {**base, "message": "", "user_id": "", "host": " "},
        {**base, "user_name": _sealed_text(token)},  # leaf v2
        {
            **base,
            "user_name": _sealed_text(token),
            "user_id": _sealed_text(token),
            "client_ip": "192.0.2.1",
            "event_type_other": _sealed_text(token),
        },
        {**base, "attributes": {"note": _sealed_text(token)}},  # a map entry: stays v1
        {**base, "message": SEALED_PREFIX},  # just the prefix: sealed by the rule
        {**base, "message": " " + SEALED_PREFIX},  # not at the start: v1
        {**base, "received_at": 0},
        {**base, "received_at": -1},
        {**base, "occurred_at": 2**62, "received_at": -(2**63)},
        {**base, "occurred_at": 2**63 - 1},
        {**base, "event_type": "OTHER", "event_type_other": "x" * 10_000, "outcome": "UNKNOWN"},
    ]
    for number, case in enumerate(cases):
        case["event_id"] = f"special-{number}"
    return cases


def traffic(count: int, tenants: int) -> list[dict[str, Any]]:
    config = TrafficConfig(tenants=tenants, users=20 * tenants, burst_every=400,
                           start_us=time.time_ns() // 1000 - 3_600_000_000)  # fmt: skip
    return list(itertools.islice(generate_events(config, 1), count))


def damaged(event_codec: SingleObjectCodec) -> dict[str, bytes]:
    """Single-object values the per-event path rejects or reads differently from the
    engine: each made from a valid event by changing bytes of its body."""
    event = {"event_id": "damaged", "tenant_id": "acme", "event_type": "LOGIN",
             "outcome": "FAILURE", "occurred_at": 1_767_225_600_000_000,
             "user_name": "QQQQ", "host": "HHHH", "attributes": {"k1": "v", "k2": "w"}}  # fmt: skip
    good = event_codec.encode(event)
    other = event_codec.encode({**event, "event_id": "smuggled", "user_name": "mallory"})
    return {
        "repeated map key": good.replace(b"k2", b"k1"),
        # in a field the worker does not read back (host) and in one it does (user_name)
        "invalid UTF-8 (host)": good.replace(b"HHHH", b"\xff\xfeHH"),
        "invalid UTF-8 (user_name)": good.replace(b"QQQQ", b"\xff\xfeQQ"),
        "UTF-8 encoded surrogate (host)": good.replace(b"HHHH", b"\xed\xa0\x80H"),
        "trailing byte": good + b"\x00",
        "a second body appended": good + other[_HEADER:],
        "missing last byte": good[:-1],
    }


# -- the check and the measurement -----------------------------------------------------


def _per_event_outcome(event_codec: SingleObjectCodec, value: bytes) -> str:
    try:
        event = event_codec.decode(value)
        return "leaf " + leaf_hash(canonical_leaf(event)).hex()[:16]
    except AuthtrailError as exc:
        return f"rejected ({type(exc).__name__})"


def identity(bulk: Bulk, event_codec: SingleObjectCodec, values: list[bytes],
             methods: dict[str, Method]) -> dict[str, Any]:  # fmt: skip
    """Every bulk method's rows against the per-event path's; leaf bytes of both SQL
    expressions against canonical_leaf; what each does with damaged bodies."""
    neighbours = values[:4]
    damage: dict[str, Any] = {}
    for case, bad in damaged(event_codec).items():
        batch = [*neighbours, bad, *neighbours]
        expected = methods["per_event"](neighbours)
        outcome: dict[str, Any] = {"per_event": _per_event_outcome(event_codec, bad)}
        for name in ("chdb_leaf", "chdb_lean", "chdb_decode", "fastavro_container"):
            try:
                rows = methods[name](batch)
            except Exception as exc:  # what the engine says, shortened
                outcome[name] = f"fails: {str(exc).splitlines()[0][:100]}"
                continue
            if len(rows) != len(batch):
                outcome[name] = f"{len(rows)} rows for {len(batch)} bodies"
                continue
            good = rows[:4] == expected and rows[5:] == expected
            outcome[name] = ("neighbours intact" if good else "NEIGHBOURS CHANGED") + (
                f", bad one: leaf {rows[4][-1].hex()[:16]}"
            )
        damage[case] = outcome
    expected_rows = methods["per_event"](values)
    leaves = [canonical_leaf(event_codec.decode(value)) for value in values]
    result: dict[str, Any] = {"events": len(values)}
    for name, method in methods.items():
        rows = method(values)
        result[name] = sum(a == b for a, b in zip(rows, expected_rows, strict=True))
    for lean in (False, True):
        got = bulk.leaf_bytes(values, lean=lean)
        key = "lean_leaf_bytes" if lean else "project_leaf_bytes"
        result[key] = sum(a == b for a, b in zip(got, leaves, strict=True))
    result["damaged"] = damage
    return result


def measure(methods: dict[str, Method], values: list[bytes], sizes: Sequence[int],
            repeat: int) -> dict[str, Any]:  # fmt: skip
    runs: dict[str, dict[str, list[float]]] = {str(size): {} for size in sizes}
    names = list(methods)
    for attempt in range(repeat):
        order = names[attempt % len(names) :] + names[: attempt % len(names)]
        for size in sizes:
            batches = [values[first : first + size] for first in range(0, len(values), size)]
            batches = [batch for batch in batches if len(batch) == size]
            count = size * len(batches)
            for name in order:
                method = methods[name]
                started = time.process_time()
                for batch in batches:
                    method(batch)
                cpu = time.process_time() - started
                runs[str(size)].setdefault(name, []).append(round(1e6 * cpu / count, 2))
    best = {size: {name: min(values) for name, values in by_method.items()}
            for size, by_method in runs.items()}  # fmt: skip
    return {"best_us_per_event": best, "runs_us_per_event": runs}


def run(count: int, tenants: int, sizes: Sequence[int], repeat: int) -> dict[str, Any]:
    event_codec = codec(AUTH_EVENT)
    events = traffic(count, tenants)
    values = [event_codec.encode(event) for event in events]
    checked = values[:5000] + [
        event_codec.encode(event) for event in special_events(events[0]["occurred_at"])
    ]
    rss: dict[str, int] = {"before_chdb_kib": _rss_kib()}
    with tempfile.TemporaryDirectory(prefix="bulk-leaf-", dir=_scratch_parent()) as scratch:
        bulk = Bulk(event_codec, Path(scratch))
        rss["chdb_loaded_kib"] = _rss_kib()
        methods: dict[str, Method] = {
            "per_event": per_event(event_codec),
            "chdb_leaf": bulk.chdb_leaf,
            "chdb_lean": bulk.chdb_lean,
            "chdb_decode": bulk.chdb_decode,
            "fastavro_container": bulk.fastavro_container,
        }
        checks = identity(bulk, event_codec, checked, methods)
        methods["per_event_decode_only"] = decode_only(event_codec)
        methods["chdb_columns_only"] = bulk.chdb_columns_only
        for size in sizes:
            bulk.chdb_lean(values[:size])
        rss["after_queries_kib"] = _rss_kib()
        timings = measure(methods, values, sizes, repeat)
        rss["after_measurement_kib"] = _rss_kib()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": describe_machine(REPOSITORY_ROOT),
        "load_average": load_average(),
        "events": count,
        "tenants": tenants,
        "sizes": list(sizes),
        "repeat": repeat,
        "identity": checks,
        "rss": rss,
        **timings,
    }


def _scratch_parent() -> str | None:
    # A tmpfs like the worker would use: the container never touches a disk.
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def summary(result: dict[str, Any]) -> str:
    best = result["best_us_per_event"]
    names = list(next(iter(best.values())))
    lines = ["| CPU µs per event | " + " | ".join(f"batch {s}" for s in best) + " |",
             "|---|" + "---|" * len(best)]  # fmt: skip
    for name in names:
        cells = [f"{best[size][name]:.1f}" for size in best]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    checks = result["identity"]
    lines.append("")
    lines.append(f"identity over {checks['events']} events (rows equal to per_event): " + ", ".join(
        f"{name} {checks[name]}"
        for name in (*names, "project_leaf_bytes", "lean_leaf_bytes") if name in checks
    ))  # fmt: skip
    for case, outcome in checks["damaged"].items():
        lines.append(f"- {case}: " + "; ".join(f"{k}: {v}" for k, v in outcome.items()))
    rss = result["rss"]
    lines.append("")
    lines.append(
        f"RSS: {rss['before_chdb_kib'] // 1024} MiB before chdb, "
        f"{rss['chdb_loaded_kib'] // 1024} MiB loaded, "
        f"{rss['after_queries_kib'] // 1024} MiB after queries of {max(result['sizes'])}, "
        f"{rss['after_measurement_kib'] // 1024} MiB after the measurement"
    )
    lines.append(f"load average {result['load_average']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 10_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bulk_leaf.json"))
    args = parser.parse_args(argv)
    result = run(args.count, args.tenants, args.sizes, args.repeat)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
