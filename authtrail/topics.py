"""Create Kafka topics explicitly and check that existing ones have the expected layout.

Why explicitly: a broker that auto-creates topics gives them its default partition count,
and Faust refuses (or, worse, mis-joins) a table whose changelog is partitioned differently
from its source topic. :func:`ensure_topics` creates what is missing with the partition
count we chose and fails loudly when an existing topic disagrees.

What tansu 0.6.0 (the local broker, see :mod:`authtrail.broker`) does with admin requests,
measured with confluent-kafka 2.16.1:

* CreateTopics works; creating an existing topic answers ``TOPIC_ALREADY_EXISTS``.
  ``num_partitions=-1`` (broker default) gives 3 partitions; a metadata request that names
  a missing topic, or producing to one, auto-creates it with 4.
* ``validate_only=True`` is ignored: the topic *is* created. We never use it.
* It does not validate requests: 0 partitions, replication factor 3 on a one-broker cluster
  (metadata then lists broker 111 three times), names with spaces, and unknown config keys
  are all accepted. :class:`TopicSpec` therefore validates names and counts itself.
* Topic configs such as ``cleanup.policy=compact`` and ``retention.ms=-1`` are accepted and
  stored; DescribeConfigs returns exactly the keys that were set (no broker defaults).
  :func:`ensure_topics` reads ``retention.ms`` of the topics that existed before it ran
  and warns when it is not what the spec would create (configs apply at creation only).
  Whether the memory engine enforces compaction or retention was not observed; tests
  must not rely on either. Real Kafka enforces both.
* ListOffsets(latest) — ``get_watermark_offsets``, ``AdminClient.list_offsets``, aiokafka
  ``end_offsets`` — answers (base offset of the partition's last record batch + 1), which
  is too low whenever that batch holds several records (100 records produced in one batch
  report an end offset of 1). The high watermark in Fetch responses is right. Never use
  ListOffsets to decide "have I read everything" on tansu: read until a fetch returns
  nothing new, or produce one record per batch (Faust: ``producer_max_batch_size=1``).
* CreatePartitions is not supported (librdkafka reports ``_UNSUPPORTED_FEATURE``), so a
  partition-count mismatch cannot be repaired in place: delete and recreate (DeleteTopics
  works), which loses data and is left to an operator.

This is an adapter (network I/O); nothing in ``stream/`` imports it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authtrail.errors import ConfigurationError, InvalidArgumentError

__all__ = [
    "TopicSpec",
    "check_reachable",
    "clear_text_bound_ms",
    "ensure_topics",
    "partition_counts",
    "transient_topic_config",
]

_LOG = logging.getLogger(__name__)

# Kafka's own rule (org.apache.kafka.common.internals.Topic): brokers that skip the check,
# like tansu, would otherwise accept names a real cluster later refuses.
_LEGAL_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


@dataclass(frozen=True)
class TopicSpec:
    """The layout a topic must have.

    Args:
        name: Kafka topic name: 1-249 characters from ``[a-zA-Z0-9._-]``, not ``.``/``..``.
        partitions: partition count, at least 1. Fixed for the topic's life: keyed
            ordering and Faust co-partitioning depend on it.
        replication_factor: replicas per partition, at least 1 (1 on the local broker).
        config: topic configs, e.g. ``{"cleanup.policy": "compact"}``; applied only when
            the topic is created, never compared on existing topics (operators may tune
            retention and the like).

    Raises:
        InvalidArgumentError: a field breaks the rules above.
    """

    name: str
    partitions: int
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _LEGAL_TOPIC_NAME.fullmatch(self.name) or self.name in {".", ".."}:
            raise InvalidArgumentError(
                f"illegal Kafka topic name {self.name!r}: use 1-249 characters of "
                "[a-zA-Z0-9._-], not '.' or '..'"
            )
        if self.partitions < 1:
            raise InvalidArgumentError(
                f"topic {self.name!r}: partitions must be >= 1, got {self.partitions}"
            )
        if self.replication_factor < 1:
            raise InvalidArgumentError(
                f"topic {self.name!r}: replication_factor must be >= 1, "
                f"got {self.replication_factor}"
            )
        for key, value in self.config.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidArgumentError(
                    f"topic {self.name!r}: config keys and values must be strings, "
                    f"got {key!r}={value!r}"
                )


#: Kafka deletes whole segments, each once its newest record is past ``retention.ms``,
#: and closes a segment after ``segment.ms`` (7 days by default). Capping it at a day
#: bounds how long a record outlives the retention.
_SEGMENT_MS = 86_400_000


def transient_topic_config(retention_ms: int) -> dict[str, str]:
    """The configs of a topic nothing recovers from (input, dead letters, lockout
    decisions): records deleted once older than ``retention_ms``, at most
    :func:`clear_text_bound_ms` after they were written. 0: nothing set, the cluster's
    defaults apply. Requires ``retention_ms >= 0``."""
    if retention_ms <= 0:
        return {}
    segment_ms = min(retention_ms, _SEGMENT_MS)
    return {"cleanup.policy": "delete", "retention.ms": str(retention_ms),
            "segment.ms": str(segment_ms)}  # fmt: skip


def clear_text_bound_ms(retention_ms: int) -> int | None:
    """How long a record can stay in a topic made with :func:`transient_topic_config`:
    the retention, plus up to a segment's span before its segment may go (then Kafka
    deletes it within ``log.retention.check.interval.ms``, 5 minutes by default). None
    for 0 (the cluster decides). Kafka judges age by the records' own timestamps (the
    producer's clock, unless the topic uses ``LogAppendTime``): a producer clock running
    ahead lengthens this by as much as the broker accepts (``message.timestamp.after.max.ms``)."""
    if retention_ms <= 0:
        return None
    return retention_ms + min(retention_ms, _SEGMENT_MS)


def check_reachable(bootstrap_servers: str, timeout: float = 5.0) -> None:
    """Return when a broker at ``bootstrap_servers`` answers a metadata request.

    Requires ``timeout > 0``. Fails after about ``timeout`` seconds when nothing answers.

    Raises:
        ConfigurationError: no broker answered; one line naming the address and the cause.
        InvalidArgumentError: ``timeout`` is not positive.
    """
    if timeout <= 0:
        raise InvalidArgumentError(f"timeout must be > 0, got {timeout}")
    admin = _admin_client(bootstrap_servers)
    try:
        admin.list_topics(timeout=timeout)
    except Exception as exc:
        raise ConfigurationError(
            f"no Kafka broker answered at {bootstrap_servers} within {timeout:g}s: "
            f"{_describe_kafka_error(exc)}"
        ) from exc


def partition_counts(bootstrap_servers: str, timeout: float = 10.0) -> dict[str, int]:
    """Return ``{topic name: partition count}`` for every topic the cluster lists.

    Asks for all topics rather than named ones: on tansu a metadata request naming a
    missing topic creates it.

    Raises:
        ConfigurationError: the broker did not answer within ``timeout`` seconds.
    """
    return _partition_counts(_admin_client(bootstrap_servers), bootstrap_servers, timeout)


def ensure_topics(
    bootstrap_servers: str, specs: Sequence[TopicSpec], timeout: float = 15.0
) -> list[str]:
    """Create the topics in ``specs`` that are missing; verify the ones that exist.

    Idempotent and safe to run from several processes at once (a topic created by someone
    else between our check and our request counts as existing and is verified). Returns
    the names this call created, in ``specs`` order. Waits until the cluster metadata lists
    every topic with its partitions before returning.

    Requires distinct names in ``specs``.

    Raises:
        ConfigurationError: the broker is unreachable; creation failed; a topic exists with
            a different partition count (Faust tables and per-key ordering would break, and
            partitions cannot be changed in place without data movement); or the topics
            did not appear within ``timeout`` seconds.
        InvalidArgumentError: two specs share a name.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidArgumentError(f"topic specs name these topics twice: {duplicates}")
    if not specs:
        return []

    admin = _admin_client(bootstrap_servers)
    deadline = time.monotonic() + timeout
    existing = _partition_counts(admin, bootstrap_servers, timeout)
    missing = [spec for spec in specs if spec.name not in existing]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=spec.replication_factor,
                    config=dict(spec.config),
                )
                for spec in missing
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for spec in missing:
            try:
                futures[spec.name].result(timeout=max(0.1, deadline - time.monotonic()))
                created.append(spec.name)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if (
                    isinstance(error, KafkaError)
                    and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
                ):
                    continue  # a concurrent creator won the race; verified below
                raise ConfigurationError(
                    f"could not create topic {spec.name!r} ({spec.partitions} partitions) on "
                    f"{bootstrap_servers}: {_describe_kafka_error(exc)}"
                ) from exc
            except TimeoutError as exc:
                raise ConfigurationError(
                    f"creating topic {spec.name!r} on {bootstrap_servers} did not finish "
                    f"within {timeout:g}s"
                ) from exc
        if created:
            _LOG.info("created topics %s on %s", created, bootstrap_servers)

    _wait_for_layout(admin, bootstrap_servers, specs, deadline, timeout)
    _warn_about_retention(admin, [spec for spec in specs if spec.name in existing], timeout)
    return created


