"""When the sink publishes what (the files: :mod:`authtrail.sinks.publication`).

* A checkpoint is published right after ClickHouse stored it, never before, so the
  publication holds no checkpoint the store never stored.
* Until the stored checkpoints are published the sink stores nothing more and commits
  no Kafka offset past them: :meth:`CheckpointPublishing.publish_pending` raises
  ``OSError`` (full disk, read-only or missing mount) and the sink retries it with the
  same backoff as a store outage.
* At start, every checkpoint in the store that the publication lacks is published
  (:meth:`CheckpointPublishing.backfill`): what a crash between storing and publishing
  left out, and, the first time a publication is set up for an existing store,
  everything in it. That first time trusts the store as it is (trust on first use).
* A tenant directory is published at most every ``interval`` seconds, only after new
  checkpoints were published, and once more when the sink stops.
* With witnesses (:mod:`authtrail.sinks.witnessing`), each tenant's newest checkpoint of a round
  is cosigned before its first publication; the cosigned note is kept until it is
  published, so a retry after ``OSError`` publishes the same bytes and asks no witness
  again. A witness that fails costs only its cosignature.
* A conflict (the publication holds another note at that place) or a note that is not
  the checkpoint its row says is logged at ERROR, counted in ``publication_conflicts``
  and dropped: the sink keeps running and ``authtrail verify --published`` names the
  tenant. Nothing in the publication is ever overwritten.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from authtrail.errors import (
    AuthtrailError,
    InvalidArgumentError,
    PublicationConflict,
    PublicationError,
)
from authtrail.sinks.clickhouse import ClickHouseBackend
from authtrail.sinks.publication import (
    Publication,
    late_cosignatures,
    newest_checkpoints,
    published_sizes,
)
from authtrail.sinks.tables import CHECKPOINTS_TABLE
from authtrail.sinks.witnessing import CheckpointWitnessing

_LOG = logging.getLogger(__name__)
_BACKFILL_CHUNK = 1000  # sizes per query: bounds the notes held in memory at once


class PublicationCounters(Protocol):
    """The sink's counters this module adds to (fields of ``SinkCounters``)."""

    published_checkpoints: int
    published_directories: int
    publication_conflicts: int


