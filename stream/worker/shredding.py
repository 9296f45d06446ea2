"""Crypto-shredding of personal fields and keyed pseudonyms (docs/PRIVACY.md). Pure.

A tenant's privacy policy names *sealed* fields, encrypted per data subject before the
event's canonical leaf is computed, and *pseudonymised* fields, whose keyed HMAC goes into
``attributes['pseudonym.<field>']`` so analysts can count per user or address without
reading either. The leaf commits to the ciphertext (leaf v2, docs/INTEGRITY.md §2.1), so
destroying a subject's key (:mod:`authtrail.privacy_keys`) makes their fields unreadable
everywhere while every hash, root, checkpoint and proof still verifies.

A sealed value is the text::

    authtrail-sealed-v1:<key_id>:<base64(nonce)>:<base64(ciphertext || tag)>

AES-256-GCM-SIV under the subject's key, with associated data binding the tenant, the
event id, the field name and the key id (:func:`associated_data`), so a ciphertext moved
to another field, event or tenant fails to open. The nonce is derived from the associated
data: the same event sealed twice (a producer's retry) gives the same bytes, which keeps
the sequencer's duplicate detection working; GCM-SIV tolerates the repeat (it reveals
only that two sealings of one field of one event were equal).

Key I/O stays out: a :class:`SubjectKeys` (the directory store, or a KMS) is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from authtrail.errors import AuthtrailError, ConfigurationError, InvalidArgumentError
from authtrail.stream.core.canonical import SEALED_PREFIX, is_sealed, length_prefixed
from authtrail.stream.detection.decisions import LOCKOUT_SERVICE, pseudonym_attribute

#: No e-mail field exists in schemas/auth_event.avsc: an e-mail arrives as user_name.
DEFAULT_SEALED = ("client_ip", "user_agent", "user_name")
DEFAULT_PSEUDONYMISED = ("client_ip", "user_name")
#: The service of erasure records (a chained event, checked before it is: docs/PRIVACY.md).
PRIVACY_SERVICE = "authtrail-privacy"
#: Every erasure record's event_id starts with it; admission reserves it (and the service).
ERASURE_ID_PREFIX = f"{PRIVACY_SERVICE}:"
ERASURE_EVENT_TYPE = "AUTHTRAIL_SUBJECT_ERASED"
#: What a reader sees in place of a value whose key was destroyed, or that does not open.
ERASED = "[erased]"
UNREADABLE = "[unreadable]"

KEY_BYTES = 32
_NONCE_BYTES = 12
_AD_DOMAIN = b"authtrail-sealed-v1\n"
_KEY_ID = re.compile(r"[0-9a-f]{32}\Z")
# Subject keys kept in memory: every subject's is one file read away, so a bound costs
# little and keeps a tenant with millions of users from growing the worker without end.
_MAX_CACHED_KEYS = 100_000
_PSEUDONYM_DOMAIN = b"authtrail-pseudonym-v1\n"
_PSEUDONYM = re.compile(r"[0-9a-f]{64}\Z")


class SealedValueError(AuthtrailError):
    """A sealed value is malformed, or does not open (wrong key, moved, modified)."""


@dataclass(frozen=True)
class SubjectKey:
    """A data subject's key: ``key_id`` (32 lower-case hex, random) names it in values."""

    key_id: str
    key: bytes


class SubjectKeys(Protocol):
    """Where subject keys live (docs/PRIVACY.md, "Key store"): a directory by default,
    any KMS that can create, find and destroy a key per (tenant, subject) likewise."""

    def key_for(self, tenant_id: str, subject: str) -> SubjectKey:
        """The subject's current key, created (durably) if it has none."""

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


@dataclass(frozen=True)
class PrivacyPolicy:
    """Which fields of a tenant's events are sealed and which get a pseudonym."""

    sealed: frozenset[str] = frozenset(DEFAULT_SEALED)
    pseudonymised: frozenset[str] = frozenset(DEFAULT_PSEUDONYMISED)


