"""Privacy policies, and sealing at the source: personal fields encrypted in the producer.

A tenant's privacy policy (docs/PRIVACY.md) names *sealed* fields and attribute keys,
encrypted per data subject, and *pseudonymised* fields, which get a keyed HMAC. The
worker applies it to whatever arrives in clear; a producer built with ``sealing=``
(:class:`SourceSealing`) seals the policy's fields and attributes itself, before the
event is encoded, so clear text never reaches Kafka (the input topic, its replicas,
consumers' copies). Both seal with :mod:`authtrail.producers.sdk.sealed_values` under
keys of the same store, so the values are byte for byte the worker's own and a retry is
still a duplicate; the worker opens each producer-sealed value to check it, and computes
the pseudonyms (the producer never holds the tenant's pseudonym key).

Needs ``cryptography``: ``pip install 'authtrail-producer[sealing]'``.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from authtrail import schemas
from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.producers.sdk.events import event_ids
from authtrail.producers.sdk.sealed_values import (
    SEALED_PREFIX,
    SubjectKey,
    SubjectKeySource,
    is_sealed,
    seal_value,
    subject_of,
)

#: No e-mail field exists in schemas/auth_event.avsc: an e-mail arrives as user_name.
#: ``message`` because the sshd adapter's repeats the log line (user and address): a
#: default must leave nothing of an erased subject readable, readability costs less.
DEFAULT_SEALED = ("client_ip", "message", "user_agent", "user_name")
DEFAULT_PSEUDONYMISED = ("client_ip", "user_name")
#: The ``attributes`` keys where authtrail's own adapters copy a user's name, e-mail,
#: address or agent (found in the real samples; docs/PRIVACY.md explains each). ``*``
#: matches any characters, dots included.
DEFAULT_SEALED_ATTRIBUTES = (
    # producers/sshd.py: the whole syslog line, PAM's remote host and users, sudo's PWD
    "raw", "rhost", "ruser", "logname", "by", "pwd",
    # Keycloak: the logging listener's key=value text, an admin event's user JSON,
    # user attributes, e-mail and name details
    "message", "representation", "userAttributes.*", "*email", "*first_name", "*last_name",
    # Okta: the address chains (addresses and their geolocation), the client's location,
    # display names and targets' login names
    "client.ipChain.*", "request.ipChain.*", "client.geographicalContext.*",
    "actor.displayName", "target.*.alternateId", "target.*.displayName",
    # Auth0: the user name of each prompt
    "*details.prompts.*.user_name",
    # CloudTrail: ARNs and MFA device ids that embed the IAM user name, user names
    "userIdentity.arn", "additionalEventData.MFAIdentifier", "requestParameters.userName",
    "responseElements.accessKey.userName", "responseElements.user.userName",
    "responseElements.user.arn",
)  # fmt: skip
#: Sealed attribute values are bound to this field name plus the key (docs/INTEGRITY.md
#: §2.1): no top-level field name has a dot, so the two never collide.
ATTRIBUTE_FIELD_PREFIX = "attributes."
#: The worker's own pseudonyms (stream/worker/shredding.py): never sealed, whatever a
#: pattern matches (a pseudonym is what analysts correlate on without reading).
PSEUDONYM_ATTRIBUTE_PREFIX = "pseudonym."


def attribute_field(key: str) -> str:
    """The field name a sealed value of ``attributes[key]`` is bound to."""
    return ATTRIBUTE_FIELD_PREFIX + key


@dataclass(frozen=True)
class PrivacyPolicy:
    """Which fields of a tenant's events are sealed and which get a pseudonym, and which
    ``attributes`` keys are sealed (exact keys, or patterns where ``*`` matches any run of
    characters, dots included)."""

    sealed: frozenset[str] = frozenset(DEFAULT_SEALED)
    pseudonymised: frozenset[str] = frozenset(DEFAULT_PSEUDONYMISED)
    sealed_attributes: frozenset[str] = frozenset(DEFAULT_SEALED_ATTRIBUTES)

    @cached_property
    def _attribute_pattern(self) -> re.Pattern[str]:
        alternatives = (
            ".*".join(map(re.escape, pattern.split("*")))
            for pattern in sorted(self.sealed_attributes)
        )
        return re.compile("|".join(f"(?:{alternative})" for alternative in alternatives) or "(?!)")

    def seals_attribute(self, key: str) -> bool:
        """Whether ``attributes[key]`` is sealed: a pattern matches all of ``key``, and it
        is not one of the worker's pseudonyms."""
        return not key.startswith(PSEUDONYM_ATTRIBUTE_PREFIX) and bool(
            self._attribute_pattern.fullmatch(key)
        )

    def to_seal(self, event: Mapping[str, Any]) -> list[str]:
        """The field names (:func:`attribute_field` for attributes) of ``event``'s clear
        string values this policy seals, in order: fields, then attribute keys."""
        names = [
            name
            for name in sorted(self.sealed)
            if isinstance(value := event.get(name), str) and not is_sealed(value)
        ]
        attributes = event.get("attributes") or {}
        names += [
            attribute_field(key)
            for key in sorted(attributes)
            if isinstance(value := attributes[key], str)
            and not is_sealed(value)
            and self.seals_attribute(key)
        ]
        return names


