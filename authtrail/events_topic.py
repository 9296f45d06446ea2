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
    take it. A record for a rejection log goes to that log's input partition."""
    from authtrail.producers.sdk import AuditProducer
    from authtrail.stream.core.rejection import is_rejection_tenant

    if is_rejection_tenant(record["tenant_id"]):
        _send_to_rejection_log(settings, record, undelivered)
        return
    with AuditProducer(settings.bootstrap_servers or "", settings.events_topic) as producer:
        producer.send(record)
        if producer.flush(30.0):
            raise ConfigurationError(undelivered)


def _send_to_rejection_log(settings: Settings, record: dict[str, Any], undelivered: str) -> None:
    """``record`` as one bare event to the partition whose rejection log it names: the
    SDK would choose the partition by the tenant id's hash, and refuses reserved ids."""
    from confluent_kafka import Producer

    from authtrail import schemas
    from authtrail.producers.sdk.producer import DEFAULT_PRODUCER_CONFIG
    from authtrail.schemas.codec import SingleObjectCodec
    from authtrail.stream.core.rejection import REJECTION_TENANT_PREFIX

    partition = int(record["tenant_id"][len(REJECTION_TENANT_PREFIX) :])
    value = SingleObjectCodec(schemas.load_schema(schemas.AUTH_EVENT)).encode(record)
    failed: list[object] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failed.append(error)

    producer = Producer(
        {**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": settings.bootstrap_servers}
    )
    producer.produce(settings.events_topic, value, record["tenant_id"].encode(),
                     partition=partition, on_delivery=delivered)  # fmt: skip
    if producer.flush(30.0) or failed:
        raise ConfigurationError(undelivered)