@dataclass(frozen=True)
class PrivacyPolicies:
    """Per-tenant policies; a tenant in neither ``tenants`` nor covered by ``default``
    is stored as it arrives (privacy is opt-in: docs/PRIVACY.md)."""

    default: PrivacyPolicy | None = None
    tenants: Mapping[str, PrivacyPolicy | None] | None = None

    def for_tenant(self, tenant_id: str) -> PrivacyPolicy | None:
        if self.tenants is not None and tenant_id in self.tenants:
            return self.tenants[tenant_id]
        return self.default

    @classmethod
    def parse(cls, document: Mapping[str, Any], string_fields: Iterable[str]) -> PrivacyPolicies:
        """Policies from ``{"default": P|null, "tenants": {name: P|null}}``, where ``P`` is
        ``{"sealed": [...], "pseudonymised": [...]}`` (either omitted: the defaults).
        Raises :class:`ConfigurationError` naming a field that is not a string field."""
        allowed = frozenset(string_fields)

        def policy(where: str, value: Any) -> PrivacyPolicy | None:
            if value is None:
                return None
            if not isinstance(value, Mapping):
                raise ConfigurationError(f"privacy policy {where}: expected an object")
            lists = {}
            for key, default in (
                ("sealed", DEFAULT_SEALED),
                ("pseudonymised", DEFAULT_PSEUDONYMISED),
            ):
                names = value.get(key, default)
                if not isinstance(names, list | tuple) or not set(names) <= allowed:
                    raise ConfigurationError(
                        f"privacy policy {where}.{key}: {names!r} must list string fields "
                        f"of the event schema ({', '.join(sorted(allowed))})"
                    )
                lists[key] = frozenset(names)
            return PrivacyPolicy(lists["sealed"], lists["pseudonymised"])

        tenants = document.get("tenants") or {}
        if not isinstance(tenants, Mapping):
            raise ConfigurationError("privacy policy tenants: expected an object")
        return cls(
            policy("default", document.get("default")),
            {name: policy(f"tenants.{name}", value) for name, value in tenants.items()},
        )


def subject_of(event: Mapping[str, Any]) -> str:
    """The data subject whose key seals ``event``: ``id:<user_id>``, else
    ``name:<user_name>`` (a failed login for an unknown account), else ``unattributed``
    (one key per tenant for events about nobody in particular)."""
    if event.get("user_id"):
        return f"id:{event['user_id']}"
    name = event.get("user_name")
    if name and not is_sealed(name):
        return f"name:{name}"
    return "unattributed"


def associated_data(tenant_id: str, event_id: str, field: str, key_id: str) -> bytes:
    """What a sealed value is bound to (docs/INTEGRITY.md §2.1)."""
    return _AD_DOMAIN + b"".join(
        length_prefixed(part.encode("utf-8")) for part in (tenant_id, event_id, field, key_id)
    )


def seal_value(key: SubjectKey, tenant_id: str, event_id: str, field: str, text: str) -> str:
    """``text`` sealed under ``key`` for ``field`` of event ``event_id`` of ``tenant_id``.
    Deterministic: the same inputs give the same value."""
    ad = associated_data(tenant_id, event_id, field, key.key_id)
    nonce = hashlib.sha256(ad).digest()[:_NONCE_BYTES]
    sealed = AESGCMSIV(key.key).encrypt(nonce, text.encode("utf-8"), ad)
    return f"{SEALED_PREFIX}{key.key_id}:{_b64(nonce)}:{_b64(sealed)}"


def sealed_key_id(value: str) -> str:
    """The key id a sealed ``value`` names; raises :class:`SealedValueError` if malformed."""
    return _parse(value)[0]


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


