"""Build the sink and its ClickHouse backend from settings (adapter wiring only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authtrail.settings import Settings
from schemas import CHAINED_RECORD, CHECKPOINT, DEAD_LETTER, load_schema
from schemas.codec import SingleObjectCodec
from sinks.backend import ClickHouseBackend, EmbeddedBackend, ServerBackend
from sinks.sink import Sink
from sinks.tables import CHECKPOINTS_TABLE, EVENTS_TABLE, REJECTED_TABLE


def open_backend(settings: Settings, *, read_only: bool = False) -> ClickHouseBackend:
    """ClickHouse server at ``settings.clickhouse_url``, else embedded chdb in the data dir."""
    backend: ClickHouseBackend
    if settings.clickhouse_url:
        backend = ServerBackend(settings.clickhouse_url, read_only=read_only)
    else:
        backend = EmbeddedBackend(settings.data_dir / "clickhouse", read_only=read_only)
    return backend


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
        EVENTS_TABLE: SingleObjectCodec(load_schema(CHAINED_RECORD)),
        CHECKPOINTS_TABLE: SingleObjectCodec(load_schema(CHECKPOINT)),
        REJECTED_TABLE: SingleObjectCodec(load_schema(DEAD_LETTER)),
    }
    return Sink(
        backend,
        bootstrap_servers=settings.bootstrap_servers or "",
        topics=topics,
        codecs=codecs,
        group_id=f"{settings.consumer_group}-sink",
        consumer_config=consumer_config,
    )
