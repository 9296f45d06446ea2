"""Witness cosignatures for the checkpoints the sink publishes (docs/INTEGRITY.md §9).

The publisher (sinks/publishing.py) hands each round of stored checkpoints to
:meth:`CheckpointWitnessing.cosign_newest` before it publishes them for the first time,
so a published note carries the cosignatures it got and stays write-once:

* Per tenant only the newest checkpoint of the round is submitted. A witness needs no
  checkpoint in between (the consistency proof spans them), and verifiers require
  cosignatures of the newest published one; the older ones are published as stored.
* The RFC 6962 consistency proof from the size each witness holds comes from the store:
  the few perfect-subtree hashes it needs (:mod:`authtrail.stream.core.tree_proofs`) from the stored
  tiles, or hashed from the leaves where those are not built that far
  (:class:`authtrail.sinks.proofs.TilesOrLeaves`).
* A witness that is down, refuses, or answers with anything but its own valid
  cosignature costs that checkpoint its cosignature, never its publication: the failure
  is logged (a refusal at ERROR: a witness saw another history, or the store was rolled
  back) and counted, and the tenant's next checkpoint is submitted again.
* A witness that could not be reached is asked again later for the tenant's newest
  published checkpoint (:meth:`CheckpointWitnessing.late_cosignatures`), so a tenant that
  stays idle after an outage still gets its cosignature; the publisher writes it next to
  the note, which is never rewritten (``cosignatures/``, sinks/publication.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from authtrail.errors import AuthtrailError, CheckpointError
from authtrail.sinks.proofs import TreeNodes
from authtrail.sinks.publication_files import note_body
from authtrail.stream.core.cosignature import CosignatureError, check_witness_reply
from authtrail.stream.core.tree_proofs import consistency_ranges, nodes_of_ranges, proof_from_nodes
from authtrail.stream.core.witness_state import SizeConflictError, WitnessRefusal
from authtrail.witness_client import (
    ProofSource,
    WitnessRestingError,
    WitnessSubmitter,
    WitnessUnavailableError,
)

_LOG = logging.getLogger(__name__)


class WitnessCounters(Protocol):
    """The sink's counters this module adds to (fields of ``SinkCounters``)."""

    witness_cosignatures: int
    witness_unreachable: int
    witness_refusals: int
    witness_errors: int