def _warn_about_retention(admin: Any, specs: Sequence[TopicSpec], timeout: float) -> None:
    """Log a warning for each existing topic whose ``retention.ms`` is not the one its
    spec would create it with (configs apply at creation only): a topic created before
    a bounded retention existed keeps input, clear text included, for as long as the
    cluster says. Never fails: the broker may refuse DescribeConfigs."""
    from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]

    wanted = {spec.name: spec.config["retention.ms"] for spec in specs
              if "retention.ms" in spec.config}  # fmt: skip
    if not wanted:
        return
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in wanted]
    try:
        futures = admin.describe_configs(resources, request_timeout=timeout)
        for resource, future in futures.items():
            entry = future.result(timeout=timeout).get("retention.ms")
            actual = entry.value if entry is not None else None
            if actual != wanted[resource.name]:
                _LOG.warning(
                    "topic %s keeps records for retention.ms=%s, not the %s it would be "
                    "created with (topic configs apply at creation only; docs/DEPLOYMENT.md, "
                    "Retention, says how to set it)", resource.name, actual or "(cluster "
                    "default)", wanted[resource.name],
                )  # fmt: skip
    except Exception as exc:  # the check is advice, never a reason not to start
        _LOG.debug("could not read topic retention: %s", _describe_kafka_error(exc))


