"""Markdown pieces of the summary: number formatting, tables, one function per section.

Each section function takes the results dict (or the derived numbers of
:mod:`benchmarks.analysis`) and returns Markdown lines; :mod:`benchmarks.report` puts
them in order.
"""

from __future__ import annotations

from typing import Any

from authtrail.stream.core.sequencer import DEDUP_WINDOW


def number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if digits or abs(value) >= 10 else f"{value:,.2f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(number(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


LATENCY_COLUMNS = (
    ("stack", "stack"),
    ("offered/s", "offered_events_per_s"),
    ("of max", "fraction"),
    ("basis", "basis"),
    ("achieved/s", "achieved_events_per_s"),
    ("settled after s", "settle_seconds"),
    ("sequenced p50", "sequenced_p50_ms"),
    ("sequenced p99", "sequenced_p99_ms"),
    ("queryable p50", "p50_ms"),
    ("p95", "p95_ms"),
    ("p99", "p99_ms"),
    ("signed p50", "signed_p50_ms"),
    ("signed p99", "signed_p99_ms"),
)


def columns_table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...]) -> list[str]:
    return table(
        [title for title, _ in columns], [[row.get(key) for _, key in columns] for row in rows]
    )


def experiments(derived: dict[str, Any]) -> list[str]:
    rows = []
    for item in derived.get("experiments") or []:
        roles, base = item.get("roles") or {}, item.get("base_roles") or {}
        for role in sorted(set(roles) - {"harness"}):
            rows.append(
                [
                    item["stack"],
                    " ".join(f"{k}={v}" for k, v in item["environment"].items()),
                    role,
                    (base.get(role) or {}).get("cpu_us_per_event"),
                    roles[role].get("cpu_us_per_event"),
                    item["base_events_per_s"],
                    item["events_per_s"],
                ]
            )
    if not rows:
        return []
    return [
        "## Experiments: settings tried without code changes",
        "",
        *table(
            [
                "stack",
                "worker environment",
                "process",
                "base CPU µs/event",
                "CPU µs/event",
                "base events/s",
                "events/s",
            ],
            rows,
        ),
    ]


def worker_memory(results: dict[str, Any]) -> list[str]:
    """The worker's RSS over event time without a broker (benchmarks/worker_memory.py)."""
    memory = (results.get("costs") or {}).get("worker_memory")
    if not memory:
        return []
    by_minute = ", ".join(f"{mb:,.0f}" for mb in memory["rss_mb_by_minute"])
    return [
        f"Worker RSS over {memory['minutes']:g} minutes of event time at "
        f"{memory['rate']:,.0f} events/s, {memory['tenants']} tenants, without a broker "
        f"({memory['decisions']:,} decisions, read back as input): MB at each minute "
        f"{by_minute} (the process also holds the whole load, built before the first "
        f"minute). Growth after the detectors' windows ({memory['windows_minutes']} min): "
        f"{memory['growth_after_windows_mb_per_min']} MB/min.",
        "",
    ]


def state_memory(results: dict[str, Any]) -> list[str]:
    model = ((results.get("costs") or {}).get("memory") or {}).get("by_tenants") or []
    if not model:
        return []
    rows = [
        [
            m["tenants"],
            m["bytes_per_tenant"],
            m["bytes_per_remembered_id"],
            round(
                (m["tenants"] * m["bytes_per_tenant"] + DEDUP_WINDOW * m["bytes_per_remembered_id"])
                / 2**20
            ),
        ]
        for m in model
    ]
    return [
        f"Sequencer state (tracemalloc): the dedup window keeps up to {DEDUP_WINDOW:,} event "
        "ids per partition, whatever the number of tenants; a partition's memory grows until "
        "it is full, then stays flat.",
        "",
        *table(
            [
                "tenants",
                "bytes per tenant",
                "bytes per remembered id",
                "MB per partition, window full",
            ],
            rows,
        ),
    ]


