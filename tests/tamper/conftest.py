"""A store to attack: built once by the real sequencer, signed, published, audited.

The pristine data dir holds what ``authtrail up`` leaves behind — embedded ClickHouse,
keys, a publication directory the sink wrote — plus an auditor state from a verify run
and an older copy of the store (for the rollback attack). Each test gets its own copy
(:func:`attacked`), edits it as an attacker with access to the store would, and runs
``authtrail verify`` as an auditor would, with the key pinned.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authtrail.cli import main as cli
from authtrail.keys import load_signer, write_key_pair
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.publication import Publication
from authtrail.sinks.rows import (
    CHECKPOINTS_SCHEMA,
    EVENTS_SCHEMA,
    REJECTED_SCHEMA,
    chained_row,
    checkpoint_row,
    rejected_row,
    to_arrow,
)
from authtrail.sinks.tables import create_statements
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.rejection import rejection_leaf, rejection_tenant
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.worker.sequencing import _checkpoint_record

LOG_ORIGIN = "authtrail.local"  # Settings' default
TENANTS = ("acme", "globex", "initech")
REJECTIONS = rejection_tenant(0)  # the rejection log of input partition 0
BATCH = 20


def event(n: int, tenant_id: str, user_name: str = "alice") -> dict[str, Any]:
    return {
        "event_id": f"ev-{n}",
        "tenant_id": tenant_id,
        "event_type": "LOGIN_FAILED" if n % 4 else "LOGIN",
        "outcome": "FAILURE" if n % 4 else "SUCCESS",
        "occurred_at": 1_700_000_000_000_000 + n * 1000,
        "user_name": user_name,
        "client_ip": f"203.0.113.{n % 250}",
        "attributes": {"n": str(n)},
    }


class Writer:
    """Sequences events like the worker and stores them like the sink."""

    def __init__(self, data_dir: Path) -> None:
        self.signer = load_signer(data_dir / "keys" / "authtrail.key")
        self.sequencer = Sequencer(self.signer, LOG_ORIGIN, batch_size=BATCH, batch_interval=3600)
        self.offset = 0

    def append(
        self, store: EmbeddedBackend, events: list[dict[str, Any]]
    ) -> list[tuple[str, int, bytes]]:
        rows, checkpoints, notes = [], [], []
        for item in events:
            offer = self.sequencer.offer(
                item["tenant_id"], item["event_id"], canonical_leaf(item), self.offset
            )
            link = offer.link
            assert link is not None
            record = {"event": item, "seq": link.seq, "prev_hash": link.prev_hash,
                      "hash": link.hash, "leaf_hash": link.leaf_hash}  # fmt: skip
            rows.append(chained_row(record, "tamper", 0, self.offset))
            self.offset += 1
            for tenant_id in self.sequencer.due_batches():
                self._close(tenant_id, checkpoints, notes)
        # A clean shutdown: every open batch is signed.
        for tenant_id in self.sequencer.open_batches():
            self._close(tenant_id, checkpoints, notes)
        store.insert_arrow("events", to_arrow(rows, EVENTS_SCHEMA))
        store.insert_arrow("checkpoints", to_arrow(checkpoints, CHECKPOINTS_SCHEMA))
        return notes

    def reject(
        self, store: EmbeddedBackend, originals: list[bytes], in_envelope: bool = False
    ) -> list[tuple[str, int, bytes]]:
        """Chain rejections of ``originals`` like the worker, store them like the sink;
        ``in_envelope``: as events 0, 1, 2 of envelopes (source_index set, in the leaf)."""
        rows, checkpoints, notes = [], [], []
        for number, original in enumerate(originals):
            index = number % 3 if in_envelope else None
            rejection = {
                "original": original, "original_key": None, "reason": "not Avro",
                "error_kind": "undecodable", "source_topic": "authtrail.events",
                "source_partition": 0, "source_offset": self.offset, "source_timestamp": None,
                "tenant_id": None, "rejected_at": 1_700_000_000_000_000 + self.offset,
                "source_index": index,
            }  # fmt: skip
            link = self.sequencer.chain_rejection(REJECTIONS, rejection_leaf(rejection),
                                                  self.offset, index)  # fmt: skip
            assert link is not None
            record = {"rejection": rejection, "chain_tenant_id": REJECTIONS, "seq": link.seq,
                      "prev_hash": link.prev_hash, "hash": link.hash,
                      "leaf_hash": link.leaf_hash, "epoch": 0}  # fmt: skip
            rows.append(rejected_row(record, "tamper", 0, self.offset))
            if index is None or index == 2:
                self.offset += 1  # the next message
            for tenant_id in self.sequencer.due_batches():
                self._close(tenant_id, checkpoints, notes)
        for tenant_id in self.sequencer.open_batches():
            self._close(tenant_id, checkpoints, notes)
        store.insert_arrow("rejected", to_arrow(rows, REJECTED_SCHEMA))
        store.insert_arrow("checkpoints", to_arrow(checkpoints, CHECKPOINTS_SCHEMA))
        return notes

    def _close(self, tenant_id: str, checkpoints: list[Any], notes: list[Any]) -> None:
        signed = self.sequencer.close_batch(tenant_id)
        checkpoints.append(checkpoint_row(_checkpoint_record(signed), "tamper", 0, self.offset))
        notes.append((tenant_id, signed.checkpoint.size, signed.note))
        self.offset += 1


def run_verify(data_dir: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    """``authtrail verify --json`` with the pinned key, state and publication; in-process."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    arguments = [
        "--data-dir", str(data_dir), "verify", "--json",
        "--key", str(data_dir.parent / "pinned.pub"),
        *extra,
    ]  # fmt: skip
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(arguments)
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else {}, err.getvalue()


