"""What a publication directory (sinks/publication.py) promises about the store.

``authtrail verify --published DIR`` reads, for every tenant, the newest checkpoint
published there and the newest signed tenant directory, checks their signatures with
the trusted keys, and turns each into an :class:`~authtrail.stream.core.monitor.Anchor` the store
must still honour. A published note that does not verify is damage of the publication, named
as such: the sink only ever publishes checkpoints it stored.

With a :class:`~authtrail.stream.core.cosignature.WitnessPolicy`, each tenant's newest published
note (with the cosignature lines published for it later, ``cosignatures/``) must also carry
the required witness cosignatures (docs/INTEGRITY.md §9): the publisher
adds them to the published note, never to the note stored in ClickHouse. Too few is
``missing cosignatures``, a trusted witness's line that does not verify is ``forged
cosignature``; both name the tenant, the size and the witnesses that did cosign.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from authtrail.errors import CheckpointError
from authtrail.sinks.publication_files import (
    late_cosignatures,
    newest_checkpoints,
    newest_tenant_directory_numbered,
    note_file_name,
)
from authtrail.stream.core.audit import FORGED_CHECKPOINT, key_label
from authtrail.stream.core.checkpoint import checkpoint_origin, open_checkpoint
from authtrail.stream.core.cosignature import (
    CosignatureError,
    MissingCosignaturesError,
    WitnessPolicy,
    verify_cosignatures,
)
from authtrail.stream.core.monitor import Anchor
from authtrail.stream.core.note import Keyring, Note, open_note
from authtrail.stream.core.tenant_directory import open_directory

MISSING_COSIGNATURES = "missing cosignatures"
FORGED_COSIGNATURE = "forged cosignature"


@dataclass
class PublishedView:
    """Per tenant the anchors a publication gives; damage found in the publication itself."""

    anchors: dict[str, list[Anchor]] = field(default_factory=dict)
    damage: list[dict[str, str]] = field(default_factory=list)
    directory_index: int = 0
    # Per tenant, the newest published size and the trusted witnesses (<name>+<hex8>)
    # whose cosignatures on it verified (empty without a witness policy).
    cosigned_by: dict[str, tuple[int, list[str]]] = field(default_factory=dict)


def read_published(
    directory: Path,
    keyring: Keyring,
    log_origin: str,
    witnesses: WitnessPolicy | None = None,
) -> PublishedView:
    """Read the publication at ``directory``; every signature checked against ``keyring``.

    With ``witnesses``, every tenant's newest published note is also checked against
    the cosignature policy; a failure is damage of the publication, not an exception.

    Raises :class:`~authtrail.errors.PublicationError` when the directory does not have
    the publication's layout (a stray file or folder, a symlink).
    """
    view = PublishedView()
    source = f"the publication {directory}"
    for tenant_id, (size, note) in sorted(newest_checkpoints(directory).items()):
        where = f"{directory}/checkpoints/{tenant_id}"
        try:
            checkpoint = open_checkpoint(note, keyring, checkpoint_origin(log_origin, tenant_id))
        except CheckpointError as exc:
            view.damage.append({"name": where, "damage": FORGED_CHECKPOINT, "detail": str(exc)})
            continue
        if checkpoint.size != size:
            detail = f"the file of size {size} holds the checkpoint of size {checkpoint.size}"
            view.damage.append({"name": where, "damage": FORGED_CHECKPOINT, "detail": detail})
            continue
        view.anchors.setdefault(tenant_id, []).append(Anchor(size, checkpoint.root, source))
        if witnesses is not None:
            # Cosignatures obtained after the note was published (it is never rewritten).
            note += b"".join(late_cosignatures(directory, tenant_id, size))
        cosigners, damage = _check_cosignatures(note, keyring, witnesses)
        view.cosigned_by[tenant_id] = (size, cosigners)
        if damage is not None:
            kind, detail = damage
            view.damage.append({
                "name": f"{where}/{note_file_name(size)}", "damage": kind,
                "detail": f"tenant {tenant_id!r} size {size}: {detail}",
            })  # fmt: skip
    newest = newest_tenant_directory_numbered(directory)
    if newest is None:
        return view
    view.directory_index, note = newest
    try:
        tenants = open_directory(note, keyring, log_origin)
    except CheckpointError as exc:
        where = f"{directory}/tenants/{view.directory_index}"
        view.damage.append({"name": where, "damage": "forged directory", "detail": str(exc)})
        return view
    listed = f"the tenant directory {view.directory_index} of {directory}"
    for tenant_id, (size, root) in tenants.entries.items():
        view.anchors.setdefault(tenant_id, []).append(Anchor(size, root, listed))
    return view


def _check_cosignatures(
    note_bytes: bytes, keyring: Keyring, witnesses: WitnessPolicy | None
) -> tuple[list[str], tuple[str, str] | None]:
    """The trusted witnesses whose cosignatures on ``note`` verify, and the damage if any.

    Requires the note in ``note_bytes`` (before any cosignature line) to open with
    ``keyring`` (checked by the caller).
    """
    if witnesses is None:
        return [], None
    try:
        note = open_note(note_bytes, keyring)
    except CheckpointError as exc:  # a malformed line among the later cosignatures
        return [], (FORGED_COSIGNATURE, f"malformed cosignature line: {exc}")
    try:
        found = witnesses.check(note)
    except MissingCosignaturesError as exc:
        return _valid_cosigners(note, witnesses), (MISSING_COSIGNATURES, str(exc))
    except CosignatureError as exc:
        valid = _valid_cosigners(note, witnesses)
        detail = f"{exc} (valid cosignatures by: {', '.join(valid) or 'none'})"
        return valid, (FORGED_COSIGNATURE, detail)
    return [key_label(c.name, c.key_id) for c in found], None


def _valid_cosigners(note: Note, witnesses: WitnessPolicy) -> list[str]:
    # verify_cosignatures stops at the first forged line: ask each witness alone.
    valid = []
    for key in {(k.name, k.key_id): k for k in witnesses.keys}.values():
        try:
            found = verify_cosignatures(note, [key], 0)
        except CosignatureError:
            continue
        valid += [key_label(c.name, c.key_id) for c in found]
    return valid
