"""Checkpoints: exact body format, strict parser, signatures and the link to the predecessor."""

from __future__ import annotations

import base64
import dataclasses
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authtrail.errors import CheckpointError, InvalidArgumentError, SignatureError
from authtrail.stream.core.checkpoint import (
    GENESIS_PREV_DIGEST,
    Checkpoint,
    checkpoint_origin,
    open_checkpoint,
    sign,
    verify_successor,
)
from authtrail.stream.core.note import Signer, VerifierKey, make_keyring

# The Go note test key (golang.org/x/mod/sumdb/note): a fixed, public test signer.
PETER_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ORIGIN = "authtrail.local/acme"
ROOT = bytes(range(32))
BATCH_ROOT = bytes(range(32, 64))
CHAIN = bytes(range(64, 96))

FIRST = Checkpoint(
    origin=ORIGIN,
    size=5,
    root=ROOT,
    batch_first_seq=1,
    batch_last_seq=5,
    batch_root=BATCH_ROOT,
    chain_hash=CHAIN,
    prev_digest=GENESIS_PREV_DIGEST,
    time_micros=1764151200000000,
)
FIRST_BODY = (
    b"authtrail.local/acme\n"
    b"5\n"
    b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    b"authtrail-batch 1 5 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n"
    b"authtrail-chain QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\n"
    b"authtrail-prev AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
    b"authtrail-time 1764151200000000\n"
)


def _next(prev: Checkpoint, size: int, **changes: object) -> Checkpoint:
    fields: dict[str, object] = {
        "origin": prev.origin,
        "size": size,
        "root": hashlib.sha256(b"root %d" % size).digest(),
        "batch_first_seq": prev.size + 1,
        "batch_last_seq": size,
        "batch_root": hashlib.sha256(b"batch %d" % size).digest(),
        "chain_hash": hashlib.sha256(b"chain %d" % size).digest(),
        "prev_digest": prev.digest(),
        "time_micros": prev.time_micros + 1_000_000,
    }
    fields.update(changes)
    return Checkpoint(**fields)  # type: ignore[arg-type]


SECOND = _next(FIRST, 9)
THIRD = _next(SECOND, 10)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.parse(PETER_SIGNER_KEY)


@pytest.fixture(scope="module")
def keyring(signer: Signer) -> dict[tuple[str, int], VerifierKey]:
    return dict(make_keyring([signer.verifier_key()]))


# --- known answers -------------------------------------------------------------------


def test_body_known_answer() -> None:
    assert FIRST.body() == FIRST_BODY
    assert FIRST.digest() == hashlib.sha256(FIRST_BODY).digest()
    assert SECOND.prev_digest == hashlib.sha256(FIRST_BODY).digest()


def test_signed_checkpoint_known_answer(signer: Signer) -> None:
    # Ed25519 is deterministic: this pins the whole signed note, byte for byte.
    note = sign(FIRST, signer)
    assert note.startswith(FIRST_BODY + "\n— PeterNeumann x08go".encode())
    payload = base64.b64decode(note.split(b" ")[-1])
    assert payload[:4].hex() == "c74f20a3" and len(payload) == 4 + 64
    signer.verifier_key().verify(FIRST_BODY, payload[4:])


def test_origin_is_prefix_slash_tenant() -> None:
    assert checkpoint_origin("authtrail.local", "acme") == ORIGIN
    for prefix, tenant in (("", "acme"), ("authtrail.local", ""), ("a", "b c"), ("a", "b+c")):
        with pytest.raises(InvalidArgumentError):
            checkpoint_origin(prefix, tenant)


def test_the_origin_check_refuses_exactly_plus_whitespace_and_controls() -> None:
    # The check is a regex; this is its definition, over every code point.
    from authtrail.stream.core.checkpoint import _is_valid_origin

    for code in range(0x110000):
        char = chr(code)
        refused = char == "+" or char.isspace() or code < 0x20 or code == 0x7F
        assert _is_valid_origin(f"a{char}b") is not refused, hex(code)
    assert not _is_valid_origin("")


def test_the_body_is_made_once_and_a_changed_copy_gets_its_own() -> None:
    body = FIRST.body()
    assert FIRST.body() is body and FIRST.digest() == hashlib.sha256(body).digest()
    later = dataclasses.replace(FIRST, time_micros=FIRST.time_micros + 1)
    assert later.body() != body and later == Checkpoint.parse(later.body())
    assert later.body().endswith(f"authtrail-time {FIRST.time_micros + 1}\n".encode())


