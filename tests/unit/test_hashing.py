"""authtrail._hashing, the sequencer's SHA-256 in C, against hashlib and the Python it
stands in for.

Each function may leave an input to Python (it returns None) but must never give another
digest, and the C path must actually be taken for ordinary input (else these tests would
pass on a build that always falls back). The worker's known output is checked with the C
code switched off too, so the fallback stays right where it is the only path.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authtrail.errors import InvalidArgumentError
from authtrail.stream.core import chain, compact, id_window, merkle, native_hashes, sequencer
from authtrail.stream.core.chain import CHAIN_DOMAIN, chain_hash, chain_hash_unchecked
from authtrail.stream.core.tiles import group_roots
from authtrail.stream.worker import snapshot
from benchmarks.worker_core import run, workload
from tests.unit.test_worker_golden import CHAINED_DIGEST

try:
    from authtrail import _hashing
except ImportError as exc:  # pragma: no cover - what this test exists to catch
    pytest.fail(
        f"authtrail._hashing is not built ({exc}): install OpenSSL's headers (libssl-dev) "
        "and reinstall (make venv); without it every hash goes through hashlib",
        pytrace=False,
    )

HASHES = st.binary(min_size=32, max_size=32)
# Every alias the hot paths call, by module: switched off together by ``hashlib_only``,
# which also gives the sequencer and snapshots the Python compact trees.
NATIVE_ALIASES = [
    (merkle, "_native_leaf_hash"),
    (merkle, "_native_node_hash"),
    (chain, "_native_chain_hash"),
    (sequencer, "_native_leaf_hash"),
    (sequencer, "_native_offer"),
    (id_window, "_native_id_key"),
]


def sha256(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def python_chain_hash(tenant_id: str, seq: int, prev_hash: bytes, leaf_hash: bytes) -> bytes:
    """INTEGRITY.md §3 written out again, independently of chain.py."""
    tenant = tenant_id.encode()
    return sha256(CHAIN_DOMAIN, struct.pack(">I", len(tenant)), tenant, struct.pack(">Q", seq),
                  prev_hash, leaf_hash)  # fmt: skip


@pytest.fixture
def hashlib_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def left_to_python(*args: object) -> None:
        return None

    for module, name in NATIVE_ALIASES:
        monkeypatch.setattr(module, name, left_to_python)
    for module in (sequencer, snapshot):
        monkeypatch.setattr(module, "CompactTree", compact.PythonCompactTree)
    yield


def test_the_hot_paths_call_the_c_code() -> None:
    assert native_hashes.BUILT
    natives: dict[str, Callable[..., Any]] = {
        "_native_leaf_hash": _hashing.leaf_hash,
        "_native_node_hash": _hashing.node_hash,
        "_native_chain_hash": _hashing.chain_hash,
        "_native_offer": _hashing.sequencer_offer,
        "_native_id_key": _hashing.id_key,
    }
    for module, name in NATIVE_ALIASES:
        assert getattr(module, name) is natives[name], (module.__name__, name)
    assert _hashing.leaf_hash(b"event") is not None
    assert _hashing.node_hash(bytes(32), bytes(32)) is not None
    assert _hashing.chain_hash("acme", 1, bytes(32), bytes(32)) is not None
    assert sequencer.CompactTree is snapshot.CompactTree is compact.CompactTree
    assert isinstance(sequencer.TenantLog("acme", sequencer.ChainHead("acme", 0, bytes(32))).tree,
                      _hashing.CompactCore)  # fmt: skip


def test_known_answers() -> None:
    # RFC 6962 test vectors as transparency-dev/merkle has them: the empty leaf's hash, and
    # the root of the one-entry tree holding 0x00.
    empty_leaf = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert _hashing.leaf_hash(b"") == bytes.fromhex(empty_leaf)
    assert _hashing.leaf_hash(b"\x00") == bytes.fromhex(
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
    )
    # chain.py's known answer (tests/unit/test_chain.py): tenant "acme", seq 1, genesis.
    leaf = bytes(range(32))
    assert _hashing.chain_hash("acme", 1, bytes(32), leaf) == sha256(
        bytes.fromhex("61757468747261696c2d636861696e2d76310a0000000461636d650000000000000001"),
        bytes(32), leaf,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), HASHES, HASHES)
def test_leaf_and_node_hash_equal_hashlib(data: bytes, left: bytes, right: bytes) -> None:
    assert _hashing.leaf_hash(data) == sha256(b"\x00", data) == merkle.leaf_hash(data)
    assert _hashing.node_hash(left, right) == sha256(b"\x01", left, right)
    # node_hash takes children of any length, as merkle.node_hash does unchecked.
    assert _hashing.node_hash(data, left) == sha256(b"\x01", data, left)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.integers(1, 2**64 - 1), HASHES, HASHES)
def test_chain_hash_equals_the_definition(tenant: str, seq: int, prev: bytes, leaf: bytes) -> None:
    try:
        expected = python_chain_hash(tenant, seq, prev, leaf)
    except UnicodeEncodeError:  # a lone surrogate: left to chain.py, which raises
        assert _hashing.chain_hash(tenant, seq, prev, leaf) is None
        return
    assert _hashing.chain_hash(tenant, seq, prev, leaf) == expected
    assert chain_hash(tenant, seq, prev, leaf) == expected


@pytest.mark.parametrize(
    "args",
    [
        ("acme", 0, bytes(32), bytes(32)),  # seq 0
        ("acme", -1, bytes(32), bytes(32)),
        ("acme", 2**64, bytes(32), bytes(32)),
        ("acme", True, bytes(32), bytes(32)),  # not an exact int
        ("acme", 1.0, bytes(32), bytes(32)),
        (b"acme", 1, bytes(32), bytes(32)),  # not a str
        ("\ud800", 1, bytes(32), bytes(32)),  # UTF-8 cannot encode it
        ("acme", 1, bytes(31), bytes(32)),
        ("acme", 1, bytes(32), bytes(33)),
        ("acme", 1, bytearray(32), bytes(32)),
        ("acme", 1, bytes(32), memoryview(bytes(32))),
    ],
)
def test_chain_hash_leaves_the_unusual_to_python(args: tuple[Any, ...]) -> None:
    assert _hashing.chain_hash(*args) is None


def test_the_python_path_keeps_its_checks_and_answers() -> None:
    with pytest.raises(InvalidArgumentError):
        chain_hash("acme", 0, bytes(32), bytes(32))
    with pytest.raises(UnicodeEncodeError):
        chain_hash_unchecked("\ud800", 1, bytes(32), bytes(32))
    # bool is an int to struct: the Python path hashes seq 1, as it always did.
    assert chain_hash_unchecked("acme", True, bytes(32), bytes(32)) == python_chain_hash(
        "acme", 1, bytes(32), bytes(32)
    )
    for tree in (compact.CompactTree(), compact.PythonCompactTree()):
        with pytest.raises(InvalidArgumentError):
            tree.append_leaf_hash(bytes(31))
        assert tree.size == 0 and tree.to_hashes() == []


@pytest.mark.parametrize("bad", [None, b"", bytes(31), bytes(33), bytearray(32), "x" * 32])
def test_leaf_and_node_hash_leave_other_types_to_python(bad: Any) -> None:
    if not isinstance(bad, bytes):
        assert _hashing.leaf_hash(bad) is None
        assert _hashing.node_hash(bad, bytes(32)) is None
        assert _hashing.node_hash(bytes(32), bad) is None
    else:  # any length of bytes is hashed
        assert _hashing.leaf_hash(bad) == sha256(b"\x00", bad)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(0, 3), st.randoms(use_true_random=False))
def test_tile_roots_equal_the_python_group_roots(height: int, groups: int, rng: Any) -> None:
    width = 1 << height
    hashes = [rng.randbytes(32) for _ in range(width * groups)]
    joined = _hashing.tile_roots(b"".join(hashes), width)
    assert joined is not None and len(joined) == 32 * groups
    roots = [joined[at : at + 32] for at in range(0, len(joined), 32)]
    assert roots == group_roots(hashes, height)
    assert roots == [merkle.root_from_leaf_hashes(hashes[g * width : (g + 1) * width])
                     for g in range(groups)]  # fmt: skip


def test_tile_roots_known_answer() -> None:
    # Two leaf hashes of RFC 6962's test vectors (the empty leaf, the leaf 0x00): their
    # root is a node hash written out with hashlib.
    left = bytes.fromhex("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    right = bytes.fromhex("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")
    assert _hashing.tile_roots(left + right, 2) == sha256(b"\x01", left, right)


@pytest.mark.parametrize(
    "packed, width",
    [
        (bytearray(64), 2),  # not exact bytes
        (bytes(64), 1),  # width not 2 .. 65536, or not a power of two
        (bytes(96), 3),
        (bytes(64), 0),
        (bytes(64), -2),
        (bytes(32 * 131072), 131072),
        (bytes(64), 2**70),
        (bytes(64), 2.0),
        (bytes(64), True),  # an int subclass
        (bytes(63), 2),  # not a whole number of groups
        (bytes(96), 2),
    ],
)
def test_tile_roots_leave_the_unusual_to_python(packed: Any, width: Any) -> None:
    assert _hashing.tile_roots(packed, width) is None


def test_the_worker_chains_the_known_bytes_with_hashlib_alone(hashlib_only: None) -> None:
    assert merkle.leaf_hash(b"x") == sha256(b"\x00", b"x")
    assert run(workload(3000, 20, 100))["chained_sha256"] == CHAINED_DIGEST
