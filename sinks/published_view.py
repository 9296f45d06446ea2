"""What a publication directory (sinks/publication.py) promises about the store.

``authtrail verify --published DIR`` reads, for every tenant, the newest checkpoint
published there and the newest signed tenant directory, checks their signatures with
the trusted keys, and turns each into an :class:`~stream.monitor.Anchor` the store must
still honour. A published note that does not verify is damage of the publication, named
as such: the sink only ever publishes checkpoints it stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from authtrail.errors import CheckpointError
from sinks.publication_files import newest_checkpoints, newest_tenant_directory_numbered
from stream.audit import FORGED_CHECKPOINT
from stream.checkpoint import checkpoint_origin, open_checkpoint
from stream.monitor import Anchor
from stream.note import Keyring
from stream.tenant_directory import open_directory


@dataclass
class PublishedView:
    """Per tenant the anchors a publication gives; damage found in the publication itself."""

    anchors: dict[str, list[Anchor]] = field(default_factory=dict)
    damage: list[dict[str, str]] = field(default_factory=list)
    directory_index: int = 0


def read_published(directory: Path, keyring: Keyring, log_origin: str) -> PublishedView:
    """Read the publication at ``directory``; every signature checked against ``keyring``.

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
