"""A tiny Faust app for the broker smoke test: count events per key in a Table.

Used only by ``test_faust_smoke.py``. It shows the pattern the real sequencer follows:

* **The app is built by a factory** (:func:`build_app`) from a settings object; nothing
  but the ``__main__`` entry point holds it. No module-level ``app``.
* **It runs as a worker without Faust's click CLI**: ``python -m
  tests.integration.faust_smoke_app --bootstrap-servers HOST:PORT --app-id ID ...``
  parses its own arguments, builds the app and hands it to ``faust.Worker(app)
  .execute_from_commandline()`` — the programmatic form of ``faust -A module:app worker``.
  ``faust -A`` needs an importable module attribute, i.e. global state; the CLI also
  starts a web server unless told otherwise. ``faust.Worker`` installs the same signal
  handlers (SIGTERM/SIGINT stop the worker) and exits the process when the app stops.
* **Settings that make Faust work on tansu** are in :func:`tansu_faust_settings`:
  ``at_least_once`` (aiokafka's idempotent producer fails on tansu), short group timeouts
  (joins take ~30 s otherwise), one record per produce batch (tansu's end offsets are
  wrong after multi-record batches, and Faust recovers tables only up to them), no web
  server, in-memory tables recovered from the changelog (``rocksdict`` is not
  installed), and the changelog topic created by the caller beforehand with the source
  topic's partition count (see :func:`topic_specs`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import faust

from authtrail.topics import TopicSpec

_TABLE_NAME = "counts"


@dataclass(frozen=True)
class SmokeSettings:
    """Everything the smoke app needs; one instance per worker process."""

    bootstrap_servers: str
    app_id: str
    partitions: int
    datadir: Path

    @property
    def input_topic(self) -> str:
        return f"{self.app_id}-events"

    @property
    def output_topic(self) -> str:
        return f"{self.app_id}-counted"

    @property
    def changelog_topic(self) -> str:
        # Faust's own naming rule ("{app id}-{table name}-changelog"); spelled out so the
        # caller can create the topic before the worker starts.
        return f"{self.app_id}-{_TABLE_NAME}-changelog"


def topic_specs(settings: SmokeSettings) -> list[TopicSpec]:
    """The topics the app needs, to be created before the first worker starts."""
    return [
        TopicSpec(settings.input_topic, settings.partitions),
        TopicSpec(settings.output_topic, settings.partitions),
        TopicSpec(
            settings.changelog_topic,
            settings.partitions,
            config={"cleanup.policy": "compact"},
        ),
    ]


def tansu_faust_settings() -> dict[str, Any]:
    """Faust settings measured to work against the local tansu broker.

    Production against real Kafka keeps Faust's default timeouts.
    """
    return {
        # aiokafka's InitProducerId fails on tansu, so exactly_once cannot start.
        "processing_guarantee": "at_least_once",
        # With defaults a new member waits ~30 s for its assignment.
        "broker_session_timeout": 5,
        "broker_rebalance_timeout": 5,
        "broker_heartbeat_interval": 1,
        # Commit often so a killed worker reprocesses little.
        "broker_commit_interval": 0.5,
        # tansu 0.6.0 answers ListOffsets(latest) with (base offset of the last record batch
        # + 1). Faust reads changelogs only up to that "highwater" when it recovers a table,
        # so a multi-record last batch silently drops the newest table updates. One record
        # per batch keeps the reported end offset true.
        "producer_max_batch_size": 1,
        "web_enabled": False,
        "store": "memory://",
        # Our own code lives in this file; scanning packages for decorators is wasted time.
        "autodiscover": False,
        # The assignor's leader topic is one more auto-declared topic we do not need.
        "topic_disable_leader": True,
    }


def build_app(settings: SmokeSettings) -> faust.App:
    """Build the counting app: events in, ``{"key", "count", "number"}`` out per event.

    The agent only translates between Kafka records and the table; the counting rule is
    one line, as the real sequencer's agents delegate to the pure core.
    """
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        datadir=str(settings.datadir),
        topic_partitions=settings.partitions,
        **tansu_faust_settings(),
    )
    events = app.topic(settings.input_topic, key_serializer="raw", value_serializer="json")
    counted = app.topic(settings.output_topic, key_serializer="raw", value_serializer="json")
    counts = app.Table(
        _TABLE_NAME,
        default=int,
        partitions=settings.partitions,
        key_type=str,
        value_type=int,
    )

    @app.agent(events, name="count_events")
    async def count_events(stream: Any) -> None:
        async for event in stream.events():
            tenant = event.key.decode("utf-8")
            counts[tenant] += 1
            await counted.send(
                key=event.key,
                value={
                    "key": tenant,
                    "count": counts[tenant],
                    "number": event.value["number"],
                    # Where the input came from: lets a failing test show what was skipped.
                    "partition": event.message.partition,
                    "offset": event.message.offset,
                },
            )

    return app


def run_worker(app: faust.App, loglevel: str = "info") -> NoReturn:
    """Run ``app`` as a Faust worker in this process until it is signalled to stop."""
    worker = faust.Worker(app, loglevel=loglevel)
    worker.execute_from_commandline()


def parse_settings(argv: Sequence[str]) -> SmokeSettings:
    """Parse command-line arguments into :class:`SmokeSettings`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--datadir", type=Path, required=True)
    arguments = parser.parse_args(argv)
    return SmokeSettings(
        bootstrap_servers=arguments.bootstrap_servers,
        app_id=arguments.app_id,
        partitions=arguments.partitions,
        datadir=arguments.datadir,
    )


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: ``python -m tests.integration.faust_smoke_app --help``."""
    settings = parse_settings(sys.argv[1:] if argv is None else argv)
    logging.getLogger(__name__).info("smoke worker starting with %s", settings)
    run_worker(build_app(settings))


if __name__ == "__main__":
    main()