def damage_of(report: dict[str, Any], tenant_id: str) -> tuple[str | None, int | None]:
    (result,) = [r for r in report["tenants"] if r["tenant_id"] == tenant_id]
    return result["damage"], result["seq"]


@dataclass
class Attacked:
    """One test's copy: the data dir to attack and the auditor's own files beside it."""

    data_dir: Path
    state: Path
    published: Path
    older_store: Path

    def store(self) -> EmbeddedBackend:
        return EmbeddedBackend(self.data_dir / "clickhouse")

    def mutate(self, *statements: str) -> None:
        store = self.store()
        try:
            for statement in statements:
                store.command(statement, {"mutations_sync": 2})
        finally:
            store.close()

    def verify(self, *extra: str) -> tuple[int, dict[str, Any], str]:
        return run_verify(self.data_dir, *extra)

    def audit(self, *extra: str) -> tuple[int, dict[str, Any], str]:
        """verify with the auditor state and the publication."""
        return self.verify("--state", str(self.state), "--published", str(self.published), *extra)


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tamper-pristine")
    data_dir = root / "data"
    _, public = write_key_pair(data_dir / "keys", "authtrail")
    shutil.copy(public, root / "pinned.pub")  # what the auditor was handed
    writer = Writer(data_dir)
    publication = Publication(root / "published", log_origin=LOG_ORIGIN, signer=writer.signer)
    store = EmbeddedBackend(data_dir / "clickhouse")
    try:
        for statement in create_statements():
            store.command(statement)
        rng = random.Random(7)
        first = [event(n, rng.choice(TENANTS)) for n in range(150)]
        publication.publish_checkpoints(writer.append(store, first))
        garbage = [b"\x00garbage %d" % n for n in range(30)]
        publication.publish_checkpoints(writer.reject(store, garbage))
        publication.publish_directory()
    finally:
        store.close()
    shutil.copytree(data_dir / "clickhouse", root / "older-clickhouse", symlinks=True)
    store = EmbeddedBackend(data_dir / "clickhouse")
    try:
        second = [event(n, rng.choice(TENANTS)) for n in range(150, 300)]
        publication.publish_checkpoints(writer.append(store, second))
        garbage = [b"\x00garbage %d" % n for n in range(30, 45)]
        publication.publish_checkpoints(writer.reject(store, garbage, in_envelope=True))
        publication.publish_directory()
    finally:
        store.close()
    code, report, err = run_verify(data_dir, "--state", str(root / "state.json"),
                                   "--published", str(root / "published"))  # fmt: skip
    assert code == 0, (report, err)
    return root


@pytest.fixture
def attacked(pristine: Path, tmp_path: Path) -> Iterator[Attacked]:
    shutil.copytree(pristine, tmp_path / "copy", symlinks=True)
    root = tmp_path / "copy"
    yield Attacked(
        root / "data", root / "state.json", root / "published", root / "older-clickhouse"
    )
