"""Hash chain: known answer from the spec, and every kind of damage is caught and named."""

from __future__ import annotations

import hashlib
import struct

import pytest

from authtrail.errors import ChainError, InvalidArgumentError
from authtrail.stream.core.chain import (
    GENESIS_HASH,
    ChainHead,
    ChainLink,
    StoredLink,
    build_chain,
    chain_hash,
    verify_chain,
)

TENANT = "acme"


def _leaf_hash(n: int) -> bytes:
    return hashlib.sha256(b"\x00" + f"event {n}".encode()).digest()


def _stored(links: list[ChainLink]) -> list[StoredLink]:
    return [StoredLink(link, link.leaf_hash) for link in links]


def test_chain_hash_known_answer_from_the_spec() -> None:
    leaf = bytes(range(32))
    expected = hashlib.sha256(
        b"authtrail-chain-v1\n" + b"\x00\x00\x00\x04acme" + struct.pack(">Q", 1) + bytes(32) + leaf
    ).digest()
    assert chain_hash(TENANT, 1, GENESIS_HASH, leaf) == expected
    assert (
        expected.hex()
        == hashlib.sha256(
            bytes.fromhex("61757468747261696c2d636861696e2d76310a0000000461636d650000000000000001")
            + bytes(32)
            + leaf
        ).hexdigest()
    )


def test_chain_hash_binds_tenant_seq_prev_and_leaf() -> None:
    base = chain_hash(TENANT, 3, GENESIS_HASH, _leaf_hash(3))
    assert chain_hash("acmf", 3, GENESIS_HASH, _leaf_hash(3)) != base
    assert chain_hash(TENANT, 4, GENESIS_HASH, _leaf_hash(3)) != base
    assert chain_hash(TENANT, 3, b"\x01" * 32, _leaf_hash(3)) != base
    assert chain_hash(TENANT, 3, GENESIS_HASH, _leaf_hash(4)) != base


@pytest.mark.parametrize("seq", [0, -1, 2**64])
def test_chain_hash_refuses_bad_seq(seq: int) -> None:
    with pytest.raises(InvalidArgumentError):
        chain_hash(TENANT, seq, GENESIS_HASH, _leaf_hash(1))


def test_chain_hash_refuses_bad_hash_sizes() -> None:
    with pytest.raises(InvalidArgumentError):
        chain_hash(TENANT, 1, bytes(31), _leaf_hash(1))
    with pytest.raises(InvalidArgumentError):
        chain_hash(TENANT, 1, GENESIS_HASH, bytes(33))


def test_intact_chain_verifies_whole_and_in_slices() -> None:
    links = build_chain(TENANT, (_leaf_hash(n) for n in range(1, 11)))
    head = verify_chain(TENANT, _stored(links), expected_size=10)
    assert (head.seq, head.hash) == (10, links[-1].hash)
    middle = verify_chain(TENANT, _stored(links[:4]))
    assert verify_chain(TENANT, _stored(links[4:]), start=middle) == head


def test_head_append_matches_build_chain() -> None:
    head = ChainHead(TENANT)
    for n, link in enumerate(build_chain(TENANT, (_leaf_hash(n) for n in range(1, 4))), 1):
        head, appended = head.append(_leaf_hash(n))
        assert appended == link


def _damage(stored: list[StoredLink], expected_size: int | None = 10) -> ChainError:
    with pytest.raises(ChainError) as caught:
        verify_chain(TENANT, stored, expected_size=expected_size)
    return caught.value


@pytest.fixture
def chain() -> list[StoredLink]:
    return _stored(build_chain(TENANT, (_leaf_hash(n) for n in range(1, 11))))


def test_modified_content_is_named(chain: list[StoredLink]) -> None:
    chain[4] = StoredLink(chain[4].link, _leaf_hash(999))
    error = _damage(chain)
    assert (error.tenant_id, error.seq, error.damage) == (TENANT, 5, "modified")


def test_modified_content_with_recomputed_leaf_hash_is_caught(chain: list[StoredLink]) -> None:
    link = chain[4].link
    forged = ChainLink(link.seq, link.prev_hash, _leaf_hash(999), link.hash)
    chain[4] = StoredLink(forged, forged.leaf_hash)
    assert (_damage(chain).seq, _damage(chain).damage) == (5, "modified")


def test_rehashed_forgery_breaks_the_next_link(chain: list[StoredLink]) -> None:
    link = chain[4].link
    leaf = _leaf_hash(999)
    forged = ChainLink(5, link.prev_hash, leaf, chain_hash(TENANT, 5, link.prev_hash, leaf))
    chain[4] = StoredLink(forged, leaf)
    error = _damage(chain)
    assert (error.seq, error.damage) == (6, "modified")


def test_deleted_record_is_named(chain: list[StoredLink]) -> None:
    del chain[6]
    error = _damage(chain)
    assert (error.seq, error.damage) == (7, "deleted")


def test_truncated_tail_is_named_against_checkpoint_size(chain: list[StoredLink]) -> None:
    error = _damage(chain[:8])
    assert (error.seq, error.damage) == (9, "deleted")
    verify_chain(TENANT, chain[:8], expected_size=None)  # without a checkpoint it is a prefix


def test_duplicated_record_is_named(chain: list[StoredLink]) -> None:
    chain.insert(3, chain[3])
    error = _damage(chain)
    assert (error.seq, error.damage) == (4, "duplicated")


def test_inserted_record_is_named(chain: list[StoredLink]) -> None:
    leaf = _leaf_hash(555)
    prev = chain[2].link.hash
    forged = ChainLink(4, prev, leaf, chain_hash(TENANT, 4, prev, leaf))
    chain.insert(4, StoredLink(forged, leaf))
    error = _damage(chain)
    assert (error.seq, error.damage) == (4, "inserted")


def test_swapped_content_is_named_reordered(chain: list[StoredLink]) -> None:
    a, b = chain[2], chain[3]
    chain[2] = StoredLink(a.link, b.content_leaf_hash)
    chain[3] = StoredLink(b.link, a.content_leaf_hash)
    error = _damage(chain)
    assert (error.seq, error.damage) == (3, "reordered")


def test_swapped_rows_with_renumbered_seq_are_named_reordered(chain: list[StoredLink]) -> None:
    a, b = chain[2].link, chain[7].link
    chain[2] = StoredLink(ChainLink(3, b.prev_hash, b.leaf_hash, b.hash), b.leaf_hash)
    chain[7] = StoredLink(ChainLink(8, a.prev_hash, a.leaf_hash, a.hash), a.leaf_hash)
    error = _damage(chain)
    assert (error.seq, error.damage) == (3, "reordered")
    assert "seq 8" in error.detail


def test_errors_name_tenant_and_seq(chain: list[StoredLink]) -> None:
    del chain[0]
    error = _damage(chain)
    assert "acme" in str(error) and "seq 1" in str(error)


def test_start_head_of_another_tenant_is_refused(chain: list[StoredLink]) -> None:
    with pytest.raises(InvalidArgumentError):
        verify_chain(TENANT, chain, start=ChainHead("other"))