# --- round trips ---------------------------------------------------------------------


def test_parse_round_trip() -> None:
    for checkpoint in (FIRST, SECOND, THIRD):
        assert Checkpoint.parse(checkpoint.body()) == checkpoint


_hashes = st.binary(min_size=32, max_size=32)


@given(
    tenant=st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
        min_size=1,
        max_size=20,
    ).filter(lambda t: "+" not in t and not any(c.isspace() for c in t)),
    size=st.integers(1, 2**64 - 1),
    batch_length=st.integers(1, 2**64 - 1),
    root=_hashes,
    batch_root=_hashes,
    chain=_hashes,
    prev=_hashes,
    time_micros=st.integers(0, 2**64 - 1),
)
def test_parse_round_trip_property(
    tenant: str,
    size: int,
    batch_length: int,
    root: bytes,
    batch_root: bytes,
    chain: bytes,
    prev: bytes,
    time_micros: int,
) -> None:
    first_seq = max(1, size - batch_length + 1)
    checkpoint = Checkpoint(
        origin=checkpoint_origin("authtrail.local", tenant),
        size=size,
        root=root,
        batch_first_seq=first_seq,
        batch_last_seq=size,
        batch_root=batch_root,
        chain_hash=chain,
        prev_digest=GENESIS_PREV_DIGEST if first_seq == 1 else hashlib.sha256(prev).digest(),
        time_micros=time_micros,
    )
    assert Checkpoint.parse(checkpoint.body()) == checkpoint


def test_sign_and_open_round_trip(
    signer: Signer, keyring: dict[tuple[str, int], VerifierKey]
) -> None:
    note = sign(SECOND, signer)
    assert open_checkpoint(note, keyring, ORIGIN) == SECOND
    assert open_checkpoint(note.decode("utf-8"), keyring, ORIGIN) == SECOND


def test_old_checkpoint_still_opens_after_key_rotation(signer: Signer) -> None:
    new_signer = Signer("PeterNeumann", bytes(range(32)))
    old_note, new_note = sign(FIRST, signer), sign(SECOND, new_signer)
    keyring = make_keyring([signer.verifier_key(), new_signer.verifier_key()])
    assert open_checkpoint(old_note, keyring, ORIGIN) == FIRST
    assert open_checkpoint(new_note, keyring, ORIGIN) == SECOND
    with pytest.raises(SignatureError):
        open_checkpoint(old_note, make_keyring([new_signer.verifier_key()]), ORIGIN)


# --- tampered signed checkpoints -----------------------------------------------------


def _replace_line(note: bytes, index: int, new_line: bytes) -> bytes:
    lines = note.split(b"\n")
    assert lines[index] != new_line
    lines[index] = new_line
    return b"\n".join(lines)


@pytest.mark.parametrize(
    ("index", "new_line"),
    [
        (0, b"authtrail.local/other"),
        (1, b"8"),
        (2, base64.b64encode(bytes(range(1, 33)))),
        (3, b"authtrail-batch 6 9 " + base64.b64encode(bytes(32))),
        (4, b"authtrail-chain " + base64.b64encode(bytes(range(1, 33)))),
        (5, b"authtrail-prev " + base64.b64encode(hashlib.sha256(b"forged").digest())),
        (6, b"authtrail-time 1764151200000001"),
    ],
)
def test_each_altered_line_fails_the_signature(
    signer: Signer, keyring: dict[tuple[str, int], VerifierKey], index: int, new_line: bytes
) -> None:
    tampered = _replace_line(sign(SECOND, signer), index, new_line)
    with pytest.raises(SignatureError):
        open_checkpoint(tampered, keyring, ORIGIN)
    if index != 1:  # a new size alone breaks size == batch last seq; the rest parse
        # The altered body itself is well-formed: only the signature catches it.
        Checkpoint.parse(tampered[: tampered.index(b"\n\n") + 1])


def test_bit_flips_in_signature_are_rejected(
    signer: Signer, keyring: dict[tuple[str, int], VerifierKey]
) -> None:
    note = sign(SECOND, signer)
    start = note.rindex(b" ") + 1
    for index in range(start, len(note) - 1):
        for bit in range(8):
            tampered = bytearray(note)
            tampered[index] ^= 1 << bit
            with pytest.raises(CheckpointError):
                open_checkpoint(bytes(tampered), keyring, ORIGIN)


