"""The producer SDK: what a service needs to emit auth events to authtrail.

Installed alone as the ``authtrail-producer`` distribution (producers/pyproject.toml):
the Avro schemas and codec, this package and its spool; confluent-kafka and fastavro,
nothing of the stream processor or the store::

    from authtrail.producers.sdk import AuditProducer, new_event

Sealing personal fields at the source (``AuditProducer(..., sealing=SourceSealing...)``)
needs the extra ``authtrail-producer[sealing]`` (cryptography).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from authtrail.producers.sdk.producer import (
        DEFAULT_PRODUCER_CONFIG,
        AuditProducer,
        Backlog,
        DeliveryFailure,
    )
    from authtrail.producers.sdk.sealing import SourceSealing

from authtrail.producers.sdk.events import TENANT_ID_PATTERN, new_event, validate_event

__all__ = [
    "DEFAULT_PRODUCER_CONFIG",
    "TENANT_ID_PATTERN",
    "AuditProducer",
    "Backlog",
    "DeliveryFailure",
    "SourceSealing",
    "new_event",
    "validate_event",
]


def __getattr__(name: str) -> Any:
    # Loaded on first use: the package's pure modules (partitioning, envelope, the spool's
    # format) are imported by the worker and the ingest tools without the Kafka client.
    if name == "SourceSealing":  # needs cryptography (authtrail-producer[sealing])
        try:
            from authtrail.producers.sdk import sealing
        except ModuleNotFoundError as exc:
            if exc.name != "cryptography":
                raise
            raise ImportError(
                "SourceSealing needs cryptography: pip install 'authtrail-producer[sealing]'"
            ) from exc
        return sealing.SourceSealing
    if name in __all__:  # the Kafka client's part: the producer
        from authtrail.producers.sdk import producer

        return getattr(producer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
