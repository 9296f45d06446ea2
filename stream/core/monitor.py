"""What an earlier view of a log promises about the store now: a transparency-log monitor. Pure.

The store alone proves only that what it holds is consistent with the checkpoints it
holds. Someone who can edit the store can remove a tenant's newest records *and* their
checkpoints, delete a tenant, or put back an older copy of everything, and what is left
is still consistent. What catches that is a view of the log kept where the store's
attacker cannot reach: the auditor's own state from an earlier run
(:mod:`authtrail.stream.core.auditor_state`), or checkpoints published outside the store.

Each such view gives, per tenant, an :class:`Anchor`: a size and root that a trusted
key signed. The store must still hold that log: at least ``size`` records whose
RFC 6962 root at ``size`` is ``root`` (the leaves themselves are at hand, so the store's
prefix root is recomputed, which is what a consistency proof between the two sizes
would establish), and a signed checkpoint at least that new.
"""

from __future__ import annotations

from dataclasses import dataclass

from authtrail.stream.core.audit import CheckpointDamage, MerkleLevels

# Damage kinds only an anchor can show.
TRUNCATED = "truncated"
ROLLED_BACK = "rolled back"
FORKED = "forked"
TENANT_MISSING = "tenant missing"


@dataclass(frozen=True)
class Anchor:
    """A signed size and root of a tenant's log, seen earlier by ``source``.

    ``source`` says where it comes from, for the report ("auditor state of
    2026-12-03T10:00:00Z", "publication /mnt/worm").
    """

    size: int
    root: bytes
    source: str


def check_anchor(tenant_id: str, levels: MerkleLevels, signed_size: int, anchor: Anchor) -> None:
    """Check that the store's log of ``tenant_id`` extends what ``anchor`` saw.

    Requires: ``levels`` are the Merkle levels of the tenant's stored records, a chain
    already checked gapless; ``signed_size`` is the size of its newest checkpoint that
    verified. Raises :class:`CheckpointDamage`: records end before the anchor's size
    (truncated); the root at the anchor's size differs (forked: another history); the
    records are there but the newest signed checkpoint is older than the anchor
    (rolled back: checkpoints were removed).
    """
    if levels.size < anchor.size:
        raise CheckpointDamage(
            tenant_id, levels.size + 1, TRUNCATED,
            f"records end at seq {levels.size}, but {anchor.source} saw a signed log of "
            f"{anchor.size} (the store was truncated or rolled back)",
        )  # fmt: skip
    if anchor.size and levels.root(anchor.size) != anchor.root:
        raise CheckpointDamage(
            tenant_id, anchor.size, FORKED,
            f"the root of the stored records at size {anchor.size} is "
            f"{levels.root(anchor.size).hex()}, {anchor.source} saw {anchor.root.hex()}",
        )  # fmt: skip
    if signed_size < anchor.size:
        raise CheckpointDamage(
            tenant_id, signed_size + 1, ROLLED_BACK,
            f"the newest stored checkpoint is at size {signed_size}, {anchor.source} saw one "
            f"at {anchor.size} (checkpoints were removed)",
        )  # fmt: skip


def missing_tenant(tenant_id: str, anchor: Anchor) -> CheckpointDamage:
    """The damage of a tenant ``anchor`` saw and the store does not hold at all."""
    return CheckpointDamage(
        tenant_id, 1, TENANT_MISSING,
        f"the store holds nothing of it, but {anchor.source} saw a signed log of {anchor.size}",
    )  # fmt: skip
