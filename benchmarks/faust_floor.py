"""What Faust costs per message before the worker sees it: ``python -m benchmarks.faust_floor``.

An agent that only takes batches from its stream (``take_events``, as the sequencer's agent
does) and counts them drains ``--count`` messages already on ``--topic``. The process's
CPU per message from 10 % of them to the last is Faust's own cost per message (consumer,
conductor, stream, acks, event loop): the floor under every message the worker handles, a
rejected one included (docs/RELIABILITY.md § Bad input). ``--loop`` picks asyncio's event
loop or uvloop (the worker's, :func:`authtrail.stream.worker.app._use_uvloop`). ``--runs``
consumes as the worker does: a partition's records in runs, one Faust message per run
(:mod:`authtrail.stream.worker.record_runs`), the cost then per record.

Writes one JSON object to ``--out`` and exits; a Faust worker has no "stop after N".
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import faust
import mode.loop

from authtrail.stream.worker.app import (
    LOCAL_FETCH_WAIT_MS,
    SHORT_GROUP_TIMEOUTS,
    TAKE_MAX,
    TAKE_WITHIN,
    _shorten_fetch_wait,
)
from authtrail.stream.worker.record_runs import run_records, use_record_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faust_floor")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--runs", action="store_true", help="records in runs, as the worker")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        mode.loop.use("uvloop")  # before the app makes a loop
    app = faust.App(
        f"faust-floor-{os.getpid()}",  # a group of its own: reads the topic from the start
        broker=[f"kafka://{server}" for server in args.bootstrap_servers.split(",")],
        datadir=tempfile.mkdtemp(prefix="faust-floor-"),
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        store="memory://",
        autodiscover=False,
        topic_disable_leader=True,
        **SHORT_GROUP_TIMEOUTS,  # the local broker, as in the worker's tests and benchmarks
    )
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    if args.runs:
        use_record_runs(app, [args.topic])
    state: dict[str, Any] = {"taken": 0, "start": None}

    @app.agent(topic)
    async def take(stream: Any) -> None:
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN):
            state["taken"] += (
                sum(len(run_records(event.message)) for event in batch) if args.runs else len(batch)
            )
            if state["start"] is None and state["taken"] >= args.count // 10:
                state["start"] = (state["taken"], time.process_time(), time.perf_counter())
            if state["taken"] >= args.count:
                _finish(args, state)

    _shorten_fetch_wait(app, LOCAL_FETCH_WAIT_MS)
    faust.Worker(app, loglevel="warning").execute_from_commandline()
    return 1  # only reached when the worker stopped before taking every message


def _finish(args: argparse.Namespace, state: dict[str, Any]) -> None:
    first, cpu, wall = state["start"]
    messages = state["taken"] - first
    cpu_seconds, seconds = time.process_time() - cpu, time.perf_counter() - wall
    result = {
        "loop": args.loop,
        "runs": args.runs,
        "messages": messages,
        "cpu_us_per_message": round(cpu_seconds / messages * 1e6, 1) if messages else None,
        "messages_per_cpu_s": round(messages / cpu_seconds) if cpu_seconds else None,
        "messages_per_s": round(messages / seconds) if seconds else None,
    }
    args.out.write_text(json.dumps(result) + "\n")
    os._exit(0)  # Faust's shutdown takes seconds and is not what is measured


if __name__ == "__main__":
    raise SystemExit(main())
