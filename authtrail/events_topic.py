"""Commands that write to the events topic: which broker, and records of authtrail's own.

``loadgen``, ``ingest`` and ``ingest-http`` send producers' events; ``erase`` and
``retain`` send one record of authtrail's own each (an erasure record, a retention
statement), which the worker checks, chains and signs like any event (docs/PRIVACY.md).
"""

from __future__ import annotations

from typing import Any

from authtrail.errors import ConfigurationError
from authtrail.settings import Settings


def resolve_broker(settings: Settings, command: str) -> Settings:
    """Kafka from the settings, else the broker of a running ``authtrail up``."""
    from authtrail.sinks.service import running_broker

    if not settings.bootstrap_servers and (servers := running_broker(settings)):
        settings = settings.with_overrides({"bootstrap_servers": servers})
    if not settings.bootstrap_servers:
        raise ConfigurationError(
            f"{command} needs --bootstrap-servers or a running `authtrail up` on this data "
            "dir (a broker started just for it would lose everything when it exits)"
        )
    return settings


def send_own_record(settings: Settings, record: dict[str, Any], *, undelivered: str) -> None:
    """Send ``record`` to the events topic and wait for it; ConfigurationError with the
    message ``undelivered`` (what happened, what to run again) when the broker did not
    take it."""
    from authtrail.producers.sdk import AuditProducer

    with AuditProducer(settings.bootstrap_servers or "", settings.events_topic) as producer:
        producer.send(record)
        if producer.flush(30.0):
            raise ConfigurationError(undelivered)
