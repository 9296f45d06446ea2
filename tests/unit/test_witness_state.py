"""The witness's decision (c2sp.org/tlog-witness): cosign extensions, refuse everything else."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest

from authtrail.errors import (
    CheckpointError,
    ConfigurationError,
    InvalidArgumentError,
    VerificationError,
)
from authtrail.stream.core import merkle
from authtrail.stream.core.note import Signer, generate_key_strings, sign_note
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.witness_state import (
    MAX_PROOF_LINES,
    AddCheckpointRequest,
    ConsistencyProofError,
    ForkError,
    LogSignatureError,
    LogTrust,
    MalformedRequestError,
    RollbackError,
    SizeConflictError,
    UnknownOriginError,
    WitnessedCheckpoint,
    WitnessRefusal,
    add_checkpoint,
    parse_add_checkpoint_request,
    parse_checkpoint_head,
    witnessed_from_note,
)

LOG = Signer.parse(generate_key_strings("authtrail.local")[0])
OTHER = Signer.parse(generate_key_strings("authtrail.local")[0])  # same name, other key
TRUST = LogTrust({"authtrail.local/": [LOG.verifier_key()]})
ORIGIN = "authtrail.local/acme"


@dataclass
class Log:
    """A tenant's log as the sequencer signs it: its leaves and a note per batch end."""

    leaves: list[bytes]
    notes: dict[int, bytes]

    def proof(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        return tuple(merkle.consistency_proof(self.leaves[:new_size], old_size))

    def request(self, old_size: int, new_size: int) -> AddCheckpointRequest:
        return AddCheckpointRequest(old_size, self.proof(old_size, new_size), self.notes[new_size])


def _log(
    count: int = 12, batch: int = 3, tenant: str = "acme", salt: str = "", signer: Signer = LOG
) -> Log:
    sequencer = Sequencer(signer, "authtrail.local", batch_size=batch, batch_interval=60)
    leaves, notes = [], {}
    for offset in range(count):
        leaf = f"event {offset}{salt}".encode()
        sequencer.offer(tenant, f"e{offset}", leaf, offset)
        leaves.append(leaf)
        for full in sequencer.full_batches():
            signed = sequencer.close_batch(full)
            notes[signed.checkpoint.size] = signed.note
    return Log(leaves, notes)


LOG_A = _log()


def _witness(log: Log, *sizes: int) -> WitnessedCheckpoint:
    """Feed ``sizes`` (at least one) in order from nothing; return the state after the last."""
    state: WitnessedCheckpoint | None = None
    old = 0
    for size in sizes:
        state = add_checkpoint(log.request(old, size), state, TRUST)
        old = size
    assert state is not None
    return state


# --- accepted -----------------------------------------------------------------------------


def test_first_checkpoint_needs_old_zero_and_no_proof() -> None:
    state = add_checkpoint(LOG_A.request(0, 3), None, TRUST)
    assert (state.origin, state.size, state.root) == (ORIGIN, 3, merkle.root(LOG_A.leaves[:3]))
    assert state.note == LOG_A.notes[3]
    assert LOG_A.notes[3].startswith(state.body) and state.body.endswith(b"\n")


def test_the_first_checkpoint_may_be_any_size() -> None:
    assert _witness(LOG_A, 9).size == 9


def test_good_extensions_are_accepted_step_by_step_and_skipping() -> None:
    assert _witness(LOG_A, 3, 6, 9, 12).size == 12
    assert _witness(LOG_A, 3, 12).size == 12


def test_the_same_checkpoint_again_is_cosigned_again() -> None:
    state = _witness(LOG_A, 3, 6)
    assert add_checkpoint(LOG_A.request(6, 6), state, TRUST) == state


# --- refused ------------------------------------------------------------------------------


def test_first_checkpoint_with_old_size_not_zero_is_a_conflict_at_zero() -> None:
    with pytest.raises(SizeConflictError) as info:
        add_checkpoint(LOG_A.request(3, 6), None, TRUST)
    assert (info.value.current_size, info.value.old_size, info.value.origin) == (0, 3, ORIGIN)


def test_first_checkpoint_with_a_proof_is_refused() -> None:
    request = AddCheckpointRequest(0, LOG_A.proof(3, 6), LOG_A.notes[6])
    with pytest.raises(ConsistencyProofError):
        add_checkpoint(request, None, TRUST)


@pytest.mark.parametrize("claimed", [0, 3, 9])
def test_wrong_old_size_is_a_conflict_naming_the_witness_size(claimed: int) -> None:
    state = _witness(LOG_A, 3, 6)
    with pytest.raises(SizeConflictError) as info:
        add_checkpoint(LOG_A.request(claimed, 12), state, TRUST)
    assert info.value.current_size == 6


def _tampered_proofs(proof: tuple[bytes, ...]) -> list[tuple[bytes, ...]]:
    variants: list[tuple[bytes, ...]] = [(), proof[:-1], (*proof, proof[0]), proof[::-1]]
    for position in range(len(proof)):
        flipped = bytearray(proof[position])
        flipped[0] ^= 1
        variants.append((*proof[:position], bytes(flipped), *proof[position + 1 :]))
    return [variant for variant in variants if variant != proof]


@pytest.mark.parametrize("old_size, new_size", [(3, 6), (6, 12), (3, 9), (9, 12)])
def test_every_tampered_consistency_proof_is_refused(old_size: int, new_size: int) -> None:
    state = _witness(LOG_A, old_size)
    good = LOG_A.proof(old_size, new_size)
    assert add_checkpoint(LOG_A.request(old_size, new_size), state, TRUST).size == new_size
    for proof in _tampered_proofs(good):
        request = AddCheckpointRequest(old_size, proof, LOG_A.notes[new_size])
        with pytest.raises(ConsistencyProofError, match=f"from size {old_size} to {new_size}"):
            add_checkpoint(request, state, TRUST)


def test_a_proof_for_other_sizes_is_refused() -> None:
    state = _witness(LOG_A, 6)
    request = AddCheckpointRequest(6, LOG_A.proof(3, 12), LOG_A.notes[12])
    with pytest.raises(ConsistencyProofError):
        add_checkpoint(request, state, TRUST)


def test_rollback_below_the_old_size_is_refused() -> None:
    state = _witness(LOG_A, 3, 9)
    with pytest.raises(RollbackError, match="below old size 9"):
        add_checkpoint(AddCheckpointRequest(9, (), LOG_A.notes[6]), state, TRUST)
    # Claiming the older size instead is a conflict: the witness is at 9.
    with pytest.raises(SizeConflictError) as info:
        add_checkpoint(LOG_A.request(3, 6), state, TRUST)
    assert info.value.current_size == 9


def test_fork_at_the_same_size_is_refused() -> None:
    fork = _log(salt=" forked")  # same origin and key, other events
    state = _witness(LOG_A, 3, 6)
    with pytest.raises(ForkError, match="size 6"):
        add_checkpoint(AddCheckpointRequest(6, (), fork.notes[6]), state, TRUST)


def test_fork_at_a_larger_size_fails_the_proof() -> None:
    fork = _log(salt=" forked")
    state = _witness(LOG_A, 3, 6)
    with pytest.raises(ConsistencyProofError):
        add_checkpoint(fork.request(6, 9), state, TRUST)
    # Unchanged state: the real log still extends.
    assert add_checkpoint(LOG_A.request(6, 9), state, TRUST).size == 9


def test_same_size_with_a_proof_is_refused() -> None:
    state = _witness(LOG_A, 6)
    with pytest.raises(ConsistencyProofError):
        add_checkpoint(AddCheckpointRequest(6, LOG_A.proof(3, 6), LOG_A.notes[6]), state, TRUST)


def test_unknown_origin_is_refused() -> None:
    trust = LogTrust({"authtrail.local/globex": [LOG.verifier_key()]})
    with pytest.raises(UnknownOriginError, match=r"authtrail\.local/acme"):
        add_checkpoint(LOG_A.request(0, 3), None, trust)


def test_a_prefix_covers_one_path_segment_only() -> None:
    assert TRUST.keyring_for("authtrail.local/acme")
    assert TRUST.keyring_for("authtrail.local/globex.eu")
    for origin in ("authtrail.local", "authtrail.local/", "authtrail.local/a/b", "other/acme"):
        with pytest.raises(UnknownOriginError):
            TRUST.keyring_for(origin)


def test_an_exact_origin_wins_over_its_prefix() -> None:
    trust = LogTrust({"authtrail.local/": [LOG.verifier_key()], ORIGIN: [OTHER.verifier_key()]})
    with pytest.raises(LogSignatureError):
        add_checkpoint(LOG_A.request(0, 3), None, trust)
    assert add_checkpoint(LOG_A.request(0, 3), None, TRUST).size == 3


def test_log_signature_missing_is_refused() -> None:
    unsigned_by_log = _log(signer=OTHER)
    with pytest.raises(LogSignatureError, match="no signature by a trusted key"):
        add_checkpoint(unsigned_by_log.request(0, 3), None, TRUST)


def test_log_signature_forged_is_refused() -> None:
    note = LOG_A.notes[6]
    body, _, signatures = note.partition(b"\n\n")
    root = base64.b64encode(merkle.root(LOG_A.leaves[:5])).decode().encode()
    lines = body.split(b"\n")
    forged = b"\n".join([lines[0], b"5", root, *lines[3:]]) + b"\n\n" + signatures
    with pytest.raises(LogSignatureError, match="invalid signature"):
        add_checkpoint(AddCheckpointRequest(0, (), forged), None, TRUST)


def test_a_note_that_is_no_checkpoint_is_malformed() -> None:
    for text in (
        b"authtrail.local/acme\n3\n",
        b"authtrail.local/acme\n03\nAAAA\n",
        b"authtrail.local/acme\n3\nnot base64!\n",
        b"authtrail.local/acme\n3\n" + base64.b64encode(bytes(31)) + b"\n",
        b"authtrail.local/acme\n3\n" + base64.b64encode(bytes(32)) + b"\n\next\n",
    ):
        note = sign_note(text, LOG)
        with pytest.raises(MalformedRequestError):
            add_checkpoint(AddCheckpointRequest(0, (), note), None, TRUST)


def test_refusals_are_verification_errors() -> None:
    assert issubclass(WitnessRefusal, VerificationError)


# --- request parsing ----------------------------------------------------------------------


def test_request_encoding_round_trips() -> None:
    request = LOG_A.request(3, 12)
    body = request.encode()
    assert body.startswith(b"old 3\n")
    assert body.count(b"\n\n") >= 2  # after the proof, and inside the note
    assert parse_add_checkpoint_request(body) == request
    first = AddCheckpointRequest(0, (), LOG_A.notes[3]).encode()
    assert first == b"old 0\n\n" + LOG_A.notes[3]
    assert parse_add_checkpoint_request(first).origin == ORIGIN


@pytest.mark.parametrize(
    "body",
    [
        b"old 0\n",  # no empty line, no note
        b"0\n\nauthtrail.local/acme\n",
        b"old 01\n\nauthtrail.local/acme\n",
        b"old -1\n\nauthtrail.local/acme\n",
        b"old  1\n\nauthtrail.local/acme\n",
        b"old 9223372036854775808\n\nauthtrail.local/acme\n",  # 2^63
        b"old 1\nnot-base64\n\nauthtrail.local/acme\n",
        b"old 1\n" + base64.b64encode(bytes(31)) + b"\n\nauthtrail.local/acme\n",
        b"old 1\n" + (base64.b64encode(bytes(32)) + b"\n") * (MAX_PROOF_LINES + 1) + b"\nx\n",
        b"old 0\n\n\nsecond line\n",  # empty origin
        b"old 0\n\nno newline",
        b"old 0\n\n\xff\xfe\n",
    ],
)
def test_malformed_requests_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedRequestError):
        parse_add_checkpoint_request(body)