def test_extra_or_removed_newlines_are_rejected(
    signer: Signer, keyring: dict[tuple[str, int], VerifierKey]
) -> None:
    note = sign(SECOND, signer)
    body_end = note.index(b"\n\n")
    newlines = [i for i, byte in enumerate(note) if byte == 0x0A]
    for position in newlines:
        with pytest.raises(CheckpointError):
            open_checkpoint(note[:position] + note[position + 1 :], keyring, ORIGIN)
        with pytest.raises(CheckpointError):
            open_checkpoint(note[:position] + b"\n" + note[position:], keyring, ORIGIN)
    with pytest.raises(CheckpointError):
        open_checkpoint(note[:body_end] + b"\r" + note[body_end:], keyring, ORIGIN)


def test_wrong_keys_are_rejected(
    signer: Signer, keyring: dict[tuple[str, int], VerifierKey]
) -> None:
    same_name_other_key = Signer("PeterNeumann", bytes(32))
    with pytest.raises(SignatureError):
        open_checkpoint(sign(SECOND, same_name_other_key), keyring, ORIGIN)
    renamed = sign(SECOND, signer).replace(b"PeterNeumann", b"PeterNeumann2")
    with pytest.raises(SignatureError):
        open_checkpoint(renamed, keyring, ORIGIN)


def test_truncated_signature_line_is_rejected(
    signer: Signer, keyring: dict[tuple[str, int], VerifierKey]
) -> None:
    note = sign(SECOND, signer)
    for cut in (1, 2, 4, 8, 40, 80):
        with pytest.raises(CheckpointError):
            open_checkpoint(note[: -1 - cut] + b"\n", keyring, ORIGIN)


def test_checkpoint_of_another_tenant_is_rejected(
    signer: Signer, keyring: dict[tuple[str, int], VerifierKey]
) -> None:
    with pytest.raises(CheckpointError, match=r"not the expected 'authtrail\.local/globex'"):
        open_checkpoint(sign(SECOND, signer), keyring, "authtrail.local/globex")


# --- strict parser -------------------------------------------------------------------

_LINES = FIRST_BODY.split(b"\n")[:-1]
_SECOND_LINES = SECOND.body().split(b"\n")[:-1]


def _body(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _with(lines: list[bytes], index: int, new_line: bytes) -> bytes:
    changed = list(lines)
    changed[index] = new_line
    return _body(changed)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        FIRST_BODY[:-1],  # no final newline
        FIRST_BODY + b"trailing garbage\n",
        FIRST_BODY + b"\n",
        FIRST_BODY + b"authtrail-time 1\n",  # duplicated line
        _body(_LINES[:-1]),  # missing time line
        _body(_LINES[:3]),  # a plain tlog-checkpoint without authtrail lines
        _body([*_LINES[:4], _LINES[5], _LINES[4], _LINES[6]]),  # reordered
        _with(_LINES, 4, b"authtrail-unknown " + _LINES[4].split(b" ")[1]),
        _with(_LINES, 4, b""),  # empty extension line
        _with(_LINES, 0, b""),
        _with(_LINES, 0, b"authtrail.local/ac me"),
        _with(_LINES, 1, b"05"),
        _with(_LINES, 1, b"+5"),
        _with(_LINES, 1, b" 5"),
        _with(_LINES, 1, b"5 "),
        _with(_LINES, 1, "\uff15".encode()),  # fullwidth digit: int() would accept it
        _with(_LINES, 1, b"0"),
        _with(_LINES, 1, b"6"),  # size != batch last seq
        _with(_LINES, 1, b"18446744073709551616"),  # 2^64
        _with(_LINES, 2, _LINES[2].rstrip(b"=")),  # unpadded base64
        _with(_LINES, 2, _LINES[2][:-2] + b"9="),  # same bytes, non-zero padding bits
        _with(_LINES, 2, base64.b64encode(bytes(31))),
        _with(_LINES, 2, base64.b64encode(bytes(33))),
        _with(_LINES, 3, b"authtrail-batch 1 5"),
        _with(_LINES, 3, b"authtrail-batch 1  5 " + _LINES[3].split(b" ")[3]),
        _with(_LINES, 3, b"authtrail-batch 6 5 " + _LINES[3].split(b" ")[3]),
        _with(_LINES, 3, b"authtrail-batch 0 5 " + _LINES[3].split(b" ")[3]),
        _with(
            _LINES, 3, b"authtrail-batch 2 5 " + _LINES[3].split(b" ")[3]
        ),  # genesis on non-first
        _with(_SECOND_LINES, 5, _LINES[5]),  # genesis prev digest on a later batch
        _with(_LINES, 5, _SECOND_LINES[5]),  # first batch claiming a predecessor
        _with(_LINES, 6, b"authtrail-time -1"),
        _with(_LINES, 6, b"authtrail-time 1.5"),
        FIRST_BODY.replace(b"\n", b"\r\n"),
        b"\xff" + FIRST_BODY,
    ],
)
def test_parser_rejects(body: bytes) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(body)