def _wait_for_layout(
    admin: Any,
    bootstrap_servers: str,
    specs: Sequence[TopicSpec],
    deadline: float,
    timeout: float,
) -> None:
    """Poll metadata until every spec's topic is listed; raise on a partition mismatch."""
    while True:
        remaining = max(0.1, deadline - time.monotonic())
        counts = _partition_counts(admin, bootstrap_servers, remaining)
        absent = []
        for spec in specs:
            actual = counts.get(spec.name)
            if actual is None:
                absent.append(spec.name)
            elif actual != spec.partitions:
                raise ConfigurationError(
                    f"topic {spec.name!r} on {bootstrap_servers} has {actual} partitions, "
                    f"expected {spec.partitions}; Faust tables and per-key order depend on "
                    "the count. Delete and recreate it (data loss) or fix the setting."
                )
        if not absent:
            return
        if time.monotonic() >= deadline:
            raise ConfigurationError(
                f"topics {absent} did not appear on {bootstrap_servers} within {timeout:g}s"
            )
        time.sleep(0.1)


def _partition_counts(admin: Any, bootstrap_servers: str, timeout: float) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception as exc:
        raise ConfigurationError(
            f"no Kafka broker answered at {bootstrap_servers} within {timeout:g}s: "
            f"{_describe_kafka_error(exc)}"
        ) from exc
    counts: dict[str, int] = {}
    for name, topic in metadata.topics.items():
        if topic.error is None:
            counts[name] = len(topic.partitions)
    return counts


def _admin_client(bootstrap_servers: str) -> Any:
    """An AdminClient whose librdkafka logs go to Python logging, not straight to stderr."""
    # Imported lazily so importing this module (e.g. for TopicSpec in settings) does not
    # load librdkafka.
    from confluent_kafka.admin import AdminClient

    try:
        return AdminClient({"bootstrap.servers": bootstrap_servers, "logger": _LOG})  # type: ignore[dict-item]
    except Exception as exc:  # a malformed bootstrap string fails at construction
        raise ConfigurationError(
            f"invalid Kafka bootstrap servers {bootstrap_servers!r}: {_describe_kafka_error(exc)}"
        ) from exc


def _describe_kafka_error(exc: BaseException) -> str:
    """One line for a librdkafka exception: its error string, not the repr of a wrapper."""
    error = exc.args[0] if exc.args else None
    text = error.str() if hasattr(error, "str") else str(exc)  # type: ignore[union-attr]
    return " ".join(str(text).split())
