"""``authtrail retain``: a tenant's oldest records deleted as a signed, verifiable operation.

Two steps, each safe to repeat (docs/PRIVACY.md, "Retention"):

1. **Record.** Unless the tenant's log already holds a statement for the cut, verify the
   tenant (a damaged log is never pruned: the evidence would go with it), build the
   statement from the store (:func:`authtrail.sinks.retention_store.statement_for_cut`), sign it
   with the log's signing key and send it to the events topic; the worker chains and
   signs it like any event. Wait until the sink has stored it.
2. **Delete.** With the statement stored, delete the records below the cut through a
   connection that may mutate ``events`` (:func:`authtrail.sinks.retention_store.delete_pruned`).
   ``authtrail up`` owns the embedded store and serves it read-only to other
   processes, so it runs both steps itself, on a schedule
   (:mod:`authtrail.retention_schedule`); a ``retain`` from another terminal records the
   statement and leaves the deletion to ``up``'s next run ("deletion pending" in
   ``verify`` meanwhile).
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authtrail.errors import ConfigurationError, VerificationError
from authtrail.events_topic import resolve_broker, send_own_record
from authtrail.settings import Settings
from authtrail.stream.core.note import Keyring
from authtrail.stream.core.rejection import is_rejection_tenant
from authtrail.stream.core.retention import retention_cut, retention_event, sign_retention

if TYPE_CHECKING:
    from authtrail.sinks.backend import ClickHouseBackend

_POLL_SECONDS = 0.5
DAY_MICROS = 86_400 * 1_000_000


@dataclass(frozen=True)
class RetentionPeriods:
    """Retention periods in days from the privacy policy file; None keeps forever."""

    default: int | None = None
    tenants: Mapping[str, int | None] = field(default_factory=dict)
    #: Every rejection log's (``authtrail-rejected-<partition>``): input refused before
    #: sealing holds clear text, so it goes after this period too.
    rejected: int | None = None

    def of(self, name: str) -> int | None:
        """The period of tenant or rejection log ``name``."""
        if name in self.tenants:
            return self.tenants[name]
        return self.rejected if is_rejection_tenant(name) else self.default


def retention_periods(path: Path | None) -> RetentionPeriods:
    """The retention periods of the privacy policy file (``{"retention_days": {"default":
    D, "rejected": D, "tenants": {"acme": D}}}``; a tenant's ``null`` keeps it forever
    whatever the default; ``rejected`` is the default's unless given). No file, or no
    ``retention_days``: keep everything forever. Raises ConfigurationError for an
    unreadable file or a period that is not whole days >= 1."""
    if path is None:
        return RetentionPeriods()
    try:
        text = path.read_text(encoding="utf-8")
        document = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError(f"cannot read privacy policy file {path}: {exc}") from exc
    periods = document.get("retention_days") if isinstance(document, dict) else None
    if periods is None:
        return RetentionPeriods()
    if not isinstance(periods, dict) or not isinstance(periods.get("tenants", {}), dict):
        raise ConfigurationError(f"{path}: retention_days must be {{default, rejected, tenants}}")
    tenants: dict[str, int | None] = periods.get("tenants", {})
    default = periods.get("default")
    rejected = periods.get("rejected", default)
    for name, days in [("default", default), ("rejected", rejected), *tenants.items()]:
        if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 1):
            raise ConfigurationError(f"{path}: retention of {name!r} must be whole days >= 1")
    return RetentionPeriods(default, dict(tenants), rejected)


def retention_days(path: Path | None, tenant_id: str) -> int | None:
    """The tenant's (or rejection log's) retention period in days from the privacy
    policy file (:func:`retention_periods`); None: keep forever."""
    return retention_periods(path).of(tenant_id)


def cut_older_than(backend: ClickHouseBackend, tenant_id: str, days: int, now_micros: int) -> int:
    """The cut for "records older than ``days`` days" (0: fewer than 256 are). Raises
    ConfigurationError when ``days`` < 1."""
    from authtrail.sinks.retention_store import first_seq_since

    if days < 1:
        raise ConfigurationError(f"a retention period must be at least 1 day, got {days}")
    return retention_cut(first_seq_since(backend, tenant_id, now_micros - days * DAY_MICROS))


@dataclass(frozen=True)
class RetentionOutcome:
    """What ``retain`` did: the cut, the record holding its statement (None: not stored
    yet), whether this run sent it, and the records deleted (None: not this run)."""

    tenant_id: str
    cut: int
    statement_seq: int | None
    sent: bool
    deleted: int | None

    def report(self) -> dict[str, Any]:
        return dict(self.__dict__)


def retain(
    settings: Settings, tenant_id: str, cut: int, keyring: Keyring, *, wait_seconds: float
) -> RetentionOutcome:
    """Record (if needed) and carry out the deletion of records ``1..cut`` of
    ``tenant_id``, through the store ``settings`` name. Requires ``cut`` a positive
    multiple of 256.

    Raises VerificationError when the tenant does not verify (nothing is pruned),
    RetentionUnavailable when the cut is beyond the signed log or its tiles are not
    built, ConfigurationError without a broker or signing key when one is needed.
    """
    from authtrail.sinks.service import open_backend, running_endpoint

    reader = open_backend(settings, read_only=True)
    try:
        seq, sent = record_retention(settings, reader, tenant_id, cut, keyring, wait_seconds)
    finally:
        reader.close()
    if seq is None or (not settings.clickhouse_url and running_endpoint(settings)):
        return RetentionOutcome(tenant_id, cut, seq, sent, None)
    writer = open_backend(settings)
    try:
        return _delete(writer, settings, tenant_id, cut, keyring, seq, sent)
    finally:
        writer.close()


def retain_in_store(
    settings: Settings, backend: ClickHouseBackend, tenant_id: str, cut: int,
    keyring: Keyring, *, wait_seconds: float, stop: Callable[[], bool] = lambda: False,
    delete: bool = True,
) -> RetentionOutcome:  # fmt: skip
    """As :func:`retain`, both steps through ``backend``, which must be allowed to mutate
    ``events`` (the embedded store of the process that owns it, or a server connection
    with ``ALTER DELETE`` on ``events``) unless ``delete`` is false: then only the
    statement is recorded. Stops waiting for the statement once ``stop()`` is true (the
    outcome then has no statement seq)."""
    seq, sent = record_retention(settings, backend, tenant_id, cut, keyring, wait_seconds, stop)
    if seq is None or not delete:
        return RetentionOutcome(tenant_id, cut, seq, sent, None)
    return _delete(backend, settings, tenant_id, cut, keyring, seq, sent)


def record_retention(
    settings: Settings, backend: ClickHouseBackend, tenant_id: str, cut: int,
    keyring: Keyring, wait_seconds: float, stop: Callable[[], bool] = lambda: False,
) -> tuple[int | None, bool]:  # fmt: skip
    """Step 1: the seq of the stored statement covering ``cut`` (None: not stored within
    ``wait_seconds``), and whether this call sent it."""
    origin = settings.log_origin
    seq = _statement_seq(backend, tenant_id, cut, keyring, origin)
    if seq is not None:
        return seq, False
    _send_statement(settings, backend, tenant_id, cut, keyring)
    return _wait_for_statement(backend, tenant_id, cut, keyring, origin, wait_seconds, stop), True


def _delete(
    backend: ClickHouseBackend, settings: Settings, tenant_id: str, cut: int,
    keyring: Keyring, seq: int, sent: bool,
) -> RetentionOutcome:  # fmt: skip
    from authtrail.sinks.retention_store import delete_pruned

    cut, deleted = delete_pruned(backend, tenant_id, cut, keyring, settings.log_origin)
    return RetentionOutcome(tenant_id, cut, seq, sent, deleted)


def _statement_seq(
    backend: ClickHouseBackend, tenant_id: str, cut: int, keyring: Keyring, origin: str
) -> int | None:
    from authtrail.sinks.retention_store import stored_statements

    found = [
        (stored.statement.pruned_size, stored.seq)
        for stored in stored_statements(backend, tenant_id, keyring, origin)
        if stored.statement.pruned_size >= cut
    ]
    return max(found)[1] if found else None  # the newest cut: the one deleted to


def _send_statement(
    settings: Settings, backend: ClickHouseBackend, tenant_id: str, cut: int, keyring: Keyring
) -> None:
    from authtrail.keys import load_signer
    from authtrail.sinks.retention_store import statement_for_cut
    from authtrail.sinks.verify_store import verify_store

    verdicts = list(verify_store(backend, keyring, settings.log_origin, tenant_id=tenant_id))
    if not verdicts:
        raise ConfigurationError(f"the store holds no tenant {tenant_id!r}")
    if verdicts[0].damage:
        raise VerificationError(
            f"tenant {tenant_id!r} does not verify ({verdicts[0].damage} at seq "
            f"{verdicts[0].seq}: {verdicts[0].detail}); a damaged log is not pruned"
        )
    signer = load_signer(settings.signing_key_path)  # before the broker: a missing key is usage
    statement = statement_for_cut(backend, tenant_id, cut, settings.log_origin,
                                  time.time_ns() // 1000)  # fmt: skip
    record = retention_event(tenant_id, sign_retention(statement, signer), statement)
    settings = resolve_broker(settings, "retain")
    send_own_record(
        settings, record,
        undelivered=f"the retention statement was not delivered to {settings.events_topic}; "
        "nothing was deleted: run the same retain again",
    )  # fmt: skip


def _wait_for_statement(
    backend: ClickHouseBackend, tenant_id: str, cut: int, keyring: Keyring, origin: str,
    wait_seconds: float, stop: Callable[[], bool],
) -> int | None:  # fmt: skip
    deadline = time.monotonic() + wait_seconds
    while True:
        seq = _statement_seq(backend, tenant_id, cut, keyring, origin)
        if seq is not None or time.monotonic() >= deadline or stop():
            return seq
        time.sleep(_POLL_SECONDS)