def _parse(value: str) -> tuple[str, bytes, bytes]:
    parts = value[len(SEALED_PREFIX) :].split(":") if is_sealed(value) else []
    if len(parts) != 3 or not _KEY_ID.match(parts[0]):
        raise SealedValueError(f"not a sealed value: {value[:60]!r}")
    try:
        nonce, sealed = (base64.b64decode(part, validate=True) for part in parts[1:])
    except binascii.Error as exc:
        raise SealedValueError(f"sealed value is not valid base64: {exc}") from exc
    if len(nonce) != _NONCE_BYTES:
        raise SealedValueError(f"sealed value has a nonce of {len(nonce)} bytes")
    return parts[0], nonce, sealed


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def pseudonym(tenant_key: bytes, value: str) -> str:
    """The stable keyed pseudonym of ``value``: hex HMAC-SHA-256 under the tenant's key."""
    return hmac.new(tenant_key, _PSEUDONYM_DOMAIN + value.encode("utf-8"), "sha256").hexdigest()


def erasure_event(
    tenant_id: str, subject_pseudonym: str, key_ids: Iterable[str], now_micros: int
) -> dict[str, Any]:
    """The chained record of an erasure: which keys were destroyed, and the subject's
    pseudonym (never the subject itself, which the log must not keep in clear)."""
    destroyed = ",".join(sorted(key_ids))
    digest = hashlib.sha256(f"{tenant_id}\x00{destroyed}\x00{now_micros}".encode()).hexdigest()
    return {
        "event_id": f"{PRIVACY_SERVICE}:erase:{digest[:32]}",
        "tenant_id": tenant_id,
        "event_type": "OTHER",
        "event_type_other": ERASURE_EVENT_TYPE,
        "outcome": "SUCCESS",
        "occurred_at": now_micros,
        "service": PRIVACY_SERVICE,
        "message": f"subject keys destroyed: {destroyed or 'none'}",
        "attributes": {"key_ids": destroyed, "subject_pseudonym": subject_pseudonym},
    }


def erasure_record_problem(event: Mapping[str, Any]) -> str | None:
    """Why ``event`` is not a well-formed erasure record, else None.

    Well-formed is exactly what :func:`erasure_event` makes of the record's own tenant,
    ``attributes['key_ids']`` (one or more key ids, sorted, comma-separated),
    ``attributes['subject_pseudonym']`` and ``occurred_at``: the deterministic event id
    included, and no other field set. Whether the keys were really destroyed is the key
    store's to say (:meth:`Sealer.erasure_claim_problem`)."""
    attributes = event.get("attributes") or {}
    key_ids_text = attributes.get("key_ids")
    subject_pseudonym = attributes.get("subject_pseudonym")
    occurred_at = event.get("occurred_at")
    tenant_id = event.get("tenant_id")
    if not isinstance(key_ids_text, str) or not isinstance(subject_pseudonym, str):
        return "it lacks the attributes key_ids and subject_pseudonym"
    if not isinstance(occurred_at, int) or not isinstance(tenant_id, str):
        return "it lacks tenant_id or occurred_at"
    key_ids = key_ids_text.split(",")
    if not all(_KEY_ID.match(key_id) for key_id in key_ids) or len(set(key_ids)) != len(key_ids):
        return "attributes['key_ids'] must list distinct subject key ids (32 lower-case hex)"
    if not _PSEUDONYM.match(subject_pseudonym):
        return "attributes['subject_pseudonym'] is not a pseudonym (64 lower-case hex)"
    expected = erasure_event(tenant_id, subject_pseudonym, key_ids, occurred_at)
    differing = sorted(
        field for field in {*event, *expected} if event.get(field) != expected.get(field)
    )
    if differing:
        return f"it differs from the record `authtrail erase` sends in: {', '.join(differing)}"
    return None


