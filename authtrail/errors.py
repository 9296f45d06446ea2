"""The one exception hierarchy of authtrail.

Every error the product raises on purpose derives from :class:`AuthtrailError`, so the
CLI can catch it once and map it to an exit code:

* :class:`VerificationError` and subclasses: integrity damage found (exit 1).
* :class:`ConfigurationError`: bad settings, unreachable services, bad keys (exit 2).
* :class:`FormatError`: bytes that cannot be decoded or parsed (bad input; the stream
  sends it to the dead-letter topic, the CLI exits 2).
* :class:`InvalidArgumentError`: a caller broke a documented precondition (also a
  ``ValueError`` so generic code can catch it as one).

This module imports nothing but the standard library: the pure core depends on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class AuthtrailError(Exception):
    """Root of every error authtrail raises on purpose."""


class InvalidArgumentError(AuthtrailError, ValueError):
    """A function was called outside its documented preconditions."""


class ConfigurationError(AuthtrailError):
    """Settings, keys or endpoints are unusable; the message says which and why."""


class FormatError(AuthtrailError):
    """Input bytes or text do not follow the format they claim (undecodable, malformed)."""


class UnknownSchemaError(FormatError):
    """Framed data names a schema this reader does not know."""


class VerificationError(AuthtrailError):
    """Integrity check failed: data, proof, chain or signature does not match."""


class ProofError(VerificationError):
    """A Merkle proof is malformed (wrong length, bad hash size, impossible sizes)."""


class RootMismatchError(VerificationError):
    """A root recomputed from a proof differs from the root it was checked against."""

    def __init__(self, expected_root: bytes, calculated_root: bytes, what: str = "root") -> None:
        self.expected_root = expected_root
        self.calculated_root = calculated_root
        super().__init__(
            f"{what} mismatch: expected {expected_root.hex()}, calculated {calculated_root.hex()}"
        )


class ChainError(VerificationError):
    """A tenant's hash chain is broken at ``seq``; ``damage`` names the kind of damage."""

    def __init__(self, tenant_id: str, seq: int, damage: str, detail: str) -> None:
        self.tenant_id = tenant_id
        self.seq = seq
        self.damage = damage
        self.detail = detail
        super().__init__(f"tenant {tenant_id!r} seq {seq}: {damage}: {detail}")


class CheckpointError(VerificationError):
    """A checkpoint is malformed, unsigned, forged, or does not link to its predecessor."""


class SignatureError(CheckpointError):
    """No valid signature by a trusted key was found on a signed note."""


class TenantDirectoryError(CheckpointError):
    """A signed tenant directory is malformed or is not the expected log's."""


class PublicationError(VerificationError):
    """The publication directory holds something its layout forbids: a misnamed file or
    folder, a symlink, a special file, an oversized or undecodable note.

    Unreadable publications (permissions, I/O errors, a missing root) are
    :class:`ConfigurationError` instead: nothing is known about their content.
    """


class PublicationConflict(PublicationError):
    """A published checkpoint file already holds other bytes than the note for that place.

    ``tenant_id``, ``size`` and ``path`` name the first such file; ``conflicts`` lists
    every one found in the same call as ``(tenant_id, size, path)``; ``written`` counts
    the files that call did publish. The publication is never overwritten: either the
    store now holds another checkpoint than it once did, or someone else wrote the
    publication (or a crash cut a write short), and ``verify`` names the tenant.
    """

    def __init__(
        self, conflicts: Sequence[tuple[str, int, Path]], detail: str, written: int = 0
    ) -> None:
        self.conflicts = tuple(conflicts)
        self.written = written
        self.tenant_id, self.size, self.path = self.conflicts[0]
        more = len(self.conflicts) - 1
        tail = f" (and {more} more conflicting files)" if more > 0 else ""
        super().__init__(
            f"tenant {self.tenant_id!r} size {self.size}: published file {self.path} "
            f"{detail}; it is left as it is{tail}"
        )


class ProducerQueueFullError(AuthtrailError):
    """A producer's local queue had no room for ``event_id``; nothing was queued for it.

    ``pending`` events were waiting for delivery at that moment; ``waited`` is how many
    seconds the producer waited for room before giving up (0 when told not to wait).
    The caller still owns the rejected event: retry later or fail the request.
    """

    def __init__(self, event_id: str, pending: int, waited: float) -> None:
        self.event_id = event_id
        self.pending = pending
        self.waited = waited
        after = f" after waiting {waited:.3g}s" if waited > 0 else ""
        super().__init__(
            f"producer queue full{after}: event {event_id!r} not queued, "
            f"{pending} events await delivery"
        )


class DeliveryError(AuthtrailError):
    """Events handed to a producer were not acknowledged by the broker.

    ``undelivered`` lists their event ids (failed, timed out, or still queued when the
    producer gave up); ``reason`` says why. An undelivered event may still have been
    written (only its acknowledgement lost), so resend it under the same event id.
    """

    _SHOWN = 10  # the full list is in ``undelivered``; the message stays one readable line

    def __init__(self, undelivered: Sequence[str], reason: str) -> None:
        self.undelivered = tuple(undelivered)
        self.reason = reason
        if not self.undelivered:
            super().__init__(reason)
            return
        shown = ", ".join(self.undelivered[: self._SHOWN])
        more = len(self.undelivered) - self._SHOWN
        tail = f" and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.undelivered)} events not delivered ({reason}): {shown}{tail}")


class StoreError(AuthtrailError):
    """The ClickHouse store refused or failed a statement (syntax, missing table, read-only).

    ``code`` is ClickHouse's numeric error code (e.g. 60 unknown table, 62 syntax error,
    164 read-only), 0 when none was reported. Unreachable stores and rejected credentials
    are :class:`ConfigurationError` instead: they are not the statement's fault.
    """

    def __init__(self, message: str, code: int = 0) -> None:
        self.code = code
        super().__init__(message)
