"""A partition's sequencer and guard state as bytes, for snapshots. Pure.

Recovery without snapshots replays a partition's chained records from the very first one,
so a restart costs time proportional to the partition's whole history. The worker
therefore publishes, every so many records, the state it has after a batch whose outputs
were acknowledged, together with the offsets that state stands at (docs/PIPELINE.md § 6);
a restart loads the newest one and replays only what follows.

What a snapshot holds is what the chained records and checkpoints would rebuild: per
tenant the chain head, compact Merkle range of the log and of the open batch, the newest
checkpoint and which keys signed it, and the event ids kept for good; the partition's
duplicate window (32 bytes an id, ~6 MB when full — cheaper to load than the ~100 000
records it stands for); the guard's state. A snapshot is not evidence — nothing signs it;
if one were wrong, the chain would stop verifying at the first record after it (and
recovery itself refuses records that do not follow it).

The encoding is zlib-compressed JSON with a format number; bytes are base64.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import zlib
from collections.abc import Sequence
from typing import Any

from authtrail.errors import FormatError, InvalidArgumentError
from authtrail.stream.core.chain import ChainHead
from authtrail.stream.core.checkpoint import Checkpoint
from authtrail.stream.core.compact import CompactTree
from authtrail.stream.core.id_window import IdWindow
from authtrail.stream.core.sequencer import Sequencer, TenantLog
from authtrail.stream.detection.guard import Guard

# 2: the guard's state holds the decisions it owes the log (stream/detection/guard.py). A format-1
# snapshot lacks them, so it is ignored and the partition replayed, which rebuilds them.
FORMAT = 2


def encode_state(sequencer: Sequencer, guard: Guard | None) -> bytes:
    """The state of ``sequencer`` (and ``guard``) as bytes for :func:`restore_state`."""
    state = {
        "format": FORMAT,
        "source_offset": sequencer.source_offset,
        "source_index": sequencer.source_index,
        "tenants": [_tenant_state(log) for log in sequencer.tenants.values()],
        "window": _b64(window) if (window := sequencer.window_bytes()) is not None else None,
        "guard": guard.to_state() if guard is not None else None,
    }
    return zlib.compress(json.dumps(state, separators=(",", ":")).encode(), 1)


def restore_state(data: bytes, sequencer: Sequencer, guard: Guard | None) -> None:
    """Load what :func:`encode_state` wrote into a fresh ``sequencer`` (and ``guard``).

    Raises :class:`FormatError` if ``data`` is not a readable snapshot of this format or
    its trees do not match its chain heads; then neither object was changed.
    """
    try:
        state = json.loads(zlib.decompress(data))
        if state.get("format") != FORMAT:
            raise FormatError(f"snapshot format {state.get('format')!r} is not {FORMAT}")
        logs = [_tenant_log(tenant) for tenant in state["tenants"]]
        source_offset = int(state["source_offset"])
        # Absent in snapshots written before envelopes: the whole message was handled.
        index = state.get("source_index")
        source_index = None if index is None else int(index)
        window = _unb64(state["window"]) if state["window"] is not None else None
        if window is not None:
            IdWindow(2).load(window)  # checked before anything changes
        if guard is not None and state["guard"] is not None:
            guard.load_state(state["guard"])
    except FormatError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, zlib.error) as exc:
        raise FormatError(f"unreadable snapshot: {exc}") from exc
    except InvalidArgumentError as exc:
        raise FormatError(f"snapshot holds invalid state: {exc}") from exc
    for log in logs:
        sequencer.restore_tenant(log)
    sequencer.source_offset, sequencer.source_index = source_offset, source_index
    if window is not None:
        sequencer.load_window(window)


def split(data: bytes, part_bytes: int) -> list[bytes]:
    """``data`` in parts of at most ``part_bytes`` (≥ 1), one Kafka message each."""
    if part_bytes < 1:
        raise InvalidArgumentError("part_bytes must be ≥ 1")
    return [data[start : start + part_bytes] for start in range(0, len(data), part_bytes)] or [b""]


def join(parts: Sequence[bytes]) -> bytes:
    """The inverse of :func:`split`."""
    return b"".join(parts)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _unb64(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"), validate=True)


def _tenant_state(log: TenantLog) -> dict[str, Any]:
    checkpoint = log.last_checkpoint
    return {
        "tenant_id": log.tenant_id,
        "seq": log.head.seq,
        "hash": _b64(log.head.hash),
        "tree": _b64(log.tree.to_bytes()),
        "batch": _b64(log.batch.to_bytes()),
        "checkpoint": _checkpoint_state(checkpoint) if checkpoint is not None else None,
        "kept_ids": {event_id: _b64(leaf) for event_id, leaf in log.kept_ids.items()},
        # Which keys signed the checkpoint: the next one hands over to a new key or not.
        "signed_by": list(log.last_signers) if log.last_signers is not None else None,
    }


def _tenant_log(state: dict[str, Any]) -> TenantLog:
    tenant_id = str(state["tenant_id"])
    head = ChainHead(tenant_id, int(state["seq"]), _unb64(state["hash"]))
    tree = CompactTree.from_bytes(_unb64(state["tree"]))
    batch = CompactTree.from_bytes(_unb64(state["batch"]))
    if tree.size != head.seq or batch.size > head.seq:
        raise FormatError(
            f"snapshot of tenant {tenant_id!r}: tree of {tree.size} and batch of {batch.size} "
            f"do not fit a chain of {head.seq}"
        )
    checkpoint = state["checkpoint"]
    signed_by = state.get("signed_by")  # absent in snapshots from before key rotation
    return TenantLog(
        tenant_id,
        head,
        tree=tree,
        batch=batch,
        last_checkpoint=_checkpoint(checkpoint) if checkpoint is not None else None,
        kept_ids={event_id: _unb64(leaf) for event_id, leaf in state["kept_ids"].items()},
        last_signers=tuple(map(str, signed_by)) if signed_by is not None else None,
    )


def _checkpoint_state(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        field.name: _b64(value) if isinstance(value, bytes) else value
        for field in dataclasses.fields(checkpoint)
        for value in (getattr(checkpoint, field.name),)
    }


def _checkpoint(state: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        origin=str(state["origin"]),
        size=int(state["size"]),
        root=_unb64(state["root"]),
        batch_first_seq=int(state["batch_first_seq"]),
        batch_last_seq=int(state["batch_last_seq"]),
        batch_root=_unb64(state["batch_root"]),
        chain_hash=_unb64(state["chain_hash"]),
        prev_digest=_unb64(state["prev_digest"]),
        time_micros=int(state["time_micros"]),
    )