class Sealer:
    """Applies each tenant's policy to events at admission (the worker's one hook)."""

    def __init__(self, policies: PrivacyPolicies, keys: SubjectKeys) -> None:
        self._policies, self._keys = policies, keys
        self._subject_keys: dict[tuple[str, str], SubjectKey] = {}
        self._pseudonym_keys: dict[str, bytes] = {}

    def seal(self, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` with its tenant's personal fields sealed and pseudonyms added (a new
        dict), or ``event`` itself when its tenant has no policy or it is a lockout
        decision (already checked to be the worker's own). Raises
        :class:`InvalidArgumentError` (the worker rejects the event) when input holds a
        value that looks sealed: it would read as ciphertext of a key nobody has. An
        erasure record drops the destroyed keys from the cache, so later events of the
        subject get a new key."""
        tenant_id, event_id = event["tenant_id"], event["event_id"]
        if event.get("service") == LOCKOUT_SERVICE:
            # Admission checked it is the worker's own decision: it holds only user_id,
            # pseudonyms and its trigger's sealed values, and must keep the leaf it owes.
            return event
        for field, value in event.items():
            if is_sealed(value):
                raise InvalidArgumentError(
                    f"field {field!r} starts with {SEALED_PREFIX!r}, which only authtrail's "
                    "own sealing may write"
                )
        if (
            event.get("service") == PRIVACY_SERVICE
            and event.get("event_type_other") == ERASURE_EVENT_TYPE
        ):  # admission let it pass: erasure_claim_problem found it true
            destroyed = set((event.get("attributes") or {}).get("key_ids", "").split(","))
            self._subject_keys = {
                at: key for at, key in self._subject_keys.items() if key.key_id not in destroyed
            }
        policy = self._policies.for_tenant(tenant_id)
        if policy is None:
            return event
        sealed = dict(event)
        attributes = dict(event.get("attributes") or {})
        for field in sorted(policy.pseudonymised):
            value = event.get(field)
            if isinstance(value, str):
                attributes[pseudonym_attribute(field)] = pseudonym(
                    self._pseudonym_key(tenant_id), value
                )
        subject = subject_of(event)
        for field in sorted(policy.sealed):
            value = event.get(field)
            if isinstance(value, str):
                key = self._subject_key(tenant_id, subject)
                sealed[field] = seal_value(key, tenant_id, event_id, field, value)
        sealed["attributes"] = attributes
        return sealed

    def erasure_claim_problem(self, event: Mapping[str, Any]) -> str | None:
        """Why erasure record ``event`` may not be chained, else None: it is not
        well-formed (:func:`erasure_record_problem`), or the key store has not destroyed
        every key it names as the key of the subject it names (a key still live, one that
        never existed, or another subject's). Raises
        :class:`ConfigurationError` only when the key store is damaged."""
        problem = erasure_record_problem(event)
        if problem is not None:
            return f"not a well-formed erasure record: {problem}"
        tenant_id, attributes = event["tenant_id"], event["attributes"]
        subject_pseudonym = attributes["subject_pseudonym"]
        standing = [
            key_id
            for key_id in attributes["key_ids"].split(",")
            if not self._keys.destroyed(tenant_id, key_id, subject_pseudonym)
        ]
        if standing:
            return (
                f"the privacy key store has not destroyed key {', '.join(standing)} of tenant "
                f"{tenant_id!r} as the key of subject pseudonym {subject_pseudonym} (the key "
                "is live, never existed, or was another subject's): no such erasure happened"
            )
        return None

    def _subject_key(self, tenant_id: str, subject: str) -> SubjectKey:
        key = self._subject_keys.get((tenant_id, subject))
        if key is None:
            if len(self._subject_keys) >= _MAX_CACHED_KEYS:
                self._subject_keys.clear()
            key = self._subject_keys[tenant_id, subject] = self._keys.key_for(tenant_id, subject)
        return key

    def _pseudonym_key(self, tenant_id: str) -> bytes:
        key = self._pseudonym_keys.get(tenant_id)
        if key is None:
            key = self._pseudonym_keys[tenant_id] = self._keys.pseudonym_key(tenant_id)
        return key
