"""Two real witnesses over HTTP cosign a growing tenant log, then refuse rollbacks and forks.

Witness A runs as ``authtrail witness`` in a subprocess this test owns (and stops with
SIGTERM); witness B runs in-process on a :class:`WitnessServer`. Both keep state in
directories under ``tmp_path``.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from authtrail.keys import load_signer, write_key_pair
from authtrail.stream.core import merkle
from authtrail.stream.core.cosignature import (
    MissingCosignaturesError,
    WitnessKey,
    verify_cosignatures,
    witness_key_of,
)
from authtrail.stream.core.note import Signer, make_keyring, open_note
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.witness_state import (
    ConsistencyProofError,
    ForkError,
    LogSignatureError,
    MalformedRequestError,
    UnknownOriginError,
)
from authtrail.witness import StateDirectory, Witness, WitnessServer, parse_log_keys
from authtrail.witness_client import (
    ProofSource,
    WitnessSubmitter,
    WitnessUnavailableError,
    cosign_checkpoint,
    proof_source_from_leaf_hashes,
    submit_checkpoint,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "authtrail.local/acme"


@dataclass
class TenantLog:
    leaves: list[bytes]
    notes: dict[int, bytes]

    def proof_for(self, new_size: int) -> ProofSource:
        # As the publisher would: from the stored leaf hashes, in seq order.
        leaf_hashes = [merkle.leaf_hash(leaf) for leaf in self.leaves]
        return proof_source_from_leaf_hashes(leaf_hashes, new_size)


def _tenant_log(signer: Signer, salt: str = "", count: int = 15) -> TenantLog:
    sequencer = Sequencer(signer, "authtrail.local", batch_size=3, batch_interval=60)
    leaves: list[bytes] = []
    notes: dict[int, bytes] = {}
    for offset in range(count):
        leaves.append(f"login ok user{offset % 4}{salt}".encode())
        sequencer.offer("acme", f"event-{offset}", leaves[-1], offset)
        for full in sequencer.full_batches():
            signed = sequencer.close_batch(full)
            notes[signed.checkpoint.size] = signed.note
    return TenantLog(leaves, notes)


@dataclass
class CliWitness:
    process: subprocess.Popen[str]
    url: str
    key: WitnessKey

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=20) == 0


def _forward_lines(stream: IO[str], lines: queue.Queue[str]) -> None:
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):  # closed at cleanup
        pass


def _start_cli_witness(key: Path, state_dir: Path, log_pub: Path) -> CliWitness:
    command = [
        sys.executable, "-m", "authtrail.cli", "witness", "--key", str(key),
        "--state-dir", str(state_dir), "--log-key", f"authtrail.local/={log_pub}",
        "--listen", "127.0.0.1:0",
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AUTHTRAIL_")}
    log_path = state_dir.parent / f"{state_dir.name}.log"  # its stderr: logging
    with log_path.open("a") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=log_file,
            text=True,
        )  # fmt: skip
    assert process.stdout is not None
    # A thread reads the lines: select() on a buffered text pipe misses lines already
    # read into the buffer.
    printed: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    threading.Thread(target=_forward_lines, args=(stdout, printed), daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while len(lines) < 2:
        try:
            lines.append(printed.get(timeout=max(0.1, deadline - time.monotonic())).strip())
        except queue.Empty:
            process.kill()
            process.wait(timeout=10)
            pytest.fail(f"authtrail witness printed no URL and key (exit {process.returncode}): "
                        f"{log_path.read_text()}")  # fmt: skip
    url = lines[0].removeprefix("witness listening on ")
    key = WitnessKey.parse(lines[1].removeprefix("witness verifier key: "))
    return CliWitness(process, url, key)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    log_key, log_pub = write_key_pair(tmp_path / "keys", "authtrail.local")
    a_key, _ = write_key_pair(tmp_path / "keys", "witness-a.test/authtrail")
    b_key, _ = write_key_pair(tmp_path / "keys", "witness-b.test/authtrail")
    other_key, _ = write_key_pair(tmp_path / "keys", "not-the-log")
    return {"log": log_key, "log_pub": log_pub, "a": a_key, "b": b_key, "other": other_key}


@pytest.fixture
def witness_a(tmp_path: Path, keys: dict[str, Path]) -> Iterator[list[CliWitness]]:
    """Witness A as a subprocess; the list holds the current incarnation (restartable)."""
    running = [_start_cli_witness(keys["a"], tmp_path / "state-a", keys["log_pub"])]
    try:
        yield running
    finally:
        for witness in running:
            if witness.process.poll() is None:
                witness.process.kill()
                witness.process.wait(timeout=10)
            if witness.process.stdout is not None:
                witness.process.stdout.close()


@pytest.fixture
def witness_b(tmp_path: Path, keys: dict[str, Path]) -> Iterator[WitnessServer]:
    witness = Witness(
        load_signer(keys["b"]),
        parse_log_keys([f"authtrail.local/={keys['log_pub']}"]),
        StateDirectory(tmp_path / "state-b"),
    )
    with WitnessServer(witness) as server:
        yield server


def _post(url: str, body: bytes, method: str = "POST") -> tuple[int, str, str]:
    request = urllib.request.Request(url + "/add-checkpoint", data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def test_two_witnesses_cosign_a_growing_log_and_refuse_rollback_and_fork(
    keys: dict[str, Path], witness_a: list[CliWitness], witness_b: WitnessServer, tmp_path: Path
) -> None:
    log_signer = load_signer(keys["log"])
    log = _tenant_log(log_signer)
    fork = _tenant_log(log_signer, salt=" (forked)")  # same key and origin, other events
    keyring = make_keyring([log_signer.verifier_key()])
    a = witness_a[0]
    witness_keys = [a.key, witness_key_of(load_signer(keys["b"]))]
    assert a.key == witness_key_of(load_signer(keys["a"]))  # the key it printed is its own

    # 1. Both witnesses cosign each checkpoint as the log grows; verify needs both.
    submitter = WitnessSubmitter([a.url, witness_b.url])
    for size in (3, 6, 9, 12):
        cosigned, failures = submitter.cosign(log.notes[size], size, log.proof_for(size))
        assert failures == {}
        cosignatures = verify_cosignatures(open_note(cosigned, keyring), witness_keys, 2)
        assert {c.name for c in cosignatures} == {
            "witness-a.test/authtrail",
            "witness-b.test/authtrail",
        }
        assert all(abs(c.timestamp - time.time()) < 60 for c in cosignatures)

    # The 409 tells a client that lost track where the witness is.
    reply = submit_checkpoint(witness_b.url, 0, [], log.notes[12])
    assert (reply.witness_size, reply.cosignature_lines) == (12, ())
    status, content_type, text = _post(witness_b.url, b"old 3\n\n" + log.notes[12])
    assert (status, content_type, text) == (409, "text/x.tlog.size", "12\n")

    # 2. Witness A goes away; B alone still refuses what the operator might try.
    a.stop()
    with pytest.raises(WitnessUnavailableError):
        submit_checkpoint(a.url, 12, [], log.notes[12], timeout=2)

    rollback = b"old 12\n\n" + log.notes[6]
    assert _post(witness_b.url, rollback)[0] == 400
    with pytest.raises(MalformedRequestError, match="below old size 12"):
        submit_checkpoint(witness_b.url, 12, [], log.notes[6])
    assert submit_checkpoint(witness_b.url, 3, log.proof_for(6)(3), log.notes[6]).witness_size == 12

    status, content_type, text = _post(witness_b.url, b"old 12\n\n" + fork.notes[12])
    assert status == 409 and not content_type.startswith("text/x.tlog.size")
    assert "differs from the witnessed root" in text
    with pytest.raises(ForkError):
        submit_checkpoint(witness_b.url, 12, [], fork.notes[12])
    with pytest.raises(ConsistencyProofError):  # a fork that grew: its proof cannot hold
        submit_checkpoint(witness_b.url, 12, fork.proof_for(15)(12), fork.notes[15])
    assert _post(witness_b.url, b"old 12\n\n" + fork.notes[15])[0] == 422  # no proof at all

    # Unknown origins, foreign keys and garbage get the statuses the spec assigns.
    other_signer = load_signer(keys["other"])
    foreign = _tenant_log(other_signer)
    with pytest.raises(LogSignatureError):
        submit_checkpoint(witness_b.url, 12, log.proof_for(12)(12), foreign.notes[12])
    assert _post(witness_b.url, b"old 12\n\n" + foreign.notes[12])[0] == 403
    elsewhere = Sequencer(log_signer, "elsewhere.example", batch_size=1, batch_interval=60)
    elsewhere.offer("acme", "e", b"x", 0)
    with pytest.raises(UnknownOriginError):
        submit_checkpoint(witness_b.url, 0, [], elsewhere.close_batch("acme").note)
    assert _post(witness_b.url, b"not a request")[0] == 400
    assert _post(witness_b.url, b"", method="GET")[0] == 405

    # Still at 12, still extending.
    lines, witnessed = cosign_checkpoint(witness_b.url, log.notes[15], 0, log.proof_for(15))
    assert witnessed == 12 and len(lines) == 1

    # 3. Witness A restarts from its state directory and remembers size 12 and its root.
    witness_a.append(_start_cli_witness(keys["a"], tmp_path / "state-a", keys["log_pub"]))
    a = witness_a[-1]
    assert a.key == witness_keys[0]
    assert submit_checkpoint(a.url, 0, [], log.notes[3]).witness_size == 12
    with pytest.raises(ForkError):
        submit_checkpoint(a.url, 12, [], fork.notes[12])
    lines_a = submit_checkpoint(a.url, 12, log.proof_for(15)(12), log.notes[15]).cosignature_lines
    cosigned = log.notes[15] + "".join(lines + lines_a).encode()
    assert len(verify_cosignatures(open_note(cosigned, keyring), witness_keys, 2)) == 2
    a.stop()

    # A publisher whose witness is down still gets the others' cosignatures, and is told.
    fresh = WitnessSubmitter([a.url, witness_b.url], timeout=2)  # knows no sizes yet: 409s
    cosigned, failures = fresh.cosign(log.notes[15], 15, log.proof_for(15))
    assert list(failures) == [a.url] and isinstance(failures[a.url], WitnessUnavailableError)
    assert len(verify_cosignatures(open_note(cosigned, keyring), witness_keys, 1)) == 1
    with pytest.raises(MissingCosignaturesError):
        verify_cosignatures(open_note(cosigned, keyring), witness_keys, 2)


def test_witness_configuration_errors_exit_2_with_one_line(
    keys: dict[str, Path], witness_b: WitnessServer, tmp_path: Path
) -> None:
    busy = witness_b.url.removeprefix("http://")
    state = str(tmp_path / "state-c")
    log_key = f"authtrail.local/={keys['log_pub']}"
    cases = [
        ([], "--key FILE"),
        (["--key", str(keys["a"]), "--state-dir", state], "no log key"),
        (["--key", str(keys["a"]), "--state-dir", state, "--log-key", "x"], "ORIGIN_OR_PREFIX"),
        (["--key", str(keys["log_pub"]), "--state-dir", state, "--log-key", log_key], "signer"),
        (["--key", str(keys["a"]), "--state-dir", state, "--log-key", log_key, "--listen", busy],
         "cannot listen"),
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AUTHTRAIL_")}
    for arguments, words in cases:
        result = subprocess.run(
            [sys.executable, "-m", "authtrail.cli", "witness", *arguments],
            cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and lines[0].startswith("authtrail: "), result.stderr
        assert words in lines[0], result.stderr
