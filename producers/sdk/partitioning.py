"""Which partition a tenant's events belong to: Kafka's default partitioner. Pure.

Every authtrail producer keys events by tenant id with librdkafka's ``murmur2_random``
partitioner, which is Java Kafka's ``DefaultPartitioner`` for keyed records:
``toPositive(murmur2(key)) % partitions``. The sequencer refuses an event that arrives
in another partition (keyed by something else, or by another client's partitioner):
chaining it there would start a second chain for its tenant.
"""

from __future__ import annotations

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """``org.apache.kafka.common.utils.Utils.murmur2``, as Java's signed 32-bit int."""
    h = (_SEED ^ len(data)) & _MASK
    whole = len(data) // 4 * 4
    for index in range(0, whole, 4):
        k = (int.from_bytes(data[index : index + 4], "little") * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def tenant_partition(tenant_id: str, partitions: int) -> int:
    """The partition of ``tenant_id``'s events among ``partitions`` (>= 1)."""
    return (murmur2(tenant_id.encode("utf-8")) & 0x7FFFFFFF) % partitions