class CheckpointWitnessing:
    """Gets the cosignatures of ``submitter``'s witnesses on checkpoints about to be published."""

    def __init__(
        self, submitter: WitnessSubmitter, nodes: TreeNodes, counters: WitnessCounters
    ) -> None:
        self._submitter = submitter
        self._nodes = nodes
        self._counters = counters
        # tenant -> (size, published note, witnesses that could not be reached for it)
        self._lacking: dict[str, tuple[int, bytes, set[str]]] = {}

    def cosign_newest(
        self, notes: Sequence[tuple[str, int, bytes]]
    ) -> list[tuple[str, int, bytes]]:
        """Return ``notes`` (``(tenant_id, size, note)``) with each tenant's largest
        ``size`` replaced by its note plus the cosignatures obtained.

        Requires every note to be the stored checkpoint of its tenant and size (the
        publication's ``check_note``) and the tenant's records 1..size to be stored.
        Never raises for a witness's or the proof's failure (module docstring).
        """
        newest: dict[str, int] = {}
        for position, (tenant_id, size, _) in enumerate(notes):
            if tenant_id not in newest or size >= notes[newest[tenant_id]][1]:
                newest[tenant_id] = position
        result = list(notes)
        for tenant_id, position in newest.items():
            _, size, note = notes[position]
            result[position] = (tenant_id, size, self.cosign(tenant_id, size, note))
        return result

    def cosign(self, tenant_id: str, size: int, note: bytes) -> bytes:
        """``note`` (the checkpoint of ``tenant_id`` at ``size``) with the cosignatures
        every witness gave; failures logged and counted, never raised."""
        cosigned, failures = self._submitter.cosign(note, size, self._proof_source(tenant_id, size))
        self._counters.witness_cosignatures += len(self._submitter.witness_urls) - len(failures)
        for url, failure in failures.items():
            self._count(tenant_id, size, url, failure)
        self._remember_unreached(tenant_id, size, cosigned, failures)
        return cosigned

    def late_cosignatures(self, most: int = 100) -> list[tuple[str, int, int, bytes]]:
        """Ask the witnesses that could not be reached for up to ``most`` tenants' newest
        published checkpoints again; return what they gave as ``(tenant_id, size, key id,
        cosignature line)``, for the publisher to write beside the published notes.

        Witnesses still resting after a failure are not contacted (no cost); a refusal is
        logged and counted once, like a first one, and not asked again.
        """
        found: list[tuple[str, int, int, bytes]] = []
        for tenant_id in list(self._lacking)[:most]:
            size, note, unreached = self._lacking.pop(tenant_id)
            body = note_body(note)
            cosigned, failures = self._submitter.cosign(
                note, size, self._proof_source(tenant_id, size), urls=unreached
            )
            new_lines = cosigned[len(note) :].decode().splitlines(keepends=True)
            for url in unreached - set(failures):
                key = self._submitter.witness_key(url)
                if key is None:
                    continue
                for line in check_witness_reply(body, new_lines, key):
                    found.append((tenant_id, size, key.key_id, line.encode()))
                self._counters.witness_cosignatures += 1
            for url, failure in failures.items():
                if not isinstance(failure, WitnessRestingError):
                    self._count(tenant_id, size, url, failure)
            self._remember_unreached(tenant_id, size, note, failures)
        return found

    def resume(self, published: Mapping[str, tuple[int, bytes]]) -> None:
        """After a restart: remember which witnesses each tenant's newest published note
        (``tenant -> (size, note with every cosignature published for it)``) lacks, so
        :meth:`late_cosignatures` asks them again."""
        for tenant_id, (size, note) in published.items():
            body = note_body(note)
            lines = note[len(body) + 1 :].decode("utf-8", "replace").splitlines(keepends=True)
            lacking = set()
            for url in self._submitter.witness_urls:
                key = self._submitter.witness_key(url)
                try:
                    if key is not None:
                        check_witness_reply(body, lines, key)
                except (CheckpointError, CosignatureError):  # none by it, or not valid
                    lacking.add(url)
            if lacking:
                self._lacking[tenant_id] = (size, note, lacking)

    def _remember_unreached(
        self, tenant_id: str, size: int, note: bytes, failures: dict[str, AuthtrailError]
    ) -> None:
        unreached = {url for url, failure in failures.items()
                     if isinstance(failure, WitnessUnavailableError)}  # fmt: skip
        if unreached:
            self._lacking[tenant_id] = (size, note, unreached)
        else:
            self._lacking.pop(tenant_id, None)

    def _proof_source(self, tenant_id: str, size: int) -> ProofSource:
        proofs: dict[int, list[bytes]] = {}  # witnesses mostly hold the same old size

        def proof_for(old_size: int) -> list[bytes]:
            # Raises InvalidArgumentError above size: the witness holds more than this
            # store signed, which cosign_checkpoint turns into a size conflict.
            if old_size not in proofs:
                ranges = consistency_ranges(old_size, size)
                nodes = self._nodes.nodes(tenant_id, size, nodes_of_ranges(ranges))
                proofs[old_size] = proof_from_nodes(ranges, nodes)
            return proofs[old_size]

        return proof_for

    def _count(self, tenant_id: str, size: int, url: str, failure: AuthtrailError) -> None:
        where = f"tenant {tenant_id!r} size {size} is published without the cosignature of {url}"
        if isinstance(failure, WitnessUnavailableError):
            self._counters.witness_unreachable += 1
            # Once per outage, not once per checkpoint while the witness rests.
            level = logging.DEBUG if isinstance(failure, WitnessRestingError) else logging.WARNING
            _LOG.log(level, "witness: %s: %s", where, failure.reason)
        elif isinstance(failure, SizeConflictError) and failure.current_size > size:
            self._counters.witness_refusals += 1
            _LOG.error("witness: %s: the witness holds size %d, more than this checkpoint's %d: "
                       "this store is behind what the witness saw (rolled back?)",
                       where, failure.current_size, size)  # fmt: skip
        elif isinstance(failure, WitnessRefusal | CheckpointError):  # or a bad cosignature
            self._counters.witness_refusals += 1
            _LOG.error("witness: %s: %s", where, failure)
        else:  # the store could not give the proof (an outage, damaged records)
            self._counters.witness_errors += 1
            _LOG.error("witness: %s: %s", where, failure)
