"""The report of a ``verify`` run kept on disk (``verify --report-json FILE``), and its reader.

The web console shows "integrity status per tenant from the last verify run" from this
file, not from the store: the store is what verify checks, and what it says of itself
proves nothing. The document is verify's ``--json`` output plus ``verified_at`` and
``exit_code``. Whoever can replace the file can lie to the console's readers, as whoever
can replace any report can: keep it where only the verifying user writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authtrail.atomic_file import read_bounded, replace_file
from authtrail.errors import ConfigurationError

REPORT_FILE = "verify-report.json"  # under the data dir: where `up` and the console look
_MAX_BYTES = 64 * 1024 * 1024


def write_report(path: Path, document: dict[str, Any]) -> None:
    """Replace ``path`` atomically by ``document`` as JSON (a reader never sees half).

    Raises ConfigurationError when it cannot be written.
    """
    try:
        replace_file(path, json.dumps(document, indent=2) + "\n", 0o644)
    except OSError as exc:
        raise ConfigurationError(f"cannot write verify report {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class TenantVerdict:
    tenant_id: str
    ok: bool
    records: int
    signed_size: int
    damage: str
    seq: int | None
    detail: str


@dataclass(frozen=True)
class StoredReport:
    """What the last verify run said: when, its exit code, each tenant's verdict, and the
    damage it found outside the tenants' logs (view definitions, the publication)."""

    verified_at: str
    exit_code: int
    tenants: tuple[TenantVerdict, ...]
    store_damage: tuple[dict[str, str], ...]


def read_report(path: Path) -> StoredReport | None:
    """The report at ``path``; None when there is none (never verified).

    Raises ConfigurationError when it cannot be read or is not a verify report.
    """
    data = read_bounded(path, _MAX_BYTES, "verify report")
    if data is None:
        return None
    try:
        document = json.loads(data)
        tenants = tuple(
            TenantVerdict(
                tenant_id=str(entry["tenant_id"]),
                ok=entry["damage"] is None,
                records=int(entry["records"]),
                signed_size=int(entry["signed_size"]),
                damage=str(entry["damage"] or ""),
                seq=None if entry.get("seq") is None else int(entry["seq"]),
                detail=str(entry.get("detail") or ""),
            )
            for entry in document["tenants"]
        )
        store_damage = tuple(
            {key: str(value) for key, value in entry.items()}
            for entry in document.get("store_damage", [])
        )
        return StoredReport(
            str(document["verified_at"]), int(document["exit_code"]), tenants, store_damage
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"{path} is not a verify report: {exc!r}") from None
