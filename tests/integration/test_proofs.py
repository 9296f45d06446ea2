"""Proof bundles from the real ClickHouse engine (chdb), checked offline by verify-proof.

The store is built as in test_verify_store.py: the real Sequencer chains and signs, rows
go through the sink's row and Arrow path. ``authtrail prove`` and ``verify-proof`` run as
subprocesses, the way an operator and an outside auditor would run them.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authtrail.errors import ChainError
from authtrail.keys import load_keyring, load_signer, write_key_pair
from authtrail.sinks.backend import EmbeddedBackend, ServerBackend
from authtrail.sinks.http_front import HttpFront
from authtrail.sinks.proofs import (
    LevelsInSql,
    ProofUnavailableError,
    find_event,
    prove_consistency,
    prove_inclusion,
)
from authtrail.sinks.rows import (
    CHECKPOINTS_SCHEMA,
    EVENTS_SCHEMA,
    chained_row,
    checkpoint_row,
    to_arrow,
)
from authtrail.sinks.tables import create_statements
from authtrail.stream.core.audit import MerkleLevels
from authtrail.stream.core.bundle import (
    EventMismatchError,
    verify_consistency_bundle,
    verify_inclusion_bundle,
)
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.tree_proofs import inclusion_ranges, nodes_of_ranges
from authtrail.stream.worker.sequencing import _checkpoint_record

pytestmark = pytest.mark.integration

ORIGIN = "authtrail.test"
TENANTS = ("acme", "globex", "initech")
SHARED_ID = "shared-id"  # one event id stored in two tenants


def _event(n: int, rng: random.Random) -> dict:
    tenant = TENANTS[n % 3] if n not in (10, 11) else ("acme", "globex")[n - 10]
    return {
        "event_id": SHARED_ID if n in (10, 11) else f"ev-{n}",
        "tenant_id": tenant,
        "event_type": rng.choice(["LOGIN", "LOGIN_FAILED", "LOGOUT", "TOKEN_ISSUED"]),
        "outcome": "SUCCESS",
        "occurred_at": 1_700_000_000_000_000 + n * 1000,
        "received_at": 1_700_000_000_000_500 + n * 1000 if n % 4 else None,
        "user_name": f"user{rng.randrange(20)}",
        "client_ip": f"203.0.113.{rng.randrange(255)}",
        "user_agent": 'Mozilla/5.0 "quoted" \\ é',
        "attributes": {"k": str(n), "z": "last"} if n % 3 else {},
    }


def _build(root: Path) -> dict[str, Path]:
    """A data dir whose store holds 300 events of 3 tenants, checkpoints every 25 per
    tenant (the tail after the last one unsigned), and the verifier key beside it."""
    key_path, pub_path = write_key_pair(root / "keys", "proof-test")
    backend = EmbeddedBackend(root / "data" / "clickhouse")
    try:
        for statement in create_statements():
            backend.command(statement)
        sequencer = Sequencer(load_signer(key_path), ORIGIN, batch_size=25, batch_interval=3600)
        rng = random.Random(5)
        rows, checkpoints = [], []
        for offset in range(300):
            event = _event(offset, rng)
            link = sequencer.offer(
                event["tenant_id"], event["event_id"], canonical_leaf(event), offset
            ).link
            assert link is not None
            record = {"event": event, "seq": link.seq, "prev_hash": link.prev_hash,
                      "hash": link.hash, "leaf_hash": link.leaf_hash}  # fmt: skip
            rows.append(chained_row(record, "test", 0, offset))
            for tenant in sequencer.due_batches():
                signed = sequencer.close_batch(tenant)
                checkpoints.append(
                    checkpoint_row(_checkpoint_record(signed), "test", 0, len(checkpoints))
                )
        backend.insert_arrow("events", to_arrow(rows, EVENTS_SCHEMA))
        backend.insert_arrow("checkpoints", to_arrow(checkpoints, CHECKPOINTS_SCHEMA))
    finally:
        backend.close()
    return {"data": root / "data", "pub": pub_path, "root": root}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _build(tmp_path_factory.mktemp("proofs"))


@pytest.fixture
def store(built: dict[str, Path]) -> Iterator[EmbeddedBackend]:
    backend = EmbeddedBackend(built["data"] / "clickhouse", read_only=True)
    yield backend
    backend.close()


@pytest.fixture
def damaged(tmp_path: Path) -> Iterator[tuple[EmbeddedBackend, Path]]:
    """A store of its own, and its verifier key, for tests that tamper with it."""
    built = _build(tmp_path)
    backend = EmbeddedBackend(built["data"] / "clickhouse")
    yield backend, built["pub"]
    backend.close()


def _authtrail(data: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authtrail.cli", "--data-dir", str(data), *arguments],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_prove_an_event_by_id_and_verify_it_offline(built: dict[str, Path]) -> None:
    data, pub, out = built["data"], str(built["pub"]), built["root"] / "ev-100.json"
    proved = _authtrail(data, "prove", "ev-100", "--out", str(out))
    assert proved.returncode == 0, proved.stderr
    assert "tenant 'globex' seq 34 (event 'ev-100'): inclusion in the tree of size 100" in (
        proved.stderr
    )
    checked = _authtrail(data, "verify-proof", str(out), "--key", pub)
    assert checked.returncode == 0, checked.stderr
    assert "ok: event 'ev-100' is seq 34 of tenant 'globex'" in checked.stdout
    assert "checkpoint signed by proof-test+" in checked.stdout

    bundle = json.loads(out.read_text())
    bundle["event"]["user_name"] = "mallory"
    tampered = built["root"] / "tampered.json"
    tampered.write_text(json.dumps(bundle))
    failed = _authtrail(data, "verify-proof", str(tampered), "--key", pub, "--json")
    assert failed.returncode == 1, failed.stderr
    assert json.loads(failed.stdout)["error"] == "EventMismatchError"


def test_prove_consistency_and_the_other_forms(built: dict[str, Path]) -> None:
    data, out = built["data"], built["root"] / "consistency.json"
    proved = _authtrail(data, "prove", "--consistency", "--tenant", "acme", "25", "75",
                        "--out", str(out))  # fmt: skip
    assert proved.returncode == 0, proved.stderr
    checked = _authtrail(data, "verify-proof", str(out), "--key", str(built["pub"]))
    assert checked.returncode == 0, checked.stderr
    assert "at size 75 extends its checkpoint of size 25" in checked.stdout
    missing = _authtrail(data, "prove", "--consistency", "--tenant", "acme", "24", "75")
    assert missing.returncode == 2
    assert "no stored checkpoint of size 24 (stored sizes near it: 25, 50, 75" in missing.stderr

    ambiguous = _authtrail(data, "prove", SHARED_ID)
    assert ambiguous.returncode == 2 and "choose one with --tenant T" in ambiguous.stderr
    to_stdout = _authtrail(data, "prove", "--tenant", "initech", "--seq", "3")
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert json.loads(to_stdout.stdout)["seq"] == 3


def test_every_signed_record_of_a_tenant_proves(
    store: EmbeddedBackend, built: dict[str, Path]
) -> None:
    keyring = load_keyring([built["pub"]])
    for seq in (1, 2, 24, 25, 26, 50, 63, 75):
        bundle = prove_inclusion(store, ORIGIN, "initech", seq)
        assert bundle["tree_size"] == 75  # the newest checkpoint covering it
        verdict = verify_inclusion_bundle(bundle, keyring, log_origin=ORIGIN)
        assert verdict.chain_checked and verdict.seq == seq
        older = prove_inclusion(store, ORIGIN, "initech", seq, tree_size=75 if seq > 50 else 50)
        verify_inclusion_bundle(older, keyring)
    consistency = prove_consistency(store, ORIGIN, "globex", 50, 100)
    verdict = verify_consistency_bundle(consistency, keyring)
    assert (verdict.old.size, verdict.new.size) == (50, 100)


def test_proofs_through_the_analysts_front(store: EmbeddedBackend, built: dict[str, Path]) -> None:
    """While `authtrail up` runs, prove reads through its read-only, confined HTTP front."""
    keyring = load_keyring([built["pub"]])
    with HttpFront(store) as front, ServerBackend(front.analyst_url, read_only=True) as server:
        assert find_event(server, "ev-100") == ("globex", 34)
        verify_inclusion_bundle(prove_inclusion(server, ORIGIN, "globex", 34), keyring)
        verify_consistency_bundle(prove_consistency(server, ORIGIN, "acme", 25, 100), keyring)


def test_nodes_hashed_in_sql_equal_nodes_hashed_in_python(store: EmbeddedBackend) -> None:
    leaf_hashes = (
        store.query_arrow("SELECT leaf_hash FROM events WHERE tenant_id = 'acme' ORDER BY seq")
        .column(0)
        .to_pylist()
    )
    levels = MerkleLevels.from_leaf_hashes(leaf_hashes[:75])
    wanted = nodes_of_ranges(inclusion_ranges(0, 75)) + nodes_of_ranges(inclusion_ranges(74, 75))
    assert LevelsInSql(store).nodes("acme", 75, wanted) == {
        node: levels.node(*node) for node in wanted
    }


def test_event_ids_are_looked_up_and_ambiguity_is_refused(store: EmbeddedBackend) -> None:
    assert find_event(store, "ev-99") == ("acme", 35)
    with pytest.raises(ProofUnavailableError, match="stored more than once") as caught:
        find_event(store, SHARED_ID)
    assert "tenant 'acme' seq 5" in str(caught.value) and "tenant 'globex' seq 4" in str(
        caught.value
    )
    assert find_event(store, SHARED_ID, "globex") == ("globex", 4)
    with pytest.raises(ProofUnavailableError, match="no stored event"):
        find_event(store, "ev-99", "globex")


def test_unsigned_and_absent_records_are_refused(store: EmbeddedBackend) -> None:
    with pytest.raises(ProofUnavailableError, match="seq 76 is not signed yet"):
        prove_inclusion(store, ORIGIN, "initech", 76)
    with pytest.raises(ProofUnavailableError, match="no stored record of seq 500"):
        prove_inclusion(store, ORIGIN, "initech", 500)
    with pytest.raises(ProofUnavailableError, match="does not contain seq 60"):
        prove_inclusion(store, ORIGIN, "initech", 60, tree_size=50)


def test_a_tampered_store_yields_a_bundle_that_fails(
    damaged: tuple[EmbeddedBackend, Path],
) -> None:
    """The prover hides nothing: an edited event goes into the bundle as stored."""
    store, pub = damaged
    store.command(
        "ALTER TABLE events UPDATE user_name = 'mallory' WHERE tenant_id = 'acme' AND seq = 7",
        {"mutations_sync": 2},
    )
    bundle = prove_inclusion(store, ORIGIN, "acme", 7)
    with pytest.raises(EventMismatchError, match="seq 7: leaf hash"):
        verify_inclusion_bundle(bundle, load_keyring([pub]))
    store.command(
        "ALTER TABLE events DELETE WHERE tenant_id = 'acme' AND seq = 30", {"mutations_sync": 2}
    )
    with pytest.raises(ChainError, match="seq 30: deleted"):
        prove_inclusion(store, ORIGIN, "acme", 40)