def sealed_looking(event: Mapping[str, Any]) -> dict[str, str]:
    """Every value of ``event`` that starts with the sealed prefix, by the field name it
    must be bound to: top-level fields by name, attributes as ``attributes.<key>``."""
    found = {name: value for name, value in event.items() if is_sealed(value)}
    attributes = event.get("attributes")
    if isinstance(attributes, Mapping):
        found.update(
            (attribute_field(key), value) for key, value in attributes.items() if is_sealed(value)
        )
    return found


def seal_fields(
    event: Mapping[str, Any], names: Iterable[str], key: SubjectKey, tenant_id: str, event_id: str
) -> dict[str, Any]:
    """``event`` (a new dict, with a new ``attributes`` map) with the values ``names``
    (as :meth:`PrivacyPolicy.to_seal` gives them) sealed under ``key``."""
    sealed = dict(event)
    attributes = dict(event.get("attributes") or {})
    for name in names:
        if name.startswith(ATTRIBUTE_FIELD_PREFIX):
            attribute = name[len(ATTRIBUTE_FIELD_PREFIX) :]
            attributes[attribute] = seal_value(
                key, tenant_id, event_id, name, attributes[attribute]
            )
        else:
            sealed[name] = seal_value(key, tenant_id, event_id, name, event[name])
    if "attributes" in event or attributes:
        sealed["attributes"] = attributes
    return sealed


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
        ``{"sealed": [...], "pseudonymised": [...], "sealed_attributes": [...]}`` (any
        omitted: the defaults). Raises :class:`ConfigurationError` naming a field that is
        not a string field, or a ``sealed_attributes`` entry that is not a non-empty
        string."""
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
            patterns = value.get("sealed_attributes", DEFAULT_SEALED_ATTRIBUTES)
            if not isinstance(patterns, list | tuple) or not all(
                isinstance(pattern, str) and pattern for pattern in patterns
            ):
                raise ConfigurationError(
                    f"privacy policy {where}.sealed_attributes: {patterns!r} must list "
                    "attribute keys (non-empty strings; '*' matches any characters)"
                )
            return PrivacyPolicy(lists["sealed"], lists["pseudonymised"], frozenset(patterns))

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
        """``event`` with its tenant's sealed fields and attributes encrypted (a new dict,
        attribute values bound to ``attributes.<key>``), or ``event``
        itself when the tenant has no policy or nothing to seal.

        Raises :class:`InvalidArgumentError` when ``event`` lacks its ids or already holds
        a sealed-looking value (only sealing writes those), and
        :class:`ConfigurationError` or OSError when the key store fails; nothing is sent
        then."""
        event_id, tenant_id = event_ids(event)
        for name in sealed_looking(event):
            raise InvalidArgumentError(
                f"event {event_id!r}: field {name!r} starts with {SEALED_PREFIX!r}; "
                "pass clear values, the producer seals them"
            )
        policy = self._policies.for_tenant(tenant_id)
        if policy is None:
            return event
        names = policy.to_seal(event)
        if not names:
            return event
        key = self._keys.key_for(tenant_id, subject_of(event))
        return seal_fields(event, names, key, tenant_id, event_id)
