"""The sequencer's decisions, pure: numbering, chaining, batching and checkpointing.

One :class:`Sequencer` serves the tenants of one input partition. The Faust agent feeds it
decoded events in partition order and ships what it returns; it never decides anything
itself. Recovery after a crash replays what the sequencer already emitted (checkpoints,
then chained records of the same partition) through :meth:`Sequencer.restore_checkpoint`
and :meth:`Sequencer.restore_record`, which rebuild exactly the state that produced them.

Why this is correct under at-least-once delivery (docs/PIPELINE.md): every chained record
carries the input offset it came from, the output partition equals the input partition,
and the agent waits for the outputs of a batch to be acknowledged before it reads on.
So the emitted records are always a prefix of the processing, and an input event whose
position is at or below the highest restored one was already sequenced.

A position is ``(offset, index)``: the input message's offset and the event's index in
it when the message is an envelope of many events (schemas/event_envelope.avsc), or
``None`` for the whole message (a bare event, or an envelope rejected whole). ``None``
ranks above every index of the same offset, so a crash in the middle of an envelope
resumes right after the last event whose output was stored.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from authtrail.errors import ChainError, CheckpointError, ConfigurationError, InvalidArgumentError
from authtrail.stream.core import native_hashes
from authtrail.stream.core.chain import (
    GENESIS_HASH,
    ChainHead,
    ChainLink,
    chain_hash,
    chain_hash_unchecked,
)
from authtrail.stream.core.checkpoint import (
    GENESIS_PREV_DIGEST,
    Checkpoint,
    checkpoint_origin,
    sign,
)
from authtrail.stream.core.compact import CompactTree
from authtrail.stream.core.id_window import IdWindow, id_key
from authtrail.stream.core.merkle import leaf_hash as rfc6962_leaf_hash
from authtrail.stream.core.note import Signer

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"  # RFC 6962 leaf hash: SHA-256(0x00 || leaf), as merkle.leaf_hash
_native_leaf_hash = native_hashes.leaf_hash  # the same in C (None: left to hashlib)

# Outcome of offering an event to the sequencer.
SEQUENCED = "sequenced"
REPLAYED = "replayed"  # its input offset was already sequenced before a restart
DUPLICATE = "duplicate"  # same event id, same content: a producer retry, recorded once
CONFLICT = "conflict"  # same event id, different content: rejected to the dead letters

# An index above any an envelope can hold: a whole message's position at its offset.
_WHOLE_MESSAGE = 1 << 62


def position(offset: int, index: int | None) -> tuple[int, int]:
    """The comparable form of input position ``(offset, index)`` (``index`` None: the
    whole message at ``offset``)."""
    return (offset, _WHOLE_MESSAGE if index is None else index)


# Event ids remembered per partition for recognising producer retries: ≥ 100 000 recent
# ones in ~29 MB (stream/core/id_window.py), whatever the number of tenants.
DEDUP_WINDOW = 200_000


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint and its signed note text, ready to publish."""

    tenant_id: str
    checkpoint: Checkpoint
    note: bytes


@dataclass(slots=True)
class TenantLog:
    """Everything the sequencer remembers about one tenant: O(log n) hashes."""

    tenant_id: str
    head: ChainHead
    # Looked up when made, not bound here: a test gives the sequencer the Python storage.
    tree: CompactTree = field(default_factory=lambda: CompactTree())
    batch: CompactTree = field(default_factory=lambda: CompactTree())
    batch_opened_at: float = 0.0
    last_checkpoint: Checkpoint | None = None
    # Ids kept beyond the window (remember_forever) until stop_keeping_ids().
    kept_ids: dict[str, bytes] = field(default_factory=dict)
    # Labels of the keys that signed last_checkpoint; None: unknown (a snapshot written
    # before key rotation existed, when one key signed everything).
    last_signers: tuple[str, ...] | None = None

    @property
    def batch_first_seq(self) -> int:
        return self.head.seq - self.batch.size + 1


class Offer(NamedTuple):
    """What :meth:`Sequencer.offer` decided about one event (a named tuple: one is made per
    event, and a tuple is built several times faster than a frozen dataclass)."""

    outcome: str
    link: ChainLink | None = None


_new_tuple = tuple.__new__