def restarts(results: dict[str, Any]) -> list[str]:
    """The restart phases: a worker killed after the soak, and its replacement's recovery."""
    rows = [
        [name, restart["records"], restart["recovery_seconds"], restart["restart_seconds"],
         restart["replay_records_per_s"], restart["replay_vs_drain"],
         max((p["snapshot_bytes"] or 0 for p in restart["partitions"]), default=0) / 2**20]
        for name, stack in results.get("stacks", {}).items()
        if (restart := stack.get("restart"))
    ]  # fmt: skip
    if not rows:
        return []
    return [
        "## Restart under load (worker killed after the soak)",
        "",
        *table(
            [
                "stack",
                "records replayed",
                "recovery s",
                "kill → recovered s",
                "replay records/s",
                "÷ drain rate",
                "largest snapshot MB",
            ],
            rows,
        ),
        "*recovery*: the slowest partition (they recover side by side: load the newest "
        "snapshot, replay the chained records after it); *kill → recovered* adds process "
        "start and joining the consumer group.",
        "",
    ]


def machine(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    memory = machine.get("memory_bytes") or 0
    return [
        f"- date: {machine['date']} (run took {results.get('seconds', 0):,.0f} s, "
        f"configuration `{results['parameters']['name']}`)",
        f"- machine: {machine['cores']} cores, {machine['cpu_model']}, "
        f"{memory / 2**30:.0f} GiB, flags {', '.join(machine['cpu_flags']) or 'none'}",
        f"- platform: {machine['platform']}; commit {machine.get('git_commit')}",
        f"- versions: {versions}",
        f"- load average before / after: {results.get('load_average_before')} / "
        f"{results.get('load_average_after')}",
        "",
    ]


def interference(results: dict[str, Any]) -> list[str]:
    """Say when other processes used the cores during a measurement window."""
    busy = []
    for name, stack in results.get("stacks", {}).items():
        for label, phase in [
            ("drain", stack.get("drain")),
            *[(f"live {p.get('fraction')}", p) for p in stack.get("live", [])],
        ]:
            others = ((phase or {}).get("window") or {}).get("other_processes_cores_used")
            if others and others > 0.2:
                busy.append(f"{name} {label}: {others:.2f} cores")
    if not busy:
        return []
    return [
        "**Shared machine:** other processes used CPU during these windows, so those "
        "numbers are low by up to that share of 2 cores: " + "; ".join(busy) + ".",
        "",
    ]


def components(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, stack in results.get("stacks", {}).items():
        window = (stack.get("drain") or {}).get("window") or {}
        for role, values in sorted((window.get("roles") or {}).items()):
            if role == "harness":
                continue
            rows.append(
                [
                    name,
                    role,
                    values.get("cpu_us_per_event"),
                    values.get("cores_used"),
                    values.get("ceiling_events_per_s_one_core"),
                ]
            )
    return table(
        ["stack", "process", "CPU µs/event", "cores used", "events/s if alone on 1 core"], rows
    )


def limits(results: dict[str, Any]) -> list[str]:
    limits = results.get("limits") or {}
    sha = (limits.get("sha256") or {}).get("hashes_per_s", {})
    avro = limits.get("avro") or {}
    insert = limits.get("clickhouse_insert") or {}
    kafka = limits.get("kafka") or {}
    rows = [
        ["SHA-256, 65 B Merkle node", sha.get("node_65B"), "per CPU-second"],
        ["SHA-256, 300 B", sha.get("input_300B"), "per CPU-second"],
        ["SHA-256, 600 B canonical leaf", sha.get("leaf_600B"), "per CPU-second"],
        [
            "Avro decode (fastavro, auth event)",
            avro.get("fastavro_decodes_per_s"),
            "per CPU-second",
        ],
        [
            "Avro encode (fastavro, auth event)",
            avro.get("fastavro_encodes_per_s"),
            "per CPU-second",
        ],
        ["codec decode (framing + checks)", avro.get("codec_decodes_per_s"), "per CPU-second"],
        ["codec encode (framing + checks)", avro.get("codec_encodes_per_s"), "per CPU-second"],
        [
            "chained record decode / encode",
            f"{number(avro.get('chained_decodes_per_s'))} / "
            f"{number(avro.get('chained_encodes_per_s'))}",
            "per CPU-second",
        ],
        [
            "ClickHouse (chdb) Arrow insert, events rows",
            insert.get("insert_rows_per_s"),
            f"rows/s, batches of {number(insert.get('batch_rows'))}",
        ],
        [
            "Arrow table from row dicts (pa.Table.from_pylist)",
            insert.get("arrow_build_rows_per_s"),
            "per CPU-second",
        ],
        ["Kafka raw produce (confluent-kafka → tansu)", kafka.get("raw_produce_per_s"), "msgs/s"],
        ["Kafka raw consume (tansu → confluent-kafka)", kafka.get("raw_consume_per_s"), "msgs/s"],
    ]
    for variant, floor in (kafka.get("faust_floor") or {}).items():
        loop, _, runs = variant.partition("+")
        what = ("records in runs (the worker's consumer)" if runs
                else "a Faust message per record (bare messages before runs)")  # fmt: skip
        rows.append([f"Faust agent doing nothing, {loop} event loop, {what}",
                     floor.get("messages_per_cpu_s"), "records per CPU-second"])  # fmt: skip
    return table(["what", "measured", "unit"], rows)


def producer(results: dict[str, Any]) -> list[str]:
    """Producer SDK events/s per core: isolated, and as the loader of each drain."""
    kafka = (results.get("limits") or {}).get("kafka") or {}
    rows = []
    for key, label in (
        ("sdk", "AuditProducer, default settings"),
        ("sdk_uncompressed", "AuditProducer, compression none"),
    ):
        sdk = kafka.get(key) or {}
        if sdk:
            rows.append(
                [
                    label,
                    sdk.get("compression"),
                    sdk.get("send_per_s"),
                    sdk.get("send_per_cpu_s"),
                    sdk.get("delivered_per_s"),
                ]
            )
    for name, stack in results.get("stacks", {}).items():
        producer = (stack.get("drain") or {}).get("producer") or {}
        if producer.get("send_cpu_seconds"):
            rows.append(
                [
                    f"loader of {name} ({stack['config']['tenants']} tenants)",
                    producer.get("compression"),
                    round(producer["sent"] / producer["send_seconds"]),
                    round(producer["sent"] / producer["send_cpu_seconds"]),
                    round(producer["sent"] / producer["seconds"]),
                ]
            )
    return table(
        [
            "producer",
            "compression",
            "send() events/s",
            "events per CPU-second",
            "acknowledged events/s",
        ],
        rows,
    )


def costs(results: dict[str, Any]) -> list[str]:
    costs = results.get("costs") or {}
    signatures = costs.get("signatures") or {}
    lines = table(
        ["operation", "per CPU-second"],
        [
            ["Ed25519 sign (raw)", signatures.get("ed25519_signs_per_s")],
            ["Ed25519 verify (raw)", signatures.get("ed25519_verifies_per_s")],
            [
                "checkpoint close + sign (Sequencer.close_batch)",
                signatures.get("checkpoints_closed_and_signed_per_s"),
            ],
            [
                "checkpoint open + verify (open_checkpoint)",
                signatures.get("checkpoints_opened_and_verified_per_s"),
            ],
        ],
    )
    batches = (costs.get("batch_sizes") or {}).get("by_batch_size") or []
    lines += table(
        [
            "batch size",
            "sequencer µs/event (incl. signing)",
            "events per CPU-second",
            "checkpoints",
        ],
        [
            [b["batch_size"], b["us_per_event"], b["events_per_s"], b["checkpoints"]]
            for b in batches
        ],
    )
    for core in costs.get("integrity_core") or []:
        steps = core["us_per_event"]
        sink = core["sink"]["us_per_event"]
        lines.append(
            f"Integrity core without Kafka/Faust, {core['tenants']} tenants: "
            + ", ".join(f"{k} {v} µs" for k, v in steps.items())
            + f" → ≤ {number(core['ceiling_events_per_s_one_core'])} events/s per core. "
            + "Sink before insert: "
            + ", ".join(f"{k} {v} µs" for k, v in sink.items())
            + f" → ≤ {number(core['sink']['ceiling_events_per_s_one_core'])} events/s per core."
        )
        lines.append("")
    return lines


def profiles(results: dict[str, Any]) -> list[str]:
    lines = []
    sources = [
        (f"{name} {role}", profile)
        for name, stack in results.get("stacks", {}).items()
        for role, profile in (stack.get("profile") or {}).items()
    ]
    sources += [
        (f"verify {run['rows']:,} rows", run["profile"])
        for run in results.get("verify", [])
        if run.get("profile")
    ]
    for label, profile in sources:
        top = ", ".join(
            f"{item['function']} {item['share']:.0%}" for item in (profile.get("self") or [])[:8]
        )
        lines.append(f"- **{label}** ({profile.get('samples', 0)} samples), self time: {top}")
    return [*lines, ""] if lines else []
