"""Bare messages vs envelopes, side by side: ``python -m benchmarks.envelopes``.

Two drains (:func:`benchmarks.pipeline.drain`) of the same workload on fresh stacks, one
after the other in this run: the producer SDK sending one message per event, then packing
events into envelopes (``AuditProducer(envelope_bytes=...)``, schemas/event_envelope.avsc).
Everything else is the product as deployed: broker, ``authtrail worker``, the sink into
chdb. Reported per mode: sustained events/s end to end (stored rows), CPU µs per event of
worker, store host, broker and producer; then envelope ÷ bare ratios. The CPU other
processes used meanwhile is reported too: the machine may be shared (2 cores).

Writes JSON to ``--out`` (default ``benchmarks/results/envelopes.json``) and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from authtrail.producers.sdk.envelope import DEFAULT_ENVELOPE_BYTES
from benchmarks.machine import describe_machine
from benchmarks.pipeline import config_dict_of, drain
from benchmarks.procs import REPOSITORY_ROOT, load_average
from benchmarks.stack import AUTHTRAIL, Stack, StackConfig


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    window = result["window"]
    roles = window["roles"]
    producer = result["producer"]
    per_event = {role: roles[role]["cpu_us_per_event"] for role in ("worker", "store", "broker")
                 if role in roles}  # fmt: skip
    per_event["producer"] = round(1e6 * producer["cpu_seconds"] / result["events"], 2)
    return {
        "complete": result["complete"],
        "events_per_s": result["sustained_events_per_s"],
        "cpu_us_per_event": per_event,
        "other_processes_cores_used": window["other_processes_cores_used"],
        "lower_bound_from_tiny_run": window["lower_bound_from_tiny_run"],
    }


def _ratio(new: float | None, old: float | None) -> float | None:
    return round(new / old, 3) if new and old else None


def run(count: int, tenants: int, envelope_bytes: int, timeout: float) -> dict[str, Any]:
    """Drain ``count`` events of ``tenants`` tenants bare, then in envelopes."""
    modes: dict[str, Any] = {}
    for name, size in (("bare", 0), ("envelopes", envelope_bytes)):
        config = StackConfig(AUTHTRAIL, tenants, envelope_bytes=size, label=name)
        with (
            tempfile.TemporaryDirectory(prefix=f"bench-envelopes-{name}-") as directory,
            Stack(config, Path(directory)) as stack,
        ):
            load_before = load_average()
            result = drain(stack, count, timeout)
            result.pop("samples")
            modes[name] = {
                "config": config_dict_of(config),
                "load_average_before": load_before,
                "summary": _summary(result),
                "drain": result,
            }
    bare, packed = modes["bare"]["summary"], modes["envelopes"]["summary"]
    ratios = {
        "events_per_s": _ratio(packed["events_per_s"], bare["events_per_s"]),
        **{
            f"cpu_us_per_event.{role}": _ratio(
                packed["cpu_us_per_event"].get(role), bare["cpu_us_per_event"].get(role)
            )
            for role in bare["cpu_us_per_event"]
        },
    }
    return {"count": count, "tenants": tenants, "envelope_bytes": envelope_bytes,
            "modes": modes, "envelopes_over_bare": ratios}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    """The side-by-side table of :func:`run`'s result."""
    rows = ["| | bare | envelopes | envelopes ÷ bare |", "|---|---|---|---|"]
    bare = result["modes"]["bare"]["summary"]
    packed = result["modes"]["envelopes"]["summary"]
    ratios = result["envelopes_over_bare"]
    rows.append(f"| events/s end to end | {bare['events_per_s']} | {packed['events_per_s']} | "
                f"{ratios['events_per_s']} |")  # fmt: skip
    for role in bare["cpu_us_per_event"]:
        rows.append(
            f"| {role} CPU µs/event | {bare['cpu_us_per_event'][role]} | "
            f"{packed['cpu_us_per_event'].get(role)} | {ratios[f'cpu_us_per_event.{role}']} |"
        )
    rows.append(f"| other processes, cores | {bare['other_processes_cores_used']} | "
                f"{packed['other_processes_cores_used']} | |")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.envelopes")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--envelope-bytes", type=int, default=DEFAULT_ENVELOPE_BYTES)
    parser.add_argument("--timeout", type=float, default=600.0)
    default_out = REPOSITORY_ROOT / "benchmarks" / "results" / "envelopes.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    started = time.time()
    result = run(args.count, args.tenants, args.envelope_bytes, args.timeout)
    result["machine"] = describe_machine(REPOSITORY_ROOT)
    result["started_at"] = started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