# The outcomes without a link, made once (immutable).
_REPLAYED, _DUPLICATE, _CONFLICT = Offer(REPLAYED), Offer(DUPLICATE), Offer(CONFLICT)

# Sequencer.offer's usual case in C (authtrail/_hashing.c: None, changing nothing, for any
# other, which the method's own code then takes): ~0.8 µs less an event (docs/PERFORMANCE.md).
_native_offer = native_hashes.sequencer_offer
native_hashes.configure_offer(ChainLink, ChainHead, Offer, SEQUENCED)


class Sequencer:
    """Sequences the tenants of one input partition.

    ``signer`` signs every checkpoint. During a key rotation ``handover`` is the key
    being replaced: it co-signs each tenant's first checkpoint after the switch (the
    hand-over, stream/core/rotation.py), so a tenant whose newest checkpoint ``signer`` did
    not sign gets one signed by both; after it ``signer`` alone signs.
    ``batch_size`` events or ``batch_interval`` seconds (monotonic clock) close a batch;
    ``wall_clock_micros`` stamps its checkpoint (``authtrail-time``).
    Producer retries are recognised among the event ids sequenced last in the partition:
    at least the last ``dedup_window // 2``, at most ``dedup_window``
    (:mod:`authtrail.stream.core.id_window`; 0 turns this off).
    """

    def __init__(
        self,
        signer: Signer,
        log_origin: str,
        *,
        batch_size: int,
        batch_interval: float,
        dedup_window: int = DEDUP_WINDOW,
        monotonic: Callable[[], float] = time.monotonic,
        remember_forever: str = "",
        handover: Signer | None = None,
        wall_clock_micros: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        if handover is not None and handover.verifier_key() == signer.verifier_key():
            raise InvalidArgumentError("the hand-over key must differ from the signing key")
        if batch_size < 1 or batch_interval <= 0 or dedup_window < 0 or dedup_window == 1:
            raise InvalidArgumentError(
                "batch_size and batch_interval must be > 0, dedup_window 0 or ≥ 2"
            )
        self._signer = signer
        self._handover = handover
        self._log_origin = log_origin
        self._batch_size = batch_size
        self._batch_interval = batch_interval
        self._recent_ids = IdWindow(dedup_window) if dedup_window else None
        # Ids with this prefix are remembered beyond the window: authtrail's own decision
        # events, which a recovery may publish again long after the first copy; until the
        # worker knows no copy can come any more (stop_keeping_ids()).
        self._remember_forever = remember_forever
        self._monotonic = monotonic
        self._wall_clock_micros = wall_clock_micros  # checkpoint time stamps
        self.tenants: dict[str, TenantLog] = {}
        # Highest input position already handled (module docs): offset and index.
        self.source_offset = -1
        self.source_index: int | None = None
        # (deadline, opened_at, tenant) of open batches, soonest first; may hold stale ones
        self._deadlines: list[tuple[float, float, str]] = []
        self._full: list[str] = []  # tenants whose batch filled up since it was last asked

    def _log(self, tenant_id: str) -> TenantLog:
        log = self.tenants.get(tenant_id)
        if log is None:
            checkpoint_origin(self._log_origin, tenant_id)  # refuses unusable tenant ids
            log = self.tenants[tenant_id] = TenantLog(tenant_id, ChainHead(tenant_id))
        return log

    def handled(self, source_offset: int, source_index: int | None = None) -> bool:
        """Whether the input at this position was handled already (before a restart)."""
        if source_offset != self.source_offset:  # the common case, without tuples
            return source_offset < self.source_offset
        return position(source_offset, source_index) <= position(
            self.source_offset, self.source_index
        )

    def _advance(self, source_offset: int, source_index: int | None) -> None:
        self.source_offset, self.source_index = source_offset, source_index

    def offer(
        self, tenant_id: str, event_id: str, leaf: bytes, source_offset: int,
        source_index: int | None = None,
    ) -> Offer:  # fmt: skip
        """Sequence one event read at ``source_offset`` of this partition (``source_index``:
        its index in that envelope; None: a bare message), or say why not.

        Requires positions offered in increasing order. Returns an :class:`Offer` whose
        ``link`` is set when the event got the tenant's next seq.
        """
        offered = _native_offer(self, tenant_id, event_id, leaf, source_offset, source_index)
        if offered is not None:
            return offered  # type: ignore[no-any-return]  # an Offer built in C
        # The hot path, once per event: the checks and appends of handled(), _log(),
        # _append() and ChainHead.append() inlined, with the same results (the hashes
        # computed here are 32 bytes by construction, so their length checks are moot).
        current = self.source_offset
        if source_offset <= current and (
            source_offset < current
            or (_WHOLE_MESSAGE if source_index is None else source_index)
            <= (_WHOLE_MESSAGE if self.source_index is None else self.source_index)
        ):  # handled(): every event of an envelope after its first has the same offset
            return _REPLAYED
        log = self.tenants.get(tenant_id) or self._log(tenant_id)
        leaf_hash = _native_leaf_hash(leaf) or _sha256(_LEAF_PREFIX + leaf).digest()
        key = None  # the id window's key, worked out once for asking and remembering
        same: bool | None = None
        kept = log.kept_ids.get(event_id) if log.kept_ids else None
        if kept is not None:
            same = kept == leaf_hash
        elif self._recent_ids is not None:
            key = id_key(tenant_id, event_id)
            same = self._recent_ids.same_content_at(key, leaf_hash)
        if same is False:
            return _CONFLICT  # the position stays open: the caller chains the rejection
        self.source_offset, self.source_index = source_offset, source_index
        if same:
            return _DUPLICATE
        batch = log.batch
        if batch.size == 0:
            self._opened(log)
        head = log.head
        seq, prev_hash = head.seq + 1, head.hash
        chained = chain_hash_unchecked(tenant_id, seq, prev_hash, leaf_hash)
        # tuple.__new__ builds the named tuples without their generated __new__ (~0.1 µs
        # each): the fields are in order and complete by construction.
        link = _new_tuple(ChainLink, (seq, prev_hash, leaf_hash, chained))
        log.head = _new_tuple(ChainHead, (tenant_id, seq, chained))
        log.tree.append_leaf_hash(leaf_hash)
        batch.append_leaf_hash(leaf_hash)
        if batch.size == self._batch_size:
            self._full.append(tenant_id)
        if self._remember_forever and event_id.startswith(self._remember_forever):
            log.kept_ids[event_id] = leaf_hash
        elif self._recent_ids is not None:
            self._recent_ids.add_at(key if key is not None else id_key(tenant_id, event_id),
                                    leaf_hash)  # fmt: skip
        return _new_tuple(Offer, (SEQUENCED, link))

    def chain_rejection(
        self, tenant_id: str, leaf: bytes, source_offset: int, source_index: int | None = None
    ) -> ChainLink | None:
        """Append the rejection of the input read at position ``(source_offset,
        source_index)`` to the rejection log ``tenant_id`` (:mod:`authtrail.stream.core.rejection`);
        None if that position was already handled before a restart (the rejection is chained
        already).

        Rejections are not remembered as event ids: a flood of bad input must not push
        good events' ids out of the duplicate window.
        """
        if self.handled(source_offset, source_index):
            return None
        self._advance(source_offset, source_index)
        return self._append(self._log(tenant_id), None, rfc6962_leaf_hash(leaf))

    def handovers_due(self) -> list[str]:
        """Tenants (and rejection logs) to hand over now: while a hand-over key is set,
        those whose newest checkpoint the signing key did not sign and that have no open
        batch (an open batch is handed over when it closes). Changes nothing.
        """
        if self._handover is None:
            return []
        current = self._signer.verifier_key().label
        return [
            tenant
            for tenant, log in self.tenants.items()
            if log.last_checkpoint is not None
            and log.batch.size == 0
            and not (log.last_signers and current in log.last_signers)
        ]

    def append_own(self, tenant_id: str, event_id: str | None, leaf: bytes) -> ChainLink:
        """Append a record the worker wrote itself (a hand-over,
        :mod:`authtrail.stream.core.handover`) to ``tenant_id``'s log. It was read from no input, so
        the input position stays where it is; the record carries that position, already handled.
        """
        return self._append(self._log(tenant_id), event_id, rfc6962_leaf_hash(leaf))

    def newest_signers(self, tenant_id: str) -> tuple[str, ...]:
        """Labels of the keys that signed the tenant's newest checkpoint (the hand-over
        key's when unknown: a snapshot from before rotation existed)."""
        log = self.tenants[tenant_id]
        if log.last_signers:
            return log.last_signers
        return (self._handover.verifier_key().label,) if self._handover else ()

    @property
    def signing_label(self) -> str:
        """The label of the key that signs from now on."""
        return self._signer.verifier_key().label

    def has_recorded(self, tenant_id: str, event_id: str, leaf: bytes) -> bool:
        """Whether ``event_id`` of ``tenant_id`` was sequenced with exactly this ``leaf``
        and is still remembered, so :meth:`offer` would call it a duplicate. Changes nothing.
        """
        log = self.tenants.get(tenant_id)
        if log is None:
            return False
        leaf_hash = rfc6962_leaf_hash(leaf)
        kept = log.kept_ids.get(event_id)
        if kept is not None:
            return kept == leaf_hash
        return self._recently_seen(log, event_id, leaf_hash) is True

    def stop_keeping_ids(self) -> int:
        """Forget the ids kept beyond the window (``remember_forever``), and from now on
        remember those ids in the window like any other; returns how many were forgotten.

        For the caller that knows no copy of an event chained so far can still arrive
        (:mod:`authtrail.stream.worker.decision_copies`): a copy arriving after all would
        no longer be recognised as a duplicate.
        """
        forgotten = 0
        for log in self.tenants.values():
            if log.kept_ids:
                forgotten += len(log.kept_ids)
                log.kept_ids = {}
        self._remember_forever = ""
        return forgotten

    def _append(
        self, log: TenantLog, event_id: str | None, leaf_hash: bytes, key: bytes | None = None
    ) -> ChainLink:
        if log.batch.size == 0:
            self._opened(log)
        log.head, link = log.head.append(leaf_hash)
        log.tree.append_leaf_hash(leaf_hash)
        log.batch.append_leaf_hash(leaf_hash)
        if log.batch.size == self._batch_size:
            self._full.append(log.tenant_id)
        if event_id is not None:
            self._remember(log, event_id, leaf_hash, key)
        return link

    def _recently_seen(self, log: TenantLog, event_id: str, leaf_hash: bytes) -> bool | None:
        if self._recent_ids is None:
            return None
        return self._recent_ids.same_content(log.tenant_id, event_id, leaf_hash)

    def _remember(
        self, log: TenantLog, event_id: str, leaf_hash: bytes, key: bytes | None = None
    ) -> None:  # fmt: skip
        """Remember ``event_id`` (``key``: its :func:`id_key`, when known)."""
        if self._remember_forever and event_id.startswith(self._remember_forever):
            log.kept_ids[event_id] = leaf_hash
        elif self._recent_ids is not None:
            self._recent_ids.add_at(
                id_key(log.tenant_id, event_id) if key is None else key, leaf_hash
            )

    @property
    def filled(self) -> list[str]:
        """The list :meth:`full_batches` reads, itself: empty until an offer fills a batch
        (the worker's C loop watches it to stop after that event)."""
        return self._full

    def full_batches(self) -> list[str]:
        """Tenants whose open batch reached ``batch_size`` since the previous call (of this
        or :meth:`due_batches`): after each offer, at most the tenant just appended to.
        Each is returned once: the caller closes it (:meth:`close_batch`)."""
        if not self._full:  # asked after every event: the common answer, at once
            return []
        full = [
            t for t in dict.fromkeys(self._full) if self.tenants[t].batch.size >= self._batch_size
        ]
        self._full.clear()
        return full

    def open_batches(self) -> list[str]:
        """Tenants with events not yet covered by a checkpoint."""
        return [tenant for tenant, log in self.tenants.items() if log.batch.size]

    def due_batches(self, limit: int | None = None) -> list[str]:
        """Tenants whose open batch reached ``batch_size`` or is older than ``batch_interval``.

        ``limit``: at most this many of the latter, oldest first; the others stay due for
        a later call (stream/core/signing_budget.py). Full batches are always returned.
        Batch deadlines wait in a heap, so a call costs O(due · log tenants), not a scan of
        every tenant (called after every agent batch and timer tick; 10 000 tenants made the
        scan ~70 µs per event at half load).
        """
        due = dict.fromkeys(self.full_batches())
        now = self._monotonic()
        deadlines = self._deadlines
        taken = 0
        while deadlines and deadlines[0][0] <= now and (limit is None or taken < limit):
            _, opened_at, tenant = heapq.heappop(deadlines)
            log = self.tenants[tenant]
            # An entry is stale once its batch was closed (a newer one was pushed if the
            # tenant opened another batch since).
            if log.batch.size and log.batch_opened_at == opened_at and tenant not in due:
                due[tenant] = None
                taken += 1
        return list(due)

    def _opened(self, log: TenantLog) -> None:
        log.batch_opened_at = self._monotonic()
        deadline = log.batch_opened_at + self._batch_interval
        heapq.heappush(self._deadlines, (deadline, log.batch_opened_at, log.tenant_id))

    def close_batch(self, tenant_id: str) -> SignedCheckpoint:
        """Close the tenant's open batch: build and sign its checkpoint.

        Requires a non-empty open batch (else :class:`InvalidArgumentError`). Raises
        :class:`ConfigurationError` if the tenant's newest checkpoint was signed by none
        of this sequencer's keys: signing it would break the key succession (a worker
        still on the old key after the tenant was handed over, or a rotation begun
        before the previous one finished); nothing changes then.
        """
        log = self.tenants.get(tenant_id)
        if log is None or log.batch.size == 0:
            raise InvalidArgumentError(f"tenant {tenant_id!r} has no open batch")
        signers = self._signers_for(log)
        previous = log.last_checkpoint
        checkpoint = Checkpoint(
            origin=checkpoint_origin(self._log_origin, tenant_id),
            size=log.head.seq,
            root=log.tree.root(),
            batch_first_seq=log.batch_first_seq,
            batch_last_seq=log.head.seq,
            batch_root=log.batch.root(),
            chain_hash=log.head.hash,
            prev_digest=previous.digest() if previous else GENESIS_PREV_DIGEST,
            time_micros=self._wall_clock_micros(),
        )
        log.last_checkpoint = checkpoint
        log.last_signers = tuple(signer.verifier_key().label for signer in signers)
        log.batch = CompactTree()
        return SignedCheckpoint(tenant_id, checkpoint, sign(checkpoint, *signers))

    def check_signing_keys(self) -> None:
        """Check that every restored tenant can be continued with this sequencer's keys.

        Raises :class:`ConfigurationError` (as :meth:`close_batch` would) naming the
        first tenant whose newest checkpoint neither the signing nor the hand-over key
        signed. Call after recovery, before sequencing anything.
        """
        for log in self.tenants.values():
            if log.last_checkpoint is not None:
                self._signers_for(log)

    def _signers_for(self, log: TenantLog) -> tuple[Signer, ...]:
        """The keys that sign the tenant's next checkpoint (see the class docstring)."""
        current = self._signer.verifier_key().label
        if log.last_checkpoint is None or (log.last_signers and current in log.last_signers):
            return (self._signer,)
        if self._handover is None:
            if log.last_signers is None:
                return (self._signer,)  # before rotation existed one key signed everything
            raise ConfigurationError(
                f"tenant {log.tenant_id!r}: its newest checkpoint (size "
                f"{log.last_checkpoint.size}) was signed by {', '.join(log.last_signers)}, "
                f"not by this worker's key {current}: configure the signing key it was "
                "handed over to, or the hand-over key (docs/INTEGRITY.md, key rotation)"
            )
        handover = self._handover.verifier_key().label
        if log.last_signers is not None and handover not in log.last_signers:
            raise ConfigurationError(
                f"tenant {log.tenant_id!r}: its newest checkpoint (size "
                f"{log.last_checkpoint.size}) was signed by {', '.join(log.last_signers)}, "
                f"neither by the signing key {current} nor the hand-over key {handover}"
            )
        return (self._signer, self._handover)

    # --- recovery: replay what was emitted before, in emission order ----------------------

    def restore_tenant(self, log: TenantLog) -> None:
        """Adopt a tenant's state read from a snapshot (:mod:`authtrail.stream.worker.snapshot`);
        its open batch, if any, counts as opened now."""
        self.tenants[log.tenant_id] = log
        if log.batch.size:
            self._opened(log)
        if log.batch.size >= self._batch_size:
            self._full.append(log.tenant_id)

    def window_bytes(self) -> bytes | None:
        """The duplicate window as bytes for a snapshot (None: no window)."""
        return self._recent_ids.to_bytes() if self._recent_ids is not None else None

    def load_window(self, data: bytes) -> None:
        """Restore the duplicate window from :meth:`window_bytes`' output (a snapshot);
        ignored without a window. Raises :class:`FormatError` for malformed data."""
        if self._recent_ids is not None:
            self._recent_ids.load(data)

    def restore_checkpoint(
        self, tenant_id: str, checkpoint: Checkpoint, signed_by: tuple[str, ...] | None = None
    ) -> None:
        """Remember ``checkpoint`` as the tenant's newest (call before its records, or
        right after a snapshot that holds them), signed by the keys labelled ``signed_by``
        (None: unknown). Raises :class:`CheckpointError` if it does not follow the newest
        one or disagrees with records already restored."""
        log = self._log(tenant_id)
        if log.last_checkpoint is not None and checkpoint.size <= log.last_checkpoint.size:
            if checkpoint.size == log.last_checkpoint.size and checkpoint == log.last_checkpoint:
                return  # a producer retry published it twice
            raise CheckpointError(
                f"tenant {tenant_id!r}: checkpoint of size {checkpoint.size} does not follow "
                f"size {log.last_checkpoint.size}"
            )
        if checkpoint.size < log.head.seq:
            raise CheckpointError(
                f"tenant {tenant_id!r}: checkpoint of size {checkpoint.size} comes after "
                f"records up to seq {log.head.seq} were restored"
            )
        log.last_checkpoint = checkpoint
        log.last_signers = signed_by
        if checkpoint.size == log.head.seq:
            # The records it covers were restored first (from a snapshot): it closes the
            # open batch now, as no record replayed later will.
            if (log.tree.root(), log.head.hash) != (checkpoint.root, checkpoint.chain_hash):
                raise CheckpointError(
                    f"tenant {tenant_id!r}: restored records disagree with checkpoint "
                    f"{checkpoint.size}"
                )
            log.batch = CompactTree()

    def restore_record(
        self, tenant_id: str, event_id: str | None, link: ChainLink, source_offset: int,
        source_index: int | None = None,
    ) -> None:  # fmt: skip
        """Replay one emitted chained record; rebuild chain, trees, batch and id window
        (``event_id`` None: a chained rejection, whose id is not remembered).

        A record that repeats the head exactly is a publish retry and is skipped. Raises
        :class:`ChainError` if the emitted records themselves do not form one chain (a
        fork), and :class:`CheckpointError` if the rebuilt root disagrees with a checkpoint.
        """
        log = self._log(tenant_id)
        if link.seq <= log.head.seq:
            same_as_head = link.seq == log.head.seq and link.hash == log.head.hash
            if (
                same_as_head
                and chain_hash(tenant_id, link.seq, link.prev_hash, link.leaf_hash) == link.hash
            ):
                return
            raise ChainError(tenant_id, link.seq, "forked", "emitted twice with different content")
        expected_prev = log.head.hash if log.head.seq else GENESIS_HASH
        if link.seq != log.head.seq + 1 or link.prev_hash != expected_prev:
            raise ChainError(tenant_id, link.seq, "forked", f"does not follow seq {log.head.seq}")
        appended = self._append(log, event_id, link.leaf_hash)
        if appended != link:
            raise ChainError(tenant_id, link.seq, "forked", "stored hash differs from recomputed")
        if not self.handled(source_offset, source_index):
            self._advance(source_offset, source_index)
        covered = log.last_checkpoint
        if covered is None or log.head.seq > covered.size:
            return
        log.batch = CompactTree()  # records up to the checkpoint closed their batches
        at_checkpoint = log.head.seq == covered.size
        if at_checkpoint and (log.tree.root(), log.head.hash) != (covered.root, covered.chain_hash):
            raise CheckpointError(
                f"tenant {tenant_id!r}: records disagree with checkpoint {covered.size}"
            )