class CheckpointPublishing:
    """Publishes the checkpoints the sink stored, and tenant directories, into ``publication``."""

    def __init__(
        self,
        publication: Publication,
        counters: PublicationCounters,
        *,
        interval: float,
        witnessing: CheckpointWitnessing | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publication = publication
        self._counters = counters
        self._interval = interval
        self._witnessing = witnessing
        self._monotonic = monotonic
        self._pending: list[tuple[str, int, bytes]] = []  # stored, not yet checked
        self._ready: list[tuple[str, int, bytes]] = []  # checked (and cosigned): publish as is
        self._directory_due = True  # checkpoints were published since the last directory
        self._last_directory = -math.inf
        self._last_late_try = -math.inf
        self._late_lines: list[tuple[str, int, int, bytes]] = []  # obtained, not yet written

    @property
    def pending(self) -> int:
        """Stored checkpoints not yet published."""
        return len(self._pending) + len(self._ready)

    def stored(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Queue the checkpoints of ``rows`` (``checkpoints`` table rows ClickHouse stored)."""
        self._pending += [(row["tenant_id"], row["size"], _note_bytes(row["note"])) for row in rows]

    def publish_pending(self) -> None:
        """Publish every queued checkpoint.

        Raises ``OSError`` when the publication cannot be written: the queue is kept
        and a later call retries it (files already written are skipped). Conflicts and
        malformed notes are logged, counted and dropped (module docstring).
        """
        if not self._pending and not self._ready:
            return
        notes = []
        for tenant_id, size, note in self._pending:
            try:
                self._publication.check_note(tenant_id, size, note)
            except InvalidArgumentError as exc:
                self._conflict(f"not publishing a stored checkpoint row: {exc}", 1)
            else:
                notes.append((tenant_id, size, note))
        self._pending = []
        if self._witnessing is not None and notes:
            notes = self._witnessing.cosign_newest(notes)
        self._ready += notes
        notes = self._ready
        try:
            written = self._publication.publish_checkpoints(notes)
        except PublicationConflict as exc:
            written = exc.written
            self._conflict(str(exc), len(exc.conflicts))
        except PublicationError as exc:  # e.g. a symlink planted as a tenant folder
            written = 0
            self._conflict(f"{exc}; {len(notes)} checkpoints not published", len(notes))
        self._ready = []
        self._counters.published_checkpoints += written
        if written:
            self._directory_due = True

    def _conflict(self, message: str, count: int) -> None:
        self._counters.publication_conflicts += count
        _LOG.error("publication: %s", message)

    def directory_if_due(self, *, force: bool = False) -> None:
        """Publish a tenant directory if checkpoints were published since the last one
        and ``interval`` has passed since the last try (``force``: whatever the time).

        Never raises: a failure is logged and tried again after the interval.
        """
        if not self._directory_due or not self._publication.signs_directories:
            return
        now = self._monotonic()
        if not force and now - self._last_directory < self._interval:
            return
        self._last_directory = now
        try:
            path = self._publication.publish_directory()
        except (OSError, AuthtrailError) as exc:
            level = logging.ERROR if isinstance(exc, PublicationError) else logging.WARNING
            _LOG.log(level, "publication: no tenant directory published (%s); trying again "
                     "in %.0f s", exc, self._interval)  # fmt: skip
            return
        self._directory_due = False
        if path is not None:
            self._counters.published_directories += 1
            _LOG.info("publication: published tenant directory %s", path)

    def late_cosignatures_if_due(self) -> None:
        """At most every ``interval`` seconds: ask witnesses that could not be reached
        again for the newest published checkpoints they did not cosign, and publish what
        they give beside those notes (sinks/witnessing.py). Never raises: a failure to
        write is logged and the lines are asked for again at the next interval."""
        if self._witnessing is None:
            return
        now = self._monotonic()
        if now - self._last_late_try < self._interval:
            return
        self._last_late_try = now
        self._late_lines += self._witnessing.late_cosignatures()
        if not self._late_lines:
            return
        try:
            written = self._publication.publish_cosignatures(self._late_lines)
        except PublicationConflict as exc:
            written = exc.written
            self._conflict(str(exc), len(exc.conflicts))
        except (OSError, AuthtrailError) as exc:
            _LOG.warning("publication: %d later cosignatures not published yet (%s)",
                         len(self._late_lines), exc)  # fmt: skip
            return
        self._late_lines = []
        _LOG.info("publication: published %d cosignatures witnesses gave after their "
                  "checkpoints were published", written)  # fmt: skip

    def backfill(self, backend: ClickHouseBackend) -> None:
        """Publish every checkpoint in the store that the publication lacks.

        A tenant whose published sizes number as many as its stored ones and end at the
        same size is taken as complete without comparing every size. Raises
        ``StoreError`` / ``ConfigurationError`` (store or publication unreadable) and
        ``OSError`` (publication not writable) for the caller to retry; a publication
        holding what its layout forbids is logged at ERROR and skipped.
        """
        stored = backend.query_arrow(
            f"SELECT tenant_id, uniqExact(size) AS count, max(size) AS newest "
            f"FROM {CHECKPOINTS_TABLE} GROUP BY tenant_id ORDER BY tenant_id"
        ).to_pylist()
        try:
            published = published_sizes(self._publication.directory)
        except PublicationError as exc:
            _LOG.error("publication: cannot compare it with the store (%s); stored "
                       "checkpoints it may lack are not published", exc)  # fmt: skip
            return
        before = self._counters.published_checkpoints
        for row in stored:
            tenant_id, sizes = row["tenant_id"], published.get(row["tenant_id"], [])
            if len(sizes) == row["count"] and sizes[-1:] == [row["newest"]]:
                continue
            missing = sorted(set(self._stored_sizes(backend, tenant_id)) - set(sizes))
            for start in range(0, len(missing), _BACKFILL_CHUNK):
                chunk = missing[start : start + _BACKFILL_CHUNK]
                self.stored(self._stored_notes(backend, tenant_id, chunk))
                self.publish_pending()
        added = self._counters.published_checkpoints - before
        if added:
            _LOG.info("publication: published %d stored checkpoints it lacked", added)
        if self._witnessing is not None:
            directory = self._publication.directory
            self._witnessing.resume({
                tenant_id: (size, note + b"".join(late_cosignatures(directory, tenant_id, size)))
                for tenant_id, (size, note) in newest_checkpoints(directory).items()
            })  # fmt: skip

    @staticmethod
    def _stored_sizes(backend: ClickHouseBackend, tenant_id: str) -> list[int]:
        table = backend.query_arrow(
            f"SELECT DISTINCT size FROM {CHECKPOINTS_TABLE} WHERE tenant_id = {{tenant:String}}",
            {"tenant": tenant_id},
        )
        return [int(size) for size in table.column(0).to_pylist()]

    @staticmethod
    def _stored_notes(
        backend: ClickHouseBackend, tenant_id: str, sizes: list[int]
    ) -> list[dict[str, Any]]:
        wanted = set(sizes)
        rows = backend.query_arrow(
            f"SELECT tenant_id, size, note FROM {CHECKPOINTS_TABLE} "
            "WHERE tenant_id = {tenant:String} AND size BETWEEN {first:UInt64} AND {last:UInt64} "
            "ORDER BY size",
            {"tenant": tenant_id, "first": sizes[0], "last": sizes[-1]},
        ).to_pylist()
        return [row for row in rows if row["size"] in wanted]


def _note_bytes(note: str | bytes) -> bytes:
    # The note column is a String holding the worker's UTF-8 note text, byte for byte.
    return note.encode("utf-8") if isinstance(note, str) else note
