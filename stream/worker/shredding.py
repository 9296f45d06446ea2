"""Crypto-shredding of personal fields and keyed pseudonyms (docs/PRIVACY.md). Pure.

A tenant's privacy policy (:mod:`authtrail.producers.sdk.sealing`) names *sealed* fields
and attribute keys, encrypted per data subject before the event's canonical leaf is
computed, and
*pseudonymised* fields, whose keyed HMAC goes into ``attributes['pseudonym.<field>']`` so
analysts can count per user or address without reading either. The leaf commits to the
ciphertext (leaf v2, docs/INTEGRITY.md §2.1), so destroying a subject's key
(:mod:`authtrail.privacy_keys`) makes their fields unreadable everywhere while every hash,
root, checkpoint and proof still verifies.

The seal itself is :mod:`authtrail.producers.sdk.sealed_values`, shared with producers
that seal at the source: the worker accepts a producer-sealed value, in a field or in
``attributes``, only when it opens under the subject's current key for a field or
attribute key the policy seals (:meth:`Sealer.seal`), and
chains it unchanged, byte for byte what it would have sealed itself.

Key I/O stays out: a :class:`SubjectKeys` (the directory store, or a KMS) is passed in.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.producers.sdk.sealed_values import (
    SEALED_PREFIX,
    SealedValueError,
    SubjectKey,
    SubjectKeys,
    open_value,
    pseudonym,
    sealed_key_id,
    subject_of,
)
from authtrail.producers.sdk.sealing import (
    ATTRIBUTE_FIELD_PREFIX,
    PrivacyPolicies,
    PrivacyPolicy,
    seal_fields,
    sealed_looking,
)
from authtrail.stream.core.canonical import SEALED_MARK
from authtrail.stream.core.handover import KEYS_SERVICE
from authtrail.stream.core.retention import NOTE_ATTRIBUTE, is_retention_event
from authtrail.stream.detection.decisions import LOCKOUT_SERVICE, pseudonym_attribute

#: The service of erasure records (a chained event, checked before it is: docs/PRIVACY.md).
PRIVACY_SERVICE = "authtrail-privacy"
#: Every erasure record's event_id starts with it; admission reserves it (and the service).
ERASURE_ID_PREFIX = f"{PRIVACY_SERVICE}:"
ERASURE_EVENT_TYPE = "AUTHTRAIL_SUBJECT_ERASED"
#: What a reader sees in place of a value whose key was destroyed, or that does not open.
ERASED = "[erased]"
UNREADABLE = "[unreadable]"

_KEY_ID = re.compile(r"[0-9a-f]{32}\Z")
# Subject keys kept in memory: every subject's is one file read away, so a bound costs
# little and keeps a tenant with millions of users from growing the worker without end.
# The least recently used goes first: clearing them all at the bound made a tenant with
# more active subjects than that read keys from disk three times as often (PRIVACY.md).
_MAX_CACHED_KEYS = 100_000
_PSEUDONYM = re.compile(r"[0-9a-f]{64}\Z")


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


def _seals(policy: PrivacyPolicy | None, name: str) -> bool:
    """Whether ``policy`` seals the field or ``attributes.<key>`` called ``name``."""
    if policy is None:
        return False
    if name.startswith(ATTRIBUTE_FIELD_PREFIX):
        return policy.seals_attribute(name[len(ATTRIBUTE_FIELD_PREFIX) :])
    return name in policy.sealed


# The services of the worker's own records, each admitted only when it is one (admission.py).
_OWN_SERVICES = frozenset({LOCKOUT_SERVICE, KEYS_SERVICE, PRIVACY_SERVICE})
_RETENTION_NOTE_FIELD = ATTRIBUTE_FIELD_PREFIX + NOTE_ATTRIBUTE


class Sealer:
    """Applies each tenant's policy to events at admission (the worker's one hook)."""

    def __init__(self, policies: PrivacyPolicies, keys: SubjectKeys) -> None:
        self._policies, self._keys = policies, keys
        self._subject_keys: OrderedDict[tuple[str, str], SubjectKey] = OrderedDict()
        self._pseudonym_keys: dict[str, bytes] = {}
        # No tenant has a policy (privacy is opt-in): the subject key cache stays empty.
        tenants = policies.tenants or {}
        self._seals_nothing = policies.default is None and all(
            policy is None for policy in tenants.values()
        )

    @property
    def seals_nothing(self) -> bool:
        """Whether no tenant has a policy: then :meth:`seal` changes only events holding
        a value that looks sealed (:meth:`leaves_unchanged`)."""
        return self._seals_nothing

    def leaves_unchanged(self, raw: bytes) -> bool:
        """Whether :meth:`seal` returns any event decoded from ``raw`` as it is, so the
        caller may skip it (a worker without a privacy policy, once per event): no tenant
        has a policy and no value can look sealed (Avro keeps strings verbatim)."""
        return self._seals_nothing and SEALED_MARK not in raw

    def seal(self, event: dict[str, Any], raw: bytes | None = None) -> dict[str, Any]:
        """``event`` with its tenant's personal fields and attributes sealed and pseudonyms
        added (a new dict), or ``event`` itself when its tenant has no policy or it is one
        of the worker's own records that admission vouched for (a lockout decision, a key
        hand-over, a true erasure record). A retention statement's note is never sealed
        (``verify`` reads it).

        A value a producer sealed at the source is kept as it came once
        :meth:`_producer_sealed` has opened it; its clear text feeds the pseudonyms like
        a clear value's would. Raises :class:`InvalidArgumentError` (the worker rejects
        the event) for any other value that looks sealed: it would read as ciphertext of
        a key nobody has, or of another subject, field or event. An erasure record drops
        the destroyed keys from the cache, so later events of the subject get a new key.

        ``raw``: the Avro bytes ``event`` was decoded from. Avro keeps strings verbatim, so
        when the sealed prefix occurs nowhere in them no value can look sealed, and the
        check of every value (a tenth of the worker's per-event cost) is skipped.
        """
        tenant_id, event_id = event["tenant_id"], event["event_id"]
        service = event.get("service")
        if service in _OWN_SERVICES:
            # Admission let a reserved service pass only for the worker's own record: a
            # decision (user_id, pseudonyms, its trigger's sealed values), a hand-over or a
            # true erasure record (key ids, a pseudonym). It must keep the leaf admission
            # checked (a decision's, a hand-over's is worked out before sealing), whatever
            # fields or attribute patterns the policy names.
            if service == PRIVACY_SERVICE and event.get("event_type_other") == ERASURE_EVENT_TYPE:
                destroyed = set((event.get("attributes") or {}).get("key_ids", "").split(","))
                kept = self._subject_keys.items()
                self._subject_keys = OrderedDict(
                    (at, key) for at, key in kept if key.key_id not in destroyed
                )
            return event
        policy = self._policies.for_tenant(tenant_id)
        opened = self._producer_sealed(event, policy) if raw is None or SEALED_MARK in raw else {}
        if policy is None:
            return event
        clear = {**event, **opened} if opened else event  # opened attributes never clash
        names = policy.to_seal(event)  # clear values only: producer-sealed ones stay
        if is_retention_event(event):
            names = [name for name in names if name != _RETENTION_NOTE_FIELD]
        sealed = (
            seal_fields(event, names, self._subject_key(tenant_id, subject_of(clear)),
                        tenant_id, event_id)
            if names else dict(event)
        )  # fmt: skip
        attributes = dict(sealed.get("attributes") or {})
        for field in sorted(policy.pseudonymised):
            value = clear.get(field)
            if isinstance(value, str):
                attributes[pseudonym_attribute(field)] = pseudonym(
                    self._pseudonym_key(tenant_id), value
                )
        sealed["attributes"] = attributes
        return sealed

    def _producer_sealed(
        self, event: Mapping[str, Any], policy: PrivacyPolicy | None
    ) -> dict[str, str]:
        """The clear text of each value of ``event`` a producer sealed (field -> text;
        an attribute as ``attributes.<key>``, the name its value is bound to).

        Each must be in a field or attribute ``policy`` seals, name a key the store holds (not an
        erased one), open for this tenant, event and field, and that key must be the
        current key of the event's subject (worked out from the opened values, as the
        producer did from the clear ones): then the value is exactly what :meth:`seal`
        would have written. Raises :class:`InvalidArgumentError` saying which rule failed.
        """
        found = sealed_looking(event)
        if not found:
            return {}
        tenant_id, event_id = event["tenant_id"], event["event_id"]
        outside = sorted(name for name in found if not _seals(policy, name))
        if outside:
            raise InvalidArgumentError(
                f"field {', '.join(map(repr, outside))} starts with {SEALED_PREFIX!r}, but "
                f"tenant {tenant_id!r}'s privacy policy does not seal it: only authtrail's "
                "sealing of a policy's fields (the worker's, or a producer's) writes such values"
            )
        try:
            key_ids = {sealed_key_id(value) for value in found.values()}
        except SealedValueError as exc:
            raise InvalidArgumentError(f"producer-sealed value: {exc}") from exc
        if len(key_ids) != 1:
            raise InvalidArgumentError(
                f"the sealed fields of event {event_id!r} name {len(key_ids)} keys; all are "
                "sealed under the one key of the event's subject"
            )
        key_id = key_ids.pop()
        key = self._named_key(tenant_id, key_id)
        try:
            opened = {
                field: open_value(key, tenant_id, event_id, field, value)
                for field, value in sorted(found.items())
            }
        except SealedValueError as exc:
            raise InvalidArgumentError(str(exc)) from exc
        subject = subject_of({**event, **opened})  # the attributes' names never clash
        if self._current_key(tenant_id, subject, key_id).key_id != key_id:
            raise InvalidArgumentError(
                f"event {event_id!r} is sealed under key {key_id} of tenant {tenant_id!r}, "
                "which is not its subject's current key (another subject's key, or one "
                "replaced since)"
            )
        return opened

    def _named_key(self, tenant_id: str, key_id: str) -> SubjectKey:
        """The live key ``key_id`` named by a producer-sealed value: asked of the store
        each time, so a key erased a moment ago is refused even while the cache holds it.
        A key id the store cannot find is refused, not taken for damage: it came from
        input."""
        try:
            key = self._keys.find(tenant_id, key_id)
        except ConfigurationError as exc:
            raise InvalidArgumentError(
                f"a sealed value names key {key_id}, which tenant {tenant_id!r}'s privacy key "
                f"store does not hold ({exc})"
            ) from exc
        if key is None:
            raise InvalidArgumentError(
                f"a sealed value names key {key_id} of tenant {tenant_id!r}, which an erasure "
                "destroyed: seal the subject's events under its current key"
            )
        return key

    def _current_key(self, tenant_id: str, subject: str, expected_id: str) -> SubjectKey:
        """The subject's current key; read again from the store when the cached one is
        not ``expected_id`` (a producer may have created the subject's key after an
        erasure the worker has not seen yet)."""
        key = self._subject_key(tenant_id, subject)
        if key.key_id != expected_id:
            key = self._subject_keys[tenant_id, subject] = self._keys.key_for(tenant_id, subject)
        return key

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
        cached, at = self._subject_keys, (tenant_id, subject)
        key = cached.get(at)
        if key is not None:
            cached.move_to_end(at)
            return key
        if len(cached) >= _MAX_CACHED_KEYS:
            cached.popitem(last=False)
        key = cached[at] = self._keys.key_for(tenant_id, subject)
        return key

    def _pseudonym_key(self, tenant_id: str) -> bytes:
        key = self._pseudonym_keys.get(tenant_id)
        if key is None:
            key = self._pseudonym_keys[tenant_id] = self._keys.pseudonym_key(tenant_id)
        return key
