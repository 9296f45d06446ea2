"""PNG plots of a run, when matplotlib is installed (it is optional: ``pip install matplotlib``).

throughput over time (every drain), latency distribution (every live phase), cost vs log
size (verify time by stored rows; sequencer cost by batch size), RSS over the soak.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _rates(samples: list[dict[str, Any]], span: float = 3.0) -> tuple[list[float], list[float]]:
    """Stored rows per second over windows of ``span`` seconds (inserts land in steps)."""
    times, rates = [], []
    start = 0
    for index, sample in enumerate(samples):
        if sample["t"] - samples[start]["t"] >= span:
            first = samples[start]
            times.append(sample["t"])
            rates.append((sample["stored"] - first["stored"]) / (sample["t"] - first["t"]))
            start = index
    return times, rates


def write_plots(results: dict[str, Any], out_dir: Path) -> tuple[list[Path], str]:
    """Write the PNGs; return their paths and a note for the summary."""
    if not available():
        return [], "matplotlib is not installed, so no PNGs were drawn (pip install matplotlib)."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    stacks = {name: stack for name, stack in results.get("stacks", {}).items()}

    figure, axes = plt.subplots(figsize=(9, 5))
    for name, stack in stacks.items():
        samples = (stack.get("drain") or {}).get("samples") or []
        if samples and not stack.get("profiled"):
            axes.plot(*_rates(samples), label=name)
    axes.set(
        xlabel="seconds since the consumers started",
        ylabel="rows stored per second",
        title="Throughput over time (drain of a backlog)",
    )
    # authtrail and the baseline differ by more than 10x: a linear axis hides one of them.
    axes.set_yscale("symlog", linthresh=100)
    axes.legend(fontsize="small")
    written.append(_save(figure, out_dir / "throughput_over_time.png"))

    figure, axes = plt.subplots(figsize=(9, 5))
    levels = [index for index in range(1, 100)] + [99.9]
    for name, stack in stacks.items():
        for phase in stack.get("live", []):
            for key, style in (("latency_ms", "-"), ("signed_latency_ms", ":")):
                values = (phase.get(key) or {}).get("percentiles")
                if values:
                    what = "queryable" if key == "latency_ms" else "signed"
                    label = (
                        f"{name} {what} @ {phase['offered_events_per_s']:,.0f}/s "
                        f"({phase.get('fraction')} of {phase.get('basis')})"
                    )
                    axes.plot(values, levels, style, label=label)
    axes.set(
        xlabel="latency (ms)",
        ylabel="percentile",
        xscale="log",
        title="Event-to-queryable (solid) and event-to-signed (dotted) latency",
    )
    axes.legend(fontsize="x-small")
    written.append(_save(figure, out_dir / "latency_distribution.png"))

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    runs = [run for run in results.get("verify", []) if run.get("verify")]
    if runs:
        rows = [run["rows"] for run in runs]
        seconds = [run["verify"]["seconds"] for run in runs]
        left.plot(rows, seconds, "o-", label="measured")
        per_row = seconds[-1] / rows[-1]
        left.plot(
            [rows[-1], 10_000_000],
            [seconds[-1], per_row * 10_000_000],
            "--",
            label="linear extrapolation",
        )
        left.set(
            xscale="log",
            yscale="log",
            xlabel="stored events",
            ylabel="seconds",
            title="authtrail verify: time by log size",
        )
        left.legend(fontsize="small")
    batches = ((results.get("costs") or {}).get("batch_sizes") or {}).get("by_batch_size") or []
    if batches:
        right.plot([b["batch_size"] for b in batches], [b["us_per_event"] for b in batches], "o-")
        right.set(
            xscale="log",
            xlabel="batch size (events per signed checkpoint)",
            ylabel="sequencer µs per event",
            title="Checkpoint cost by batch size",
        )
    written.append(_save(figure, out_dir / "cost_vs_log_size.png"))

    soaks = [(name, stack["soak"]) for name, stack in stacks.items() if stack.get("soak")]
    if soaks:
        figure, axes = plt.subplots(figsize=(9, 5))
        for name, soak in soaks:
            for role in ("worker", "store"):
                points = [
                    (s["t"], s["rss"][role] / 2**20) for s in soak["samples"] if role in s["rss"]
                ]
                if points:
                    axes.plot(*zip(*points, strict=True), label=f"{name} {role}")
        axes.set(xlabel="seconds", ylabel="RSS (MB)", title="Resident memory during the soak")
        axes.legend(fontsize="small")
        written.append(_save(figure, out_dir / "rss_over_time.png"))
    return written, "PNG files next to this summary: " + ", ".join(p.name for p in written) + "."


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
