"""One settings object, built once at the entry point and passed down.

Every option has a default fit for the one-machine embedded mode and can be set by an
``AUTHTRAIL_<NAME>`` environment variable (upper-case field name) or a CLI flag; the CLI
flag wins. Secrets (passwords inside URLs) never appear in ``repr`` or logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from authtrail.errors import ConfigurationError

ENV_PREFIX = "AUTHTRAIL_"


def redact_url(url: str | None) -> str | None:
    """Return ``url`` with any password replaced by ``***`` (for logs and messages)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Settings:
    """Everything authtrail can be configured with.

    ``bootstrap_servers`` None means: start the local broker. ``clickhouse_url`` None means:
    embedded ClickHouse (chdb) in ``data_dir / "clickhouse"``.
    """

    data_dir: Path = Path("authtrail-data")
    bootstrap_servers: str | None = None
    clickhouse_url: str | None = field(default=None, repr=False)
    schema_registry_url: str | None = None
    # Topics: created explicitly with these partition counts (Faust tables need them equal).
    events_topic: str = "authtrail.events"
    chained_topic: str = "authtrail.chained"
    checkpoints_topic: str = "authtrail.checkpoints"
    dead_letter_topic: str = "authtrail.dead-letter"
    # ACCOUNT_LOCKED / ACCOUNT_UNLOCKED / BRUTE_FORCE_SUSPECTED for enforcement services.
    lockouts_topic: str = "authtrail.lockouts"
    # The sequencer's state snapshots, so a restart replays only what follows the newest.
    # They belong to one chained topic: empty means "<chained_topic>.snapshots".
    snapshots_topic: str = ""
    # Brute-force policy (JSON or TOML, docs/LOCKOUT.md); None: Keycloak's defaults.
    lockout_policy_file: Path | None = None
    # Which tenants' personal fields are sealed and pseudonymised (JSON, docs/PRIVACY.md);
    # None: none are. Subject keys live in <data_dir>/privacy.
    privacy_policy_file: Path | None = None
    # How long the topics authtrail never recovers from (events, dead-letter, lockouts)
    # keep records, in ms, set when they are created: they hold clear text (input before
    # sealing, docs/PRIVACY.md). It must outlast any worker outage (docs/RELIABILITY.md).
    # 0: leave it to the cluster's default. The chained, checkpoints and snapshots topics
    # are the sequencer's state and are kept forever whatever this says.
    topic_retention_ms: int = 7 * 86_400_000
    partitions: int = 4
    # Consumer groups are "<consumer_group>-sequencer" (Faust app id) and "<consumer_group>-sink".
    consumer_group: str = "authtrail"
    replication_factor: int = 1
    # Batches close after this many events or this many milliseconds, whichever first.
    # 250 ms: an event is signed ~1 s after it happened at half the machine's capacity
    # (1.6-2.4 s at 1 000 ms), for ~5 % more worker CPU at 10 000 tenants (more
    # signatures); docs/PERFORMANCE.md "Latency and the batch intervals".
    batch_size: int = 1000
    batch_interval_ms: int = 250
    # At most this many checkpoints a second per worker for batches closed by the
    # interval, oldest batch first (0: no cap): with many sparse tenants the interval
    # alone signs about one checkpoint per event (stream/core/signing_budget.py). At
    # 10 000 busy tenants each is then signed every ~5 s instead of every 250 ms; at
    # 100 tenants (400 a second) it never binds.
    max_checkpoints_per_second: int = 2000
    # A partition's state is snapshotted after this many chained records, and at least one
    # per 16 bytes of its last snapshot (stream/worker/snapshotter.py; 0: never, every
    # restart then replays the partition's whole history).
    snapshot_every: int = 50_000
    # Checkpoint origin line is "<log_origin>/<tenant_id>" (C2SP tlog-checkpoint).
    # The sink inserts after this many rows or this many milliseconds, whichever first.
    # Each insert costs the engine milliseconds whatever its size (docs/PERFORMANCE.md):
    # at high rates (a backlog) inserts of 100 000 rows; at low ones the interval decides:
    # 250 ms keeps p99 event-to-queryable under 2 s at half capacity (1.9-3.7 s at 1 000
    # ms) for ~20-30 % more store CPU per row at those rates (more, smaller inserts).
    sink_batch_rows: int = 100_000
    sink_batch_ms: int = 250
    # The sequencer's output producer may hold records this long to fill a request while
    # it publishes a batch (each request costs a broker far more than a record). No
    # latency cost: the flush that ends every batch sends at once. 20 ms measured best
    # of 1/5/20 (docs/PERFORMANCE.md).
    producer_linger_ms: int = 20
    # The worker packs each step's chained records of a partition into messages of at most
    # this many bytes of records (schemas/chained_batch.avsc); keep it under the broker's
    # message.max.bytes (1 MB by default).
    chained_batch_bytes: int = 512 * 1024
    # Prometheus metrics on http://<host>:<port>/metrics (authtrail/metrics.py); 0: off.
    worker_metrics_port: int = 0
    sink_metrics_port: int = 0
    log_origin: str = "authtrail.local"
    signing_key: Path | None = None
    # During a key rotation: the signer key being replaced. It co-signs each tenant's
    # first checkpoint after the switch (the hand-over); drop it once every tenant has
    # one (docs/INTEGRITY.md, key rotation).
    handover_key: Path | None = None
    # The keyring of every key that signed this log (one verifier key a line, retired
    # ones marked): the worker trusts it to re-read checkpoints old keys signed; `verify`
    # uses it when no --key is given. None: <data_dir>/keys/authtrail.keyring.
    keyring: Path | None = None
    verifier_keys: tuple[Path, ...] = ()
    # The sink also publishes every stored checkpoint, and signed tenant directories, into
    # this folder: a mount of write-once storage (docs/DEPLOYMENT.md). None: it does not
    # (`authtrail up` then uses <data_dir>/published).
    publication_dir: Path | None = None
    # A tenant directory is published at most this often (only after new checkpoints).
    publication_interval_ms: int = 10_000
    # Signs the tenant directories; None: the signing key (signing_key_path).
    publisher_key: Path | None = None
    # Witnesses the sink asks to cosign each tenant's newest stored checkpoint before it
    # publishes it (docs/INTEGRITY.md §9): "URL=KEYFILE" each, URL the witness's
    # submission prefix, KEYFILE its vkey. Needs publication_dir (cosignatures live there).
    cosigning_witnesses: tuple[str, ...] = ()
    # One add-checkpoint request may take this long; a witness that did not answer is
    # then skipped for witness_retry_ms (its checkpoints are published uncosigned).
    witness_timeout_ms: int = 5000
    witness_retry_ms: int = 30_000
    # `authtrail init-db` on a ClickHouse server: the passwords of the users it creates
    # with their roles (sinks/access.py); a user whose password is unset is left alone.
    # Only a salted hash reaches the server; never logged.
    writer_password: str | None = field(default=None, repr=False)
    analyst_password: str | None = field(default=None, repr=False)
    auditor_password: str | None = field(default=None, repr=False)
    # The retention service's user: the auditor's rights and ALTER DELETE on events.
    retention_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.partitions < 1 or self.replication_factor < 1:
            raise ConfigurationError("partitions and replication_factor must be >= 1")
        if (
            min(self.batch_size, self.batch_interval_ms, self.sink_batch_rows, self.sink_batch_ms)
            < 1
        ):
            raise ConfigurationError("batch sizes and intervals must be >= 1")
        if self.max_checkpoints_per_second < 0:
            raise ConfigurationError("max_checkpoints_per_second must be >= 0 (0: no cap)")
        if self.publication_interval_ms < 1:
            raise ConfigurationError("publication_interval_ms must be >= 1")
        if self.witness_timeout_ms < 1 or self.witness_retry_ms < 0:
            raise ConfigurationError("witness_timeout_ms must be >= 1, witness_retry_ms >= 0")
        if self.chained_batch_bytes < 1:
            raise ConfigurationError("chained_batch_bytes must be >= 1")
        if self.topic_retention_ms < 0:
            raise ConfigurationError(
                "topic_retention_ms must be >= 0 (0: the cluster's default retention)"
            )
        if self.producer_linger_ms < 0:
            raise ConfigurationError("producer_linger_ms must be >= 0")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:-]*", self.log_origin):
            raise ConfigurationError(f"log_origin {self.log_origin!r} is not a plain origin")

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def privacy_dir(self) -> Path:
        """The embedded subject key store (authtrail/privacy_keys.py)."""
        return self.data_dir / "privacy"

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key or self.keys_dir / "authtrail.key"

    @property
    def publisher_key_path(self) -> Path:
        """The key that signs tenant directories: ``publisher_key``, else the signing key."""
        return self.publisher_key or self.signing_key_path

    @property
    def snapshots_topic_name(self) -> str:
        """The snapshots topic: ``snapshots_topic``, else ``<chained_topic>.snapshots``."""
        return self.snapshots_topic or f"{self.chained_topic}.snapshots"

    @property
    def keyring_path(self) -> Path:
        """The keyring file: ``keyring``, else ``<data_dir>/keys/authtrail.keyring``."""
        return self.keyring or self.keys_dir / "authtrail.keyring"

    @property
    def verifier_key_paths(self) -> tuple[Path, ...]:
        """``verifier_keys``, else the keyring file when it exists, else the data dir's
        ``authtrail.pub``."""
        if self.verifier_keys:
            return self.verifier_keys
        if self.keyring_path.exists():
            return (self.keyring_path,)
        return (self.keys_dir / "authtrail.pub",)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """A copy with the non-None ``overrides`` applied (CLI flags)."""
        given = {name: value for name, value in overrides.items() if value is not None}
        return replace(self, **_coerce(given))

    def to_env(self) -> dict[str, str]:
        """These settings as ``AUTHTRAIL_*`` variables (for child processes)."""
        result = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is None or value == ():
                continue
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            result[ENV_PREFIX + spec.name.upper()] = text
        return result

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``AUTHTRAIL_*`` variables over the defaults.

        Raises :class:`ConfigurationError` naming the variable when a value is invalid.
        """
        environ = os.environ if environ is None else environ
        given = {
            spec.name: environ[ENV_PREFIX + spec.name.upper()]
            for spec in fields(cls)
            if ENV_PREFIX + spec.name.upper() in environ
        }
        return cls(**_coerce(given))


def _coerce(values: Mapping[str, Any]) -> dict[str, Any]:
    types = {spec.name: spec.type for spec in fields(Settings)}
    result: dict[str, Any] = {}
    for name, value in values.items():
        if name not in types:
            raise ConfigurationError(f"unknown setting {name!r}")
        kind = str(types[name])
        try:
            if kind == "int":
                result[name] = int(value)
            elif "tuple[Path" in kind:
                items = value.split(",") if isinstance(value, str) else value
                result[name] = tuple(Path(item) for item in items if str(item).strip())
            elif "tuple[str" in kind:
                items = value.split(",") if isinstance(value, str) else value
                result[name] = tuple(str(item).strip() for item in items if str(item).strip())
            elif "Path" in kind:
                # Empty means unset for an optional path (Path("") would be the cwd).
                optional = "None" in kind and value == ""
                result[name] = None if optional else Path(value)
            else:
                result[name] = str(value) if value != "" else None
        except (TypeError, ValueError) as exc:
            variable = ENV_PREFIX + name.upper()
            raise ConfigurationError(f"{name} ({variable}): invalid value {value!r}") from exc
    return result
