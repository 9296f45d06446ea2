"""``python -m benchmarks.store_host``: one process owning chdb, storing and answering.

Runs either the authtrail sink (:func:`authtrail.sinks.service.build_sink`, exactly as ``authtrail
sink`` builds it) or the plain baseline consumer (:mod:`benchmarks.plain`) on an embedded
store, and serves that store over the project's HTTP front so the benchmark can count rows
and read latencies from another process (chdb allows one owner per data directory). The
sink writes in-process; the endpoint file (mode 0600) holds the front's analyst URL.
Settings come from ``AUTHTRAIL_*`` variables. SIGTERM stores what is buffered and exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from authtrail.settings import Settings
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.http_front import HttpFront
from authtrail.sinks.service import build_sink, write_private_file
from authtrail.stream.worker.app import SHORT_CONSUMER_CONFIG
from benchmarks.plain import PlainConsumer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_host")
    parser.add_argument("--mode", choices=("authtrail", "plain"), required=True)
    parser.add_argument("--endpoint-file", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    settings = Settings.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    backend = EmbeddedBackend(settings.data_dir / "clickhouse")
    front = HttpFront(backend).start()
    run: Callable[[threading.Event], None]
    try:
        if args.mode == "authtrail":
            run = build_sink(settings, backend, consumer_config=SHORT_CONSUMER_CONFIG).run
        else:
            run = PlainConsumer(
                backend,
                bootstrap_servers=settings.bootstrap_servers or "",
                topic=settings.events_topic,
                group_id=f"{settings.consumer_group}-plain",
                batch_rows=settings.sink_batch_rows,
                batch_seconds=settings.sink_batch_ms / 1000,
                consumer_config=SHORT_CONSUMER_CONFIG,
            ).run
        failures: list[BaseException] = []

        def store() -> None:
            try:
                run(stop)
            except BaseException as exc:  # reported by the exit status and the log
                logging.exception("store failed")
                failures.append(exc)

        thread = threading.Thread(target=store, name="store", daemon=True)
        thread.start()
        announced = {"url": front.analyst_url, "pid": os.getpid()}  # reads only: the analyst
        write_private_file(args.endpoint_file, json.dumps(announced) + "\n")
        while thread.is_alive() and not stop.wait(0.5):
            pass
        stop.set()
        thread.join(60)
        return 0 if not thread.is_alive() and not failures else 1
    finally:
        front.stop()
        backend.close()


if __name__ == "__main__":
    raise SystemExit(main())