def test_request_preconditions() -> None:
    with pytest.raises(InvalidArgumentError):
        AddCheckpointRequest(-1, (), LOG_A.notes[3])
    with pytest.raises(InvalidArgumentError):
        AddCheckpointRequest(0, (bytes(31),), LOG_A.notes[3])
    with pytest.raises(InvalidArgumentError):
        AddCheckpointRequest(0, (bytes(32),) * 64, LOG_A.notes[3])


def test_checkpoint_head_keeps_extension_lines_opaque() -> None:
    root = base64.b64encode(bytes(32))
    head = parse_checkpoint_head(b"example.com/log\n5\n" + root + b"\nanything at all\n")
    assert (head.origin, head.size, head.root) == ("example.com/log", 5, bytes(32))


# --- stored state -------------------------------------------------------------------------


def test_stored_state_round_trips_without_the_log_key() -> None:
    state = _witness(LOG_A, 3, 9)
    assert witnessed_from_note(state.note, ORIGIN) == state
    with pytest.raises(CheckpointError, match="of origin"):
        witnessed_from_note(state.note, "authtrail.local/globex")
    with pytest.raises(CheckpointError):
        witnessed_from_note(b"authtrail.local/acme\n3\n", ORIGIN)


def test_state_of_another_origin_is_a_caller_bug() -> None:
    other = _witness(_log(tenant="globex"), 3)
    with pytest.raises(InvalidArgumentError):
        add_checkpoint(LOG_A.request(3, 6), other, TRUST)


def test_log_trust_refuses_empty_configuration() -> None:
    with pytest.raises(ConfigurationError):
        LogTrust({"": [LOG.verifier_key()]})
    with pytest.raises(ConfigurationError):
        LogTrust({ORIGIN: []})
