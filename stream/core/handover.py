"""Hand-over records: how an idle log changes signing key without waiting for traffic. Pure.

A key rotation hands each log over with a checkpoint both keys sign (docs/INTEGRITY.md
§11), and a checkpoint needs at least one new record (§5). A tenant, or a partition's
rejection log, that receives nothing would keep needing the old private key on the
workers indefinitely. So a worker that signs with a new key appends one record of its
own to every log it owns whose newest checkpoint the new key did not sign and that has no
open batch; the batch of that one record is closed at once, and its checkpoint, signed by
both keys, is the hand-over. No definition changes: the record is an ordinary event (or
rejection) of the log, hashed, chained and verified like every other.

* In a tenant's log it is an auth event of type ``OTHER`` with
  ``event_type_other = "AUTHTRAIL_KEY_HANDOVER"``, ``service`` :data:`KEYS_SERVICE` and an
  ``event_id`` starting with :data:`HANDOVER_ID_PREFIX`: input may use neither
  (:mod:`authtrail.stream.worker.admission`), so no producer can send one, and the lockout guard
  ignores it (it is no login, and recovery must rebuild exactly the state the live worker had).
  Lockout decisions keep their own service, so the ``lockouts`` view does not list it.
* In a rejection log (:mod:`authtrail.stream.core.rejection`) it is a rejection of kind
  ``key_handover`` with an empty ``original``.

Both name the keys (``from_keys``, ``to_key``) and the size of the checkpoint the log
had, and carry the input position the partition had reached: they were read from no
input message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

HANDOVER_EVENT_TYPE = "AUTHTRAIL_KEY_HANDOVER"
#: The service of authtrail's own key hand-over events, reserved like the lockout one.
KEYS_SERVICE = "authtrail-keys"
HANDOVER_ID_PREFIX = f"{KEYS_SERVICE}:"
HANDOVER_REJECTION_KIND = "key_handover"


def _message(from_keys: Sequence[str], to_key: str, after_size: int) -> str:
    return (
        f"signing key handed over from {' & '.join(sorted(from_keys))} to {to_key} "
        f"after checkpoint {after_size}"
    )


def handover_event(
    tenant_id: str, from_keys: Sequence[str], to_key: str, after_size: int, now_micros: int
) -> dict[str, Any]:
    """The auth event that carries ``tenant_id``'s hand-over from ``from_keys`` (the
    signers of its newest checkpoint, of size ``after_size``) to ``to_key``.

    Its ``event_id`` is ``authtrail-keys:handover:<32 hex>`` from SHA-256 over the
    tenant, the size and the new key: a worker that hands the same log over again after
    a restart produces the same id.
    """
    seed = "\x00".join((tenant_id, str(after_size), to_key))
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:32]
    return {
        "event_id": f"{HANDOVER_ID_PREFIX}handover:{digest}",
        "tenant_id": tenant_id,
        "event_type": "OTHER",
        "event_type_other": HANDOVER_EVENT_TYPE,
        "outcome": "SUCCESS",
        "occurred_at": now_micros,
        "service": KEYS_SERVICE,
        "message": _message(from_keys, to_key, after_size),
        "attributes": {
            "from_keys": ",".join(sorted(from_keys)),
            "to_key": to_key,
            "after_size": str(after_size),
        },
    }


def handover_rejection(
    partition: int,
    events_topic: str,
    position: tuple[int, int | None],
    from_keys: Sequence[str],
    to_key: str,
    after_size: int,
    now_micros: int,
) -> dict[str, Any]:
    """The rejection (dead-letter fields) that carries the hand-over of partition
    ``partition``'s rejection log; ``position`` is the input position reached."""
    source_offset, source_index = position
    return {
        "original": b"",
        "original_key": None,
        "reason": _message(from_keys, to_key, after_size),
        "error_kind": HANDOVER_REJECTION_KIND,
        "source_topic": events_topic,
        "source_partition": partition,
        "source_offset": source_offset,
        "source_timestamp": None,
        "tenant_id": None,
        "rejected_at": now_micros,
        "source_index": source_index,
    }
