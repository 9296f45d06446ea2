"""Packing framed events into envelopes (schemas/event_envelope.avsc), per partition. Pure.

The stream processor pays its per-message cost (~190 µs of Faust, docs/PERFORMANCE.md)
once per Kafka message, so the producer SDK puts many events of one partition into one
message. :class:`EnvelopePacker` decides what goes together; it sends nothing itself.

* An envelope holds events of one partition only, in the order they were added: events of
  several tenants of that partition may share it, and each tenant's events keep their send
  order, because one partition's messages are delivered in order (idempotent producer)
  and the processor handles an envelope's events in index order.
* An envelope is sealed when the next event would make it exceed ``max_bytes``, or when it
  has waited ``linger`` seconds (:meth:`EnvelopePacker.due`). A sealed envelope of one
  event is that event's bare message: exactly what a producer without envelopes sends.
* The envelope's key is its first event's tenant id: a partitioner keyed by it picks the
  envelope's partition, as for a bare event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from authtrail.errors import InvalidArgumentError
from authtrail.schemas.codec import SINGLE_OBJECT_HEADER_SIZE, SingleObjectCodec

#: The events array's count and terminator (Avro varints) take at most this many bytes.
_ARRAY_OVERHEAD = 10 + 1
#: What authtrail's own bulk senders (``loadgen``, file ``ingest``) pack per message.
DEFAULT_ENVELOPE_BYTES = 256 * 1024


def varint_size(value: int) -> int:
    """Bytes of the Avro (zig-zag varint) encoding of non-negative ``value``."""
    # zig-zag doubles it (one bit more), each byte holds 7 bits, zero takes one byte
    return (value.bit_length() + 7) // 7


@dataclass(frozen=True)
class Packed:
    """One Kafka message to send: an envelope, or a bare event when it holds one.

    ``tokens`` are the caller's handles of the events inside, in order.
    """

    partition: int
    key: bytes
    value: bytes
    tokens: tuple[int, ...]
    sizes: tuple[int, ...]  # each event's framed size, for the caller's byte accounting


@dataclass
class _Open:
    key: bytes
    opened_at: float
    values: list[bytes] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    size: int = SINGLE_OBJECT_HEADER_SIZE + _ARRAY_OVERHEAD


class EnvelopePacker:
    """Groups framed events into envelopes per partition (module docs).

    ``codec`` frames envelopes (the ``event_envelope`` schema); ``max_bytes`` bounds an
    envelope's encoded size; ``linger`` (seconds) bounds how long an event waits.
    Not thread-safe: the caller serialises calls.
    """

    def __init__(
        self,
        codec: SingleObjectCodec,
        max_bytes: int,
        linger: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < SINGLE_OBJECT_HEADER_SIZE + _ARRAY_OVERHEAD + 1 or linger < 0:
            raise InvalidArgumentError(
                f"envelope max_bytes {max_bytes} is too small or linger {linger} negative"
            )
        self._codec = codec
        self._max_bytes = max_bytes
        self._linger = linger
        self._monotonic = monotonic
        self._open: dict[int, _Open] = {}

    @property
    def pending(self) -> int:
        """Events added and not yet returned in a :class:`Packed`."""
        return sum(len(envelope.values) for envelope in self._open.values())

    def add(self, partition: int, key: bytes, value: bytes, token: int) -> list[Packed]:
        """Add one framed event; return what must be sent now, in this order.

        That is the partition's open envelope when ``value`` does not fit in it, and
        ``value`` itself (bare) when it would not fit even in an empty envelope.
        """
        sealed: list[Packed] = []
        cost = len(value) + varint_size(len(value))
        envelope = self._open.get(partition)
        if envelope is not None and envelope.size + cost > self._max_bytes:
            sealed.append(self._seal(partition))
            envelope = None
        if SINGLE_OBJECT_HEADER_SIZE + _ARRAY_OVERHEAD + cost > self._max_bytes:
            sealed.append(Packed(partition, key, value, (token,), (len(value),)))
            return sealed
        if envelope is None:
            envelope = self._open[partition] = _Open(key, self._monotonic())
        envelope.values.append(value)
        envelope.tokens.append(token)
        envelope.size += cost
        return sealed

    def due(self) -> list[Packed]:
        """Seal and return every envelope that has waited ``linger`` seconds."""
        now = self._monotonic()
        late = [p for p, envelope in self._open.items() if now - envelope.opened_at >= self._linger]
        return [self._seal(partition) for partition in late]

    def drain(self) -> list[Packed]:
        """Seal and return every open envelope."""
        return [self._seal(partition) for partition in list(self._open)]

    def _seal(self, partition: int) -> Packed:
        envelope = self._open.pop(partition)
        values = envelope.values
        sizes = tuple(len(value) for value in values)
        if len(values) == 1:
            return Packed(partition, envelope.key, values[0], tuple(envelope.tokens), sizes)
        value = self._codec.encode({"events": values})
        return Packed(partition, envelope.key, value, tuple(envelope.tokens), sizes)
