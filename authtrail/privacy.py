"""Privacy adapters: the policy file, ``erase``, ``hash`` and revealing sealed columns.

The decisions (what is sealed, how, what an erasure record says) are
:mod:`authtrail.stream.worker.shredding`'s; this module reads files, talks to Kafka and converts
tables. Reading sealed values needs the key store (``<data_dir>/privacy``): whoever can read it
may reveal, whoever cannot sees ciphertext and pseudonyms (docs/PRIVACY.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from authtrail.errors import ConfigurationError
from authtrail.events_topic import send_own_record
from authtrail.privacy_keys import DirectoryKeyStore, Erasure
from authtrail.producers.sdk.sealed_values import (
    SealedValueError,
    SubjectKey,
    is_sealed,
    open_value,
    pseudonym,
    sealed_key_id,
)
from authtrail.producers.sdk.sealing import (
    PrivacyPolicies,
    SourceSealing,
    load_privacy_policies,
)
from authtrail.settings import Settings
from authtrail.stream.worker.shredding import ERASED, UNREADABLE, Sealer, erasure_event

_SUBJECT_KINDS = ("id:", "name:")


def new_sealer(settings: Settings) -> Sealer:
    """The worker's sealer. Without a privacy policy file it seals nothing, but still
    refuses input that looks sealed (stream/worker/shredding.py)."""
    path = settings.privacy_policy_file
    policies = load_privacy_policies(path) if path is not None else PrivacyPolicies()
    return Sealer(policies, DirectoryKeyStore(settings.privacy_dir))


def source_sealing(settings: Settings) -> SourceSealing:
    """Sealing at the source for authtrail's own producers (``ingest --seal``,
    ``ingest-http --seal``, ``up``): the worker's policy file and key store, which must be
    the ones the worker uses (docs/PRIVACY.md, "Sealing at the source")."""
    if settings.privacy_policy_file is None:
        raise ConfigurationError(
            "--seal needs the worker's privacy policy (AUTHTRAIL_PRIVACY_POLICY_FILE)"
        )
    return SourceSealing.from_files(settings.privacy_dir, settings.privacy_policy_file)


def check_subject(subject: str) -> str:
    """``subject`` if it is ``id:<user_id>``, ``name:<user_name>`` or ``unattributed``."""
    if subject == "unattributed" or (
        subject.startswith(_SUBJECT_KINDS) and subject.split(":", 1)[1]
    ):
        return subject
    raise ConfigurationError(
        f"subject {subject!r} must be id:<user_id>, name:<user_name> or unattributed "
        "(docs/PRIVACY.md, 'Data subjects')"
    )


@dataclass(frozen=True)
class ErasureOutcome:
    erasure: Erasure
    record: dict[str, Any] | None  # the erasure event sent; None: nothing was ever erased


def erase_subject(settings: Settings, tenant_id: str, subject: str) -> ErasureOutcome:
    """Destroy ``subject``'s key, then send the erasure record to the events topic (the
    worker chains and signs it). Run again after a failed send, it sends the same record:
    its content follows from the erasure, so the sequencer keeps one."""
    store = DirectoryKeyStore(settings.privacy_dir)
    erasure = store.erase(tenant_id, check_subject(subject))
    key_ids = erasure.destroyed or erasure.already
    if not key_ids:
        return ErasureOutcome(erasure, None)
    record = erasure_event(
        tenant_id, pseudonym(store.pseudonym_key(tenant_id), subject), key_ids,
        erasure.erased_at,
    )  # fmt: skip
    send_own_record(
        settings, record,
        undelivered=f"the key is destroyed, but the erasure record was not delivered to "
        f"{settings.events_topic}; run the same erase again to send it",
    )  # fmt: skip
    return ErasureOutcome(erasure, record)


def hash_value(settings: Settings, tenant_id: str, value: str) -> str:
    """The pseudonym ``tenant_id``'s events carry for ``value`` (``authtrail hash``)."""
    return pseudonym(
        DirectoryKeyStore(settings.privacy_dir).existing_pseudonym_key(tenant_id), value
    )


def reveal_table(table: pa.Table, store: DirectoryKeyStore) -> pa.Table:
    """``table`` with every sealed string value opened, :data:`ERASED` where the key was
    destroyed and :data:`UNREADABLE` where it does not open (moved, modified, or copied
    from another event as lockout decisions do). A string column is opened as the field
    its name says (select ``attributes['raw'] AS `attributes.raw``` for one attribute); a
    map column's values as ``<column>.<key>`` (the ``attributes`` map whole). Sealed
    values need the ``tenant_id`` and ``event_id`` columns beside them; raises
    :class:`ConfigurationError` without them, or when a key is lost."""
    names = table.column_names
    tenants = table.column("tenant_id").to_pylist() if "tenant_id" in names else None
    event_ids = table.column("event_id").to_pylist() if "event_id" in names else None
    keys: dict[tuple[str, str], SubjectKey | None] = {}

    def opened(tenant_id: str, event_id: str, field: str, value: Any) -> Any:
        if not is_sealed(value):
            return value
        try:
            at = (tenant_id, sealed_key_id(value))
            if at not in keys:
                keys[at] = store.find(*at)
            key = keys[at]
            return ERASED if key is None else open_value(key, tenant_id, event_id, field, value)
        except SealedValueError:
            return UNREADABLE

    def bound() -> tuple[list[Any], list[Any]]:  # what the values are bound to
        if tenants is None or event_ids is None:
            raise ConfigurationError("--reveal needs the tenant_id and event_id columns selected")
        return tenants, event_ids

    for index, field in enumerate(table.column_names):
        column = table.column(index)
        if _is_string(column.type):
            values = column.to_pylist()
            if not any(is_sealed(value) for value in values):
                continue
            revealed: list[Any] = [
                opened(tenant, event_id, field, value)
                for tenant, event_id, value in zip(*bound(), values, strict=True)
            ]
        elif pa.types.is_map(column.type) and _is_string(column.type.item_type):
            maps = column.to_pylist()  # each a list of (key, value), or None
            if not any(is_sealed(value) for entries in maps for _, value in entries or ()):
                continue
            revealed = [
                None if entries is None else [
                    (key, opened(tenant, event_id, f"{field}.{key}", value))
                    for key, value in entries
                ]
                for tenant, event_id, entries in zip(*bound(), maps, strict=True)
            ]  # fmt: skip
        else:
            continue
        table = table.set_column(index, field, pa.array(revealed, type=column.type))
    return table


def _is_string(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_string(data_type) or pa.types.is_large_string(data_type))
