"""Build the sink and its ClickHouse backend from settings (adapter wiring only)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from authtrail.settings import Settings
from schemas import CHAINED_RECORD, CHECKPOINT, CLAIM, DEAD_LETTER, load_schema, previous_versions
from schemas.codec import SingleObjectCodec
from sinks.backend import ClickHouseBackend, EmbeddedBackend, ServerBackend
from sinks.sink import Sink
from sinks.tables import CHECKPOINTS_TABLE, EVENTS_TABLE, REJECTED_TABLE

ENDPOINT_FILE = "clickhouse.endpoint"


def endpoint_path(settings: Settings) -> Path:
    """Where a running ``authtrail up`` announces the HTTP front of its embedded store."""
    return settings.data_dir / ENDPOINT_FILE


def announce_endpoint(settings: Settings, url: str) -> Path:
    """Record ``url``, the broker and this process as the way into a running ``up``."""
    path = endpoint_path(settings)
    announced = {"url": url, "bootstrap_servers": settings.bootstrap_servers, "pid": os.getpid()}
    path.write_text(json.dumps(announced) + "\n")
    return path


def _announced(settings: Settings) -> dict[str, Any] | None:
    try:
        announced = json.loads(endpoint_path(settings).read_text())
        os.kill(int(announced["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return announced if isinstance(announced, dict) else None


def running_endpoint(settings: Settings) -> str | None:
    """The HTTP front URL of a live ``authtrail up`` on this data dir, if there is one."""
    announced = _announced(settings)
    return str(announced["url"]) if announced else None


def running_broker(settings: Settings) -> str | None:
    """The bootstrap servers of a live ``authtrail up`` on this data dir, if there is one."""
    announced = _announced(settings)
    servers = announced.get("bootstrap_servers") if announced else None
    return str(servers) if servers else None


def open_backend(settings: Settings, *, read_only: bool = False) -> ClickHouseBackend:
    """The store: the ClickHouse server at ``settings.clickhouse_url``; else, while
    ``authtrail up`` owns the embedded directory, its HTTP front; else embedded chdb.

    One process owns a chdb directory at a time, which is why a second terminal goes
    through the owner's front.
    """
    backend: ClickHouseBackend
    url = settings.clickhouse_url or running_endpoint(settings)
    if url:
        backend = ServerBackend(url, read_only=read_only)
    else:
        backend = EmbeddedBackend(settings.data_dir / "clickhouse", read_only=read_only)
    return backend


def _codec(name: str) -> SingleObjectCodec:
    """Reads what this and earlier versions of schema ``name`` wrote."""
    return SingleObjectCodec(load_schema(name), previous_versions(name))


def build_sink(
    settings: Settings,
    backend: ClickHouseBackend,
    *,
    consumer_config: Mapping[str, Any] | None = None,
) -> Sink:
    """A sink over the topics named in ``settings``. Requires bootstrap servers."""
    topics = {
        EVENTS_TABLE: settings.chained_topic,
        CHECKPOINTS_TABLE: settings.checkpoints_topic,
        REJECTED_TABLE: settings.dead_letter_topic,
    }
    codecs = {
        EVENTS_TABLE: _codec(CHAINED_RECORD),
        CHECKPOINTS_TABLE: _codec(CHECKPOINT),
        REJECTED_TABLE: _codec(DEAD_LETTER),
    }
    return Sink(
        backend,
        bootstrap_servers=settings.bootstrap_servers or "",
        topics=topics,
        codecs=codecs,
        claim_codec=_codec(CLAIM),
        group_id=f"{settings.consumer_group}-sink",
        batch_rows=settings.sink_batch_rows,
        batch_seconds=settings.sink_batch_ms / 1000,
        consumer_config=consumer_config,
    )