def test_parser_rejects_signed_malformed_body(
    signer: Signer, keyring: dict[tuple[str, int], VerifierKey]
) -> None:
    # A validly signed body that is not a checkpoint is still refused.
    from authtrail.stream.core.note import sign_note

    note = sign_note(FIRST_BODY + b"extra\n", signer)
    with pytest.raises(CheckpointError, match="8 lines"):
        open_checkpoint(note, keyring, ORIGIN)


@pytest.mark.parametrize(
    "changes",
    [
        {"size": 0, "batch_last_seq": 0},
        {"batch_last_seq": 4},
        {"batch_first_seq": 0},
        {"batch_first_seq": 6},
        {"root": bytes(31)},
        {"chain_hash": bytes(33)},
        {"time_micros": -1},
        {"origin": "a b"},
        {"batch_first_seq": 2},  # genesis digest with a predecessor
        {"prev_digest": bytes(31) + b"\x01"},  # a predecessor for the first batch
    ],
)
def test_constructor_rejects(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        dataclasses.replace(FIRST, **changes)  # type: ignore[arg-type]


# --- the link to the previous checkpoint ---------------------------------------------


def test_valid_sequence_links() -> None:
    verify_successor(None, FIRST)
    verify_successor(FIRST, SECOND)
    verify_successor(SECOND, THIRD)


def test_first_checkpoint_must_start_the_log() -> None:
    with pytest.raises(CheckpointError, match="first checkpoint must start at seq 1"):
        verify_successor(None, SECOND)


def test_stale_prev_link_is_rejected() -> None:
    # THIRD's batch, but linking to the checkpoint before its predecessor.
    stale = _next(SECOND, 10, prev_digest=FIRST.digest())
    with pytest.raises(CheckpointError, match="stale or forged prev link") as caught:
        verify_successor(SECOND, stale)
    assert SECOND.digest().hex() in str(caught.value)
    assert FIRST.digest().hex() in str(caught.value)


def test_random_prev_link_is_rejected() -> None:
    forged = _next(SECOND, 10, prev_digest=hashlib.sha256(b"random").digest())
    with pytest.raises(CheckpointError, match="stale or forged prev link"):
        verify_successor(SECOND, forged)


def test_removed_or_replaced_checkpoint_breaks_the_link() -> None:
    with pytest.raises(CheckpointError):
        verify_successor(FIRST, THIRD)  # SECOND deleted
    replaced = _next(FIRST, 9, root=bytes(32))
    with pytest.raises(CheckpointError, match="stale or forged"):
        verify_successor(replaced, THIRD)  # SECOND swapped for another at the same size


def test_genesis_link_on_a_later_checkpoint_cannot_exist() -> None:
    with pytest.raises(InvalidArgumentError):
        _next(SECOND, 10, prev_digest=GENESIS_PREV_DIGEST)


def test_non_contiguous_batches_are_rejected() -> None:
    gap = _next(SECOND, 12, batch_first_seq=11)
    with pytest.raises(CheckpointError, match="batch starts at seq 11, expected 10"):
        verify_successor(SECOND, gap)
    overlap = _next(SECOND, 12, batch_first_seq=9)
    with pytest.raises(CheckpointError, match="batch starts at seq 9, expected 10"):
        verify_successor(SECOND, overlap)


def test_size_must_grow() -> None:
    same_size = _next(SECOND, 9, batch_first_seq=7)
    with pytest.raises(CheckpointError, match="size does not grow"):
        verify_successor(SECOND, same_size)
    with pytest.raises(CheckpointError, match="size does not grow"):
        verify_successor(THIRD, SECOND)
    with pytest.raises(CheckpointError):
        verify_successor(SECOND, SECOND)


def test_origin_must_not_change() -> None:
    other = _next(SECOND, 10, origin="authtrail.local/globex")
    with pytest.raises(CheckpointError, match="origin changed"):
        verify_successor(SECOND, other)
