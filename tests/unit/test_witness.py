"""The witness adapter without HTTP: state files, persist before cosigning, one at a time."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from authtrail.errors import ConfigurationError
from authtrail.keys import load_signer, write_key_pair
from authtrail.stream.core import merkle
from authtrail.stream.core.cosignature import verify_cosignatures, witness_key_of
from authtrail.stream.core.note import Signer, generate_key_strings, make_keyring, open_note
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.witness_state import (
    AddCheckpointRequest,
    LogTrust,
    SizeConflictError,
    UnknownOriginError,
)
from authtrail.witness import StateDirectory, Witness, parse_log_keys

LOG = Signer.parse(generate_key_strings("authtrail.local")[0])
TRUST = LogTrust({"authtrail.local/": [LOG.verifier_key()]})


def _notes(count: int = 8, batch: int = 2) -> tuple[list[bytes], dict[int, bytes]]:
    sequencer = Sequencer(LOG, "authtrail.local", batch_size=batch, batch_interval=60)
    leaves, notes = [], {}
    for offset in range(count):
        leaves.append(f"event {offset}".encode())
        sequencer.offer("acme", f"e{offset}", leaves[-1], offset)
        for full in sequencer.full_batches():
            signed = sequencer.close_batch(full)
            notes[signed.checkpoint.size] = signed.note
    return leaves, notes


LEAVES, NOTES = _notes()


def _body(old_size: int, new_size: int) -> bytes:
    proof = tuple(merkle.consistency_proof(LEAVES[:new_size], old_size))
    return AddCheckpointRequest(old_size, proof, NOTES[new_size]).encode()


@pytest.fixture
def witness_signer(tmp_path: Path) -> Signer:
    key_path, _ = write_key_pair(tmp_path / "keys", "witness.test/w1")
    return load_signer(key_path)


def test_cosigns_and_persists_before_answering(tmp_path: Path, witness_signer: Signer) -> None:
    state = StateDirectory(tmp_path / "state")
    witness = Witness(witness_signer, TRUST, state, clock=lambda: 1_700_000_000.9)
    line = witness.add_checkpoint(_body(0, 4))
    stored = state.load("authtrail.local/acme")
    assert stored is not None and stored.size == 4
    opened = open_note(NOTES[4] + line.encode(), make_keyring([LOG.verifier_key()]))
    [cosignature] = verify_cosignatures(opened, [witness_key_of(witness_signer)], required=1)
    assert cosignature.timestamp == 1_700_000_000
    # A new Witness on the same directory remembers.
    again = Witness(witness_signer, TRUST, StateDirectory(tmp_path / "state"))
    with pytest.raises(SizeConflictError) as info:
        again.add_checkpoint(_body(0, 6))
    assert info.value.current_size == 4
    again.add_checkpoint(_body(4, 8))


def test_state_files_are_one_per_origin_and_written_atomically(
    tmp_path: Path, witness_signer: Signer
) -> None:
    state = StateDirectory(tmp_path / "state")
    witness = Witness(witness_signer, TRUST, state)
    witness.add_checkpoint(_body(0, 2))
    witness.add_checkpoint(_body(2, 6))
    files = sorted(path.name for path in (tmp_path / "state").iterdir())
    assert files == [state.file_of("authtrail.local/acme").name]  # no temp file left
    assert state.file_of("authtrail.local/acme").read_bytes() == NOTES[6]
    assert state.load("authtrail.local/globex") is None


def test_a_refused_request_changes_nothing(tmp_path: Path, witness_signer: Signer) -> None:
    state = StateDirectory(tmp_path / "state")
    witness = Witness(witness_signer, LogTrust({"other/": [LOG.verifier_key()]}), state)
    with pytest.raises(UnknownOriginError):
        witness.add_checkpoint(_body(0, 2))
    assert list((tmp_path / "state").iterdir()) == []


def test_a_damaged_state_file_stops_the_witness(tmp_path: Path, witness_signer: Signer) -> None:
    state = StateDirectory(tmp_path / "state")
    state.file_of("authtrail.local/acme").write_bytes(b"garbage")
    with pytest.raises(ConfigurationError, match="damaged"):
        Witness(witness_signer, TRUST, state).add_checkpoint(_body(0, 2))
    state.file_of("authtrail.local/acme").write_bytes(NOTES[2].replace(b"acme", b"globex", 1))
    with pytest.raises(ConfigurationError, match="damaged"):
        state.load("authtrail.local/acme")


def test_concurrent_requests_for_one_origin_are_serialised(
    tmp_path: Path, witness_signer: Signer
) -> None:
    # Every thread claims old size 0: exactly one may win, the others must see a conflict.
    witness = Witness(witness_signer, TRUST, StateDirectory(tmp_path / "state"))
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def submit(size: int) -> None:
        start.wait()
        try:
            witness.add_checkpoint(_body(0, size))
            outcomes.append("cosigned")
        except SizeConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=submit, args=(2 * (n % 4 + 1),)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["cosigned"]


def test_log_key_specs(tmp_path: Path) -> None:
    _, pub = write_key_pair(tmp_path, "authtrail.local")
    trust = parse_log_keys([f"authtrail.local/={pub}", f"authtrail.local/acme={pub}"])
    assert trust.keyring_for("authtrail.local/globex")
    for bad in ([], ["authtrail.local/"], [f"={pub}"], ["x=/nonexistent.pub"]):
        with pytest.raises(ConfigurationError):
            parse_log_keys(bad)
