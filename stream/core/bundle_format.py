"""The JSON shape of proof bundles (docs/INTEGRITY.md, "Proof bundles"): read, write, check.

This layer decides only whether a bundle is *well-formed* — every key present and known,
every value of its type, base64 canonical, hashes 32 bytes — and raises
:class:`FormatError` otherwise. Whether a well-formed bundle proves anything is decided
by :mod:`authtrail.stream.core.bundle`.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authtrail.errors import FormatError, InvalidArgumentError
from authtrail.stream.core.canonical import FieldValue
from authtrail.stream.core.checkpoint import checkpoint_origin
from authtrail.stream.core.merkle import HASH_SIZE

INCLUSION_FORMAT = "authtrail-inclusion-v1"
CONSISTENCY_FORMAT = "authtrail-consistency-v1"
MAX_PROOF_HASHES = 128  # sizes below 2^64 never need more; refuse absurd lists early
MAX_NUMBER = 2**64 - 1

INCLUSION_KEYS = (
    "format", "log_origin", "tenant_id", "seq", "event", "canonical_leaf", "leaf_hash",
    "chain", "tree_size", "inclusion_proof", "checkpoint",
)  # fmt: skip
CONSISTENCY_KEYS = ("format", "log_origin", "tenant_id", "old", "new", "consistency_proof")
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


@dataclass(frozen=True)
class InclusionFields:
    """The decoded fields of a well-formed inclusion bundle (nothing verified yet)."""

    log_origin: str
    tenant_id: str
    seq: int
    event: dict[str, FieldValue]
    canonical_leaf: bytes
    leaf_hash: bytes
    chain: tuple[bytes, bytes] | None  # (prev_hash, hash)
    tree_size: int
    inclusion_proof: list[bytes]
    checkpoint: str


@dataclass(frozen=True)
class ConsistencyFields:
    """The decoded fields of a well-formed consistency bundle (nothing verified yet)."""

    log_origin: str
    tenant_id: str
    old: str
    new: str
    consistency_proof: list[bytes]


def parse_inclusion(bundle: Mapping[str, Any]) -> InclusionFields:
    """Decode an inclusion bundle (a parsed JSON object).

    Raises :class:`FormatError` if ``format`` is not ``authtrail-inclusion-v1``, a key is
    missing (only ``chain`` may be) or unknown, or a value is not of its type.
    """
    fields = _keys(bundle, INCLUSION_FORMAT, INCLUSION_KEYS, optional=("chain",))
    log_origin, tenant_id = _log(fields)
    return InclusionFields(
        log_origin=log_origin,
        tenant_id=tenant_id,
        seq=_integer(fields["seq"], "seq"),
        event=_event(fields["event"]),
        canonical_leaf=_base64(fields["canonical_leaf"], "canonical_leaf"),
        leaf_hash=_base64(fields["leaf_hash"], "leaf_hash", HASH_SIZE),
        chain=_chain(fields["chain"]) if "chain" in fields else None,
        tree_size=_integer(fields["tree_size"], "tree_size"),
        inclusion_proof=_proof(fields["inclusion_proof"], "inclusion_proof"),
        checkpoint=_string(fields["checkpoint"], "checkpoint"),
    )


def parse_consistency(bundle: Mapping[str, Any]) -> ConsistencyFields:
    """Decode a consistency bundle (a parsed JSON object).

    Raises :class:`FormatError` if ``format`` is not ``authtrail-consistency-v1``, a key
    is missing or unknown, or a value is not of its type.
    """
    fields = _keys(bundle, CONSISTENCY_FORMAT, CONSISTENCY_KEYS)
    log_origin, tenant_id = _log(fields)
    return ConsistencyFields(
        log_origin=log_origin,
        tenant_id=tenant_id,
        old=_string(fields["old"], "old"),
        new=_string(fields["new"], "new"),
        consistency_proof=_proof(fields["consistency_proof"], "consistency_proof"),
    )


def load_bundle(data: bytes | str) -> dict[str, Any]:
    """Parse bundle file content: one UTF-8 JSON object, no duplicate keys, no NaN.

    Only the JSON is checked here. Raises :class:`FormatError` naming what is wrong.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        loaded = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise FormatError("bundle is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"bundle is not valid JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise FormatError(f"bundle must be a JSON object, got {type(loaded).__name__}")
    return loaded


def bundle_json(bundle: Mapping[str, Any]) -> bytes:
    """The bundle as the UTF-8 JSON text a bundle file holds (indented, ending in a newline)."""
    return (json.dumps(bundle, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def b64(value: bytes) -> str:
    """Canonical padded standard base64 (RFC 4648 §4), the bundle's spelling of bytes."""
    return base64.b64encode(value).decode("ascii")


def event_json(event: Mapping[str, FieldValue]) -> dict[str, str | int | dict[str, str] | None]:
    """The event as a bundle's ``event`` object: fields and map entries in sorted order."""
    return {
        name: dict(sorted(value.items())) if isinstance(value, Mapping) else value
        for name, value in sorted(event.items())
    }


def _keys(
    bundle: Mapping[str, Any], kind: str, keys: Sequence[str], optional: Sequence[str] = ()
) -> Mapping[str, Any]:
    if not isinstance(bundle, Mapping):
        raise FormatError(f"bundle must be a JSON object, got {type(bundle).__name__}")
    if bundle.get("format") != kind:
        raise FormatError(f"bundle format is {bundle.get('format')!r}, expected {kind!r}")
    missing = [key for key in keys if key not in bundle and key not in optional]
    unknown = sorted(str(key) for key in bundle if key not in keys)
    if missing or unknown:
        raise FormatError(f"{kind} bundle: missing keys {missing}, unknown keys {unknown}")
    return bundle


def _log(fields: Mapping[str, Any]) -> tuple[str, str]:
    log_origin = _string(fields["log_origin"], "log_origin")
    tenant_id = _string(fields["tenant_id"], "tenant_id")
    if not _TENANT_ID.match(tenant_id):
        raise FormatError(f"bundle tenant_id {tenant_id[:40]!r} is not a valid tenant id")
    try:
        checkpoint_origin(log_origin, tenant_id)
    except InvalidArgumentError:
        raise FormatError(f"bundle log_origin {log_origin[:60]!r} is not a valid origin") from None
    return log_origin, tenant_id


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"bundle {key} must be a string, got {type(value).__name__}")
    return value


def _integer(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_NUMBER:
        raise FormatError(f"bundle {key} must be an integer in 1..2^64-1, got {value!r}")
    return value


def _base64(value: Any, key: str, size: int | None = None) -> bytes:
    text = _string(value, key)
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"bundle {key} is not standard base64") from None
    if b64(decoded) != text:
        raise FormatError(f"bundle {key} is not canonical base64")
    if size is not None and len(decoded) != size:
        raise FormatError(f"bundle {key} must be {size} bytes, got {len(decoded)}")
    return decoded


def _proof(value: Any, key: str) -> list[bytes]:
    if not isinstance(value, list) or len(value) > MAX_PROOF_HASHES:
        raise FormatError(f"bundle {key} must be a list of at most {MAX_PROOF_HASHES} hashes")
    return [_base64(item, f"{key}[{position}]", HASH_SIZE) for position, item in enumerate(value)]


def _chain(value: Any) -> tuple[bytes, bytes]:
    if not isinstance(value, Mapping) or sorted(value) != ["hash", "prev_hash"]:
        raise FormatError("bundle chain must be an object with exactly prev_hash and hash")
    prev_hash = _base64(value["prev_hash"], "chain.prev_hash", HASH_SIZE)
    return prev_hash, _base64(value["hash"], "chain.hash", HASH_SIZE)


def _event(value: Any) -> dict[str, FieldValue]:
    if not isinstance(value, Mapping):
        raise FormatError("bundle event must be a JSON object")
    event: dict[str, FieldValue] = {}
    for name, item in value.items():
        scalar = item is None or isinstance(item, str)
        integer = isinstance(item, int) and not isinstance(item, bool)
        if scalar or integer:
            event[name] = item
        elif isinstance(item, Mapping) and all(isinstance(v, str) for v in item.values()):
            event[name] = dict(item)
        else:
            raise FormatError(
                f"bundle event field {name!r}: {type(item).__name__} is none of string, "
                "integer, object of strings, null"
            )
    return event


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
