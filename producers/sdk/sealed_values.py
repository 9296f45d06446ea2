"""Sealed values: the one implementation of authtrail's field encryption. Pure.

Shared by the producer SDK (:mod:`authtrail.producers.sdk.sealing`, sealing at the
source) and the worker (:mod:`authtrail.stream.worker.shredding`), so a value sealed by
either is byte for byte the same (docs/PRIVACY.md, docs/INTEGRITY.md §2.1). It lives in
the SDK because the ``authtrail-producer`` distribution ships the SDK and not the worker;
it needs ``cryptography`` (the extra ``authtrail-producer[sealing]``).

A sealed value is the text::

    authtrail-sealed-v1:<key_id>:<base64(nonce)>:<base64(ciphertext || tag)>

AES-256-GCM-SIV under the data subject's key, with associated data binding the tenant,
the event id, the field name (``attributes.<key>`` for an attribute) and the key id
(:func:`associated_data`), so a ciphertext moved to another field, attribute, event or
tenant fails to open. The nonce is derived from the
associated data: the same event sealed twice (a producer's retry) gives the same bytes,
which keeps the sequencer's duplicate detection working; GCM-SIV tolerates the repeat (it
reveals only that two sealings of one field of one event were equal).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from authtrail.errors import AuthtrailError

#: A string value starting with this is a sealed (encrypted) personal field: leaf type "c".
SEALED_PREFIX = "authtrail-sealed-v1:"
KEY_BYTES = 32
_NONCE_BYTES = 12
_AD_DOMAIN = b"authtrail-sealed-v1\n"
_KEY_ID = re.compile(r"[0-9a-f]{32}\Z")
_PSEUDONYM_DOMAIN = b"authtrail-pseudonym-v1\n"
_u32 = struct.Struct(">I").pack


class SealedValueError(AuthtrailError):
    """A sealed value is malformed, or does not open (wrong key, moved, modified)."""


@dataclass(frozen=True)
class SubjectKey:
    """A data subject's key: ``key_id`` (32 lower-case hex, random) names it in values."""

    key_id: str
    key: bytes


class SubjectKeySource(Protocol):
    """What a producer sealing at the source needs of a key store: a subject's current key.
    A KMS client for producers may implement only this (docs/PRIVACY.md)."""

    def key_for(self, tenant_id: str, subject: str) -> SubjectKey:
        """The subject's current key, created (durably, and atomically: producers and the
        worker may ask for a new subject's first key at once) if it has none; never a key
        an erasure destroyed."""


class SubjectKeys(SubjectKeySource, Protocol):
    """Where subject keys live (docs/PRIVACY.md, "Key store"): a directory by default
    (:class:`authtrail.privacy_keys.DirectoryKeyStore`), any KMS that can create, find and
    destroy a key per (tenant, subject) likewise. The worker uses all of it."""

    def find(self, tenant_id: str, key_id: str) -> SubjectKey | None:
        """The key ``key_id`` of ``tenant_id``; None once destroyed (erased)."""

    def pseudonym_key(self, tenant_id: str) -> bytes:
        """The tenant's HMAC key for pseudonyms, created (durably) if missing."""

    def destroyed(self, tenant_id: str, key_id: str, subject_pseudonym: str) -> bool:
        """Whether the key ``key_id`` of ``tenant_id`` existed, was destroyed by an
        erasure, and belonged to the subject whose :func:`pseudonym` is
        ``subject_pseudonym``: False for a live key, for one never created (the store must
        keep a tombstone to tell them apart), for another subject's key, and for ids it
        could not hold. Asked by the worker before it chains an erasure record, with ids
        taken from untrusted input: it must not raise for them."""


def is_sealed(value: object) -> bool:
    """Whether ``value`` is a sealed field value (leaf type ``c``, docs/INTEGRITY.md §2.1)."""
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def subject_of(event: Mapping[str, Any]) -> str:
    """The data subject whose key seals ``event`` (its clear values): ``id:<user_id>``,
    else ``name:<user_name>`` (a failed login for an unknown account), else
    ``unattributed`` (one key per tenant for events about nobody in particular)."""
    if event.get("user_id"):
        return f"id:{event['user_id']}"
    name = event.get("user_name")
    if name and not is_sealed(name):
        return f"name:{name}"
    return "unattributed"


def associated_data(tenant_id: str, event_id: str, field: str, key_id: str) -> bytes:
    """What a sealed value is bound to (docs/INTEGRITY.md §2.1): each part framed as
    ``u32(len) || utf8``, as the canonical leaf frames names and values. ``field`` is a
    top-level field's name, or ``attributes.<key>`` for a value of the attributes map."""
    parts = (part.encode("utf-8") for part in (tenant_id, event_id, field, key_id))
    return _AD_DOMAIN + b"".join(_u32(len(part)) + part for part in parts)


def seal_value(key: SubjectKey, tenant_id: str, event_id: str, field: str, text: str) -> str:
    """``text`` sealed under ``key`` for ``field`` of event ``event_id`` of ``tenant_id``.
    Deterministic: the same inputs give the same value."""
    ad = associated_data(tenant_id, event_id, field, key.key_id)
    nonce = hashlib.sha256(ad).digest()[:_NONCE_BYTES]
    sealed = AESGCMSIV(key.key).encrypt(nonce, text.encode("utf-8"), ad)
    return f"{SEALED_PREFIX}{key.key_id}:{_b64(nonce)}:{_b64(sealed)}"


def sealed_key_id(value: str) -> str:
    """The key id a sealed ``value`` names; raises :class:`SealedValueError` if it is not
    shaped as a sealed value with a key id (its nonce and ciphertext are checked when it
    is opened: this is on the worker's path for every producer-sealed value)."""
    parts = value[len(SEALED_PREFIX) :].split(":") if is_sealed(value) else []
    if len(parts) != 3 or not _KEY_ID.match(parts[0]):
        raise SealedValueError(f"not a sealed value: {value[:60]!r}")
    return parts[0]


def open_value(key: SubjectKey, tenant_id: str, event_id: str, field: str, value: str) -> str:
    """The text of sealed ``value``. Raises :class:`SealedValueError` when it is malformed,
    names another key, or does not open for this tenant, event and field."""
    key_id, nonce, sealed = _parse(value)
    if key_id != key.key_id:
        raise SealedValueError(f"field {field!r} is sealed under key {key_id}, not {key.key_id}")
    ad = associated_data(tenant_id, event_id, field, key_id)
    try:
        return AESGCMSIV(key.key).decrypt(nonce, sealed, ad).decode("utf-8")
    except (InvalidTag, UnicodeDecodeError) as exc:
        raise SealedValueError(
            f"field {field!r} of event {event_id!r} (tenant {tenant_id!r}) does not open: "
            "modified, or moved from another field, event or tenant"
        ) from exc


def pseudonym(tenant_key: bytes, value: str) -> str:
    """The stable keyed pseudonym of ``value``: hex HMAC-SHA-256 under the tenant's key."""
    return hmac.new(tenant_key, _PSEUDONYM_DOMAIN + value.encode("utf-8"), "sha256").hexdigest()


def _parse(value: str) -> tuple[str, bytes, bytes]:
    key_id = sealed_key_id(value)
    parts = value.rsplit(":", 2)[1:]
    try:
        nonce, sealed = (base64.b64decode(part, validate=True) for part in parts)
    except binascii.Error as exc:
        raise SealedValueError(f"sealed value is not valid base64: {exc}") from exc
    if len(nonce) != _NONCE_BYTES:
        raise SealedValueError(f"sealed value has a nonce of {len(nonce)} bytes")
    return key_id, nonce, sealed


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
