"""Privacy policies, and sealing at the source: personal fields encrypted in the producer.

A tenant's privacy policy (docs/PRIVACY.md) names *sealed* fields, encrypted per data
subject, and *pseudonymised* fields, which get a keyed HMAC. The worker applies it to
whatever arrives in clear; a producer built with ``sealing=`` (:class:`SourceSealing`)
seals the policy's fields itself, before the event is encoded, so clear text never
reaches Kafka (the input topic, its replicas, consumers' copies). Both seal with
:mod:`authtrail.producers.sdk.sealed_values` under keys of the same store, so the values
are byte for byte the worker's own and a retry is still a duplicate; the worker opens
each producer-sealed value to check it, and computes the pseudonyms (the producer never
holds the tenant's pseudonym key).

Needs ``cryptography``: ``pip install 'authtrail-producer[sealing]'``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authtrail import schemas
from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.producers.sdk.events import event_ids
from authtrail.producers.sdk.sealed_values import (
    SEALED_PREFIX,
    SubjectKeySource,
    is_sealed,
    seal_value,
    subject_of,
)

#: No e-mail field exists in schemas/auth_event.avsc: an e-mail arrives as user_name.
DEFAULT_SEALED = ("client_ip", "user_agent", "user_name")
DEFAULT_PSEUDONYMISED = ("client_ip", "user_name")


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


def string_fields() -> tuple[str, ...]:
    """The fields of ``auth_event.avsc`` whose values are strings (nullable or not): the
    only fields a policy may seal or pseudonymise (an enum or a number cannot hold
    ciphertext)."""
    fields = schemas.load_schema(schemas.AUTH_EVENT)["fields"]
    return tuple(
        field["name"]
        for field in fields
        if field["type"] == "string" or field["type"] == ["null", "string"]
    )


def load_privacy_policies(path: Path) -> PrivacyPolicies:
    """The policies in ``path`` (``.json`` or ``.toml``); :class:`ConfigurationError` if
    it cannot be read or names a field that is not a string field of the event. The
    worker, ``authtrail`` commands and sealing producers all read the file with this."""
    try:
        text = path.read_text(encoding="utf-8")
        document = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError(f"cannot read privacy policy file {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigurationError(f"privacy policy file {path}: expected an object")
    try:
        return PrivacyPolicies.parse(document, string_fields())
    except ConfigurationError as exc:
        raise ConfigurationError(f"privacy policy file {path}: {exc}") from exc


class SourceSealing:
    """Seals each event's personal fields in the producer (``AuditProducer(sealing=...)``).

    ``keys`` is the worker's key store, or any
    :class:`~authtrail.producers.sdk.sealed_values.SubjectKeySource` over the same keys (a
    KMS client that can only get a subject's current key). The subject's key is
    asked for on every event, not cached, so an event sent after ``authtrail erase``
    gets the subject's new key (the worker refuses a value sealed under an erased key).
    """

    def __init__(self, policies: PrivacyPolicies, keys: SubjectKeySource) -> None:
        self._policies, self._keys = policies, keys

    @classmethod
    def from_files(cls, key_store_dir: str | Path, policy_file: str | Path) -> SourceSealing:
        """Sealing with the directory key store at ``key_store_dir`` (the worker's
        ``<data_dir>/privacy``) and the worker's privacy policy file. Raises
        :class:`ConfigurationError` for an unreadable policy file."""
        from authtrail.privacy_keys import DirectoryKeyStore  # the store, only when used

        return cls(load_privacy_policies(Path(policy_file)), DirectoryKeyStore(Path(key_store_dir)))

    def seal(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """``event`` with its tenant's sealed fields encrypted (a new dict), or ``event``
        itself when the tenant has no policy or nothing to seal.

        Raises :class:`InvalidArgumentError` when ``event`` lacks its ids or already holds
        a sealed-looking value (only sealing writes those), and
        :class:`ConfigurationError` or OSError when the key store fails; nothing is sent
        then."""
        event_id, tenant_id = event_ids(event)
        for field, value in event.items():
            if is_sealed(value):
                raise InvalidArgumentError(
                    f"event {event_id!r}: field {field!r} starts with {SEALED_PREFIX!r}; "
                    "pass clear values, the producer seals them"
                )
        policy = self._policies.for_tenant(tenant_id)
        if policy is None:
            return event
        fields = [field for field in sorted(policy.sealed) if isinstance(event.get(field), str)]
        if not fields:
            return event
        key = self._keys.key_for(tenant_id, subject_of(event))
        sealed = dict(event)
        for field in fields:
            sealed[field] = seal_value(key, tenant_id, event_id, field, event[field])
        return sealed
