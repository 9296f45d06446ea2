"""An auditor's memory between runs of ``authtrail verify --state FILE``. Pure.

A transparency-log monitor remembers the newest checkpoint it verified of every log, so
that the next run can insist the log only grew: no tenant vanished, none was cut back
to an older size, none was replaced by another history (:mod:`authtrail.stream.core.monitor`). The
state keeps each tenant's newest verified signed note verbatim, so a state file is
itself checked against the trusted keys when it is read: a hand-edited entry or one
written under other keys is refused rather than believed.

It also remembers the newest tenant directory it saw in a publication (its number), so
a publication whose newest directories were removed is noticed too.

Format (JSON, UTF-8)::

    {"version": 1, "log_origin": "authtrail.local", "directory_index": 12,
     "tenants": {"acme": {"size": 4000, "root": "<base64>", "note": "<signed note>",
                          "verified_at": "2026-12-03T10:00:00Z"}}}
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from authtrail.errors import CheckpointError, ConfigurationError
from authtrail.stream.core.checkpoint import checkpoint_origin, open_checkpoint
from authtrail.stream.core.monitor import Anchor
from authtrail.stream.core.note import Keyring

STATE_VERSION = 1


@dataclass(frozen=True)
class RememberedCheckpoint:
    """The newest checkpoint of a tenant an earlier run verified, and when."""

    size: int
    root: bytes
    note: bytes
    verified_at: str


@dataclass(frozen=True)
class AuditorState:
    """Per tenant the newest verified checkpoint; the newest tenant directory seen."""

    log_origin: str
    tenants: Mapping[str, RememberedCheckpoint] = field(default_factory=dict)
    directory_index: int = 0

    def anchors(self) -> dict[str, Anchor]:
        """One :class:`Anchor` per remembered tenant."""
        return {
            tenant_id: Anchor(
                remembered.size, remembered.root, f"the auditor state of {remembered.verified_at}"
            )
            for tenant_id, remembered in self.tenants.items()
        }

    def remember(
        self, verified: Mapping[str, RememberedCheckpoint], directory_index: int = 0
    ) -> AuditorState:
        """A new state: ``verified`` tenants replace their entries, the others stay.

        Requires each verified checkpoint to be at least as new as the remembered one
        (the caller checked the anchor); an older one is ignored rather than trusted.
        """
        tenants = dict(self.tenants)
        for tenant_id, checkpoint in verified.items():
            known = tenants.get(tenant_id)
            if known is None or checkpoint.size >= known.size:
                tenants[tenant_id] = checkpoint
        return replace(
            self, tenants=tenants, directory_index=max(self.directory_index, directory_index)
        )


def state_to_json(state: AuditorState) -> bytes:
    """The state file's bytes (sorted, indented: diffable by a human)."""
    document = {
        "version": STATE_VERSION,
        "log_origin": state.log_origin,
        "directory_index": state.directory_index,
        "tenants": {
            tenant_id: {
                "size": remembered.size,
                "root": base64.b64encode(remembered.root).decode("ascii"),
                "note": remembered.note.decode("utf-8"),
                "verified_at": remembered.verified_at,
            }
            for tenant_id, remembered in sorted(state.tenants.items())
        },
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def state_from_json(data: bytes, keyring: Keyring, log_origin: str) -> AuditorState:
    """Read a state file and check every remembered note against ``keyring``.

    Raises :class:`ConfigurationError` naming the problem if the file is not a state of
    this version and ``log_origin``, or an entry's note does not verify with the trusted
    keys or disagrees with the size and root beside it.
    """
    try:
        document = json.loads(data.decode("utf-8"))
        if not isinstance(document, dict) or document.get("version") != STATE_VERSION:
            raise ConfigurationError(f"not an authtrail auditor state of version {STATE_VERSION}")
        if document.get("log_origin") != log_origin:
            raise ConfigurationError(
                f"the auditor state is of log {document.get('log_origin')!r}, not {log_origin!r}"
            )
        tenants = {
            str(tenant_id): _remembered(str(tenant_id), entry, keyring, log_origin)
            for tenant_id, entry in dict(document["tenants"]).items()
        }
        directory_index = int(document.get("directory_index", 0))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise ConfigurationError(f"the auditor state is malformed: {exc}") from None
    return AuditorState(log_origin, tenants, directory_index)


def _remembered(
    tenant_id: str, entry: Mapping[str, Any], keyring: Keyring, log_origin: str
) -> RememberedCheckpoint:
    note = str(entry["note"]).encode("utf-8")
    try:
        checkpoint = open_checkpoint(note, keyring, checkpoint_origin(log_origin, tenant_id))
    except CheckpointError as exc:
        raise ConfigurationError(
            f"the auditor state's checkpoint of {tenant_id!r} does not verify with the "
            f"trusted keys: {exc}"
        ) from None
    root = base64.b64decode(str(entry["root"]), validate=True)
    if (checkpoint.size, checkpoint.root) != (int(entry["size"]), root):
        raise ConfigurationError(
            f"the auditor state's size or root of {tenant_id!r} differs from its signed note"
        )
    return RememberedCheckpoint(checkpoint.size, checkpoint.root, note, str(entry["verified_at"]))
