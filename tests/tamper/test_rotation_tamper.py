"""A store whose signing key was rotated, audited and attacked.

The procedure as a user runs it: the writer signs with the first key, `authtrail keys
rotate` makes the next, the restarted writer (its state from a snapshot, as a worker's)
signs each tenant's next checkpoint with both keys and later ones with the new key,
`authtrail keys retire` marks the old key. The auditor verifies with the keyring. Then
an attacker with write access to the store — and, where said, the stolen old key —
edits it, and `authtrail verify` must name the tenant, the seq and `missing hand-over`
or `retired key`. `authtrail prove` / `verify-proof` work on both sides of the rotation.
"""

from __future__ import annotations

import contextlib
import io
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
from authtrail.sinks.rows import CHECKPOINTS_SCHEMA, checkpoint_row, to_arrow
from authtrail.sinks.tables import create_statements
from authtrail.stream.core.checkpoint import Checkpoint, sign
from authtrail.stream.core.note import Signer
from authtrail.stream.core.sequencer import Sequencer, SignedCheckpoint
from authtrail.stream.worker.sequencing import _checkpoint_record
from authtrail.stream.worker.snapshot import encode_state, restore_state
from tests.tamper.conftest import BATCH, LOG_ORIGIN, TENANTS, Writer, damage_of, event


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@dataclass
class Rotated:
    data_dir: Path
    keyring: Path
    old: Signer
    new: Signer

    @property
    def labels(self) -> tuple[str, str]:
        return self.old.verifier_key().label, self.new.verifier_key().label

    def verify(self, *keys: Path, text: bool = False) -> tuple[int, dict[str, Any], str]:
        pinned = [arg for key in (keys or (self.keyring,)) for arg in ("--key", str(key))]
        json_flag = [] if text else ["--json"]
        code, out, err = _cli("--data-dir", str(self.data_dir), "verify", *json_flag, *pinned)
        return code, (json.loads(out) if out.strip() and not text else {"text": out}), err

    def checkpoints(self, tenant_id: str) -> list[tuple[int, bytes]]:
        store = EmbeddedBackend(self.data_dir / "clickhouse")
        try:
            rows = store.query_arrow(
                "SELECT size, note FROM checkpoints WHERE tenant_id = {t:String} ORDER BY size",
                {"t": tenant_id},
            ).to_pylist()
        finally:
            store.close()
        return [(row["size"], row["note"].encode()) for row in rows]

    def replace_note(self, tenant_id: str, size: int, note: bytes) -> None:
        """What an attacker with write access does: the row out, another one in."""
        checkpoint = Checkpoint.parse(note.rpartition(b"\n\n")[0] + b"\n")
        row = checkpoint_row(
            _checkpoint_record(SignedCheckpoint(tenant_id, checkpoint, note)), "tamper", 0, 0
        )
        store = EmbeddedBackend(self.data_dir / "clickhouse")
        try:
            store.command(
                f"ALTER TABLE checkpoints DELETE WHERE tenant_id = '{tenant_id}' AND size = {size}",
                {"mutations_sync": 2},
            )
            store.insert_arrow("checkpoints", to_arrow([row], CHECKPOINTS_SCHEMA))
        finally:
            store.close()


def _body(note: bytes) -> bytes:
    return note.rpartition(b"\n\n")[0] + b"\n"


def _without(note: bytes, key_name: str) -> bytes:
    head, _, block = note.rpartition(b"\n\n")
    prefix = f"\u2014 {key_name} ".encode()
    kept = [line + b"\n" for line in block.split(b"\n") if line and not line.startswith(prefix)]
    return head + b"\n\n" + b"".join(kept)


@pytest.fixture(scope="module")
def pristine_rotation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rotation-pristine")
    data_dir = root / "data"
    write_key_pair(data_dir / "keys", "authtrail")
    writer = Writer(data_dir)
    store = EmbeddedBackend(data_dir / "clickhouse")
    rng = random.Random(11)
    try:
        for statement in create_statements():
            store.command(statement)
        writer.append(store, [event(n, rng.choice(TENANTS)) for n in range(150)])
    finally:
        store.close()
    code, _, err = _cli("--data-dir", str(data_dir), "keys", "rotate")
    assert code == 0, err
    new = load_signer(data_dir / "keys" / "authtrail-2.key")
    # The worker restarts with AUTHTRAIL_SIGNING_KEY=new, AUTHTRAIL_HANDOVER_KEY=old:
    # its state comes from a snapshot of the old one's.
    restarted = Sequencer(new, LOG_ORIGIN, batch_size=BATCH, batch_interval=3600,
                          handover=writer.signer)  # fmt: skip
    restore_state(encode_state(writer.sequencer, None), restarted, None)
    writer.sequencer = restarted
    store = EmbeddedBackend(data_dir / "clickhouse")
    try:
        writer.append(store, [event(n, rng.choice(TENANTS)) for n in range(150, 300)])
    finally:
        store.close()
    old_label = writer.signer.verifier_key().label
    code, _, err = _cli("--data-dir", str(data_dir), "keys", "retire", old_label)
    assert code == 0, err
    return root


@pytest.fixture
def rotated(pristine_rotation: Path, tmp_path: Path) -> Iterator[Rotated]:
    shutil.copytree(pristine_rotation, tmp_path / "copy", symlinks=True)
    data_dir = tmp_path / "copy" / "data"
    keys = data_dir / "keys"
    yield Rotated(
        data_dir, keys / "authtrail.keyring", load_signer(keys / "authtrail.key"),
        load_signer(keys / "authtrail-2.key"),
    )  # fmt: skip


def _hand_over(rotated: Rotated, tenant_id: str) -> tuple[int, bytes, int]:
    """(size, note) of the tenant's hand-over checkpoint and the size after it."""
    notes = rotated.checkpoints(tenant_id)
    for index, (size, note) in enumerate(notes):
        if note.count("\u2014 ".encode()) == 2:
            return size, note, notes[index + 1][0]
    raise AssertionError(f"{tenant_id} has no hand-over")


def test_the_rotated_store_verifies_and_names_who_signed_what(rotated: Rotated) -> None:
    code, report, err = rotated.verify()
    assert code == 0, (report, err)
    old, new = rotated.labels
    assert f"{old} from {rotated.keyring} (retired " in " ".join(report["trusted_keys"])
    for tenant in report["tenants"]:
        ranges = tenant["signed_ranges"]
        assert [r["signed_by"] for r in ranges] == [[old], sorted([old, new]), [new]], tenant
        assert [r["hand_over"] for r in ranges] == [False, True, False]
        assert ranges[1]["checkpoints"] == 1
        assert ranges[0]["first_seq"] == 1 and ranges[-1]["last_seq"] == tenant["records"]
        assert ranges[1]["first_seq"] == ranges[0]["last_seq"] + 1
        hand_over_size, _, _ = _hand_over(rotated, tenant["tenant_id"])
        assert ranges[1]["last_seq"] == hand_over_size
    code, text, _ = rotated.verify(text=True)
    assert code == 0 and "hand-over)" in text["text"]


def test_the_pinned_old_key_alone_sees_the_new_checkpoints_as_forged(rotated: Rotated) -> None:
    """Why the auditor needs the keyring after a rotation (and not only the old .pub)."""
    code, report, _ = rotated.verify(rotated.data_dir / "keys" / "authtrail.pub")
    assert code == 1
    for tenant in TENANTS:
        size, _, _ = _hand_over(rotated, tenant)
        assert damage_of(report, tenant) == ("forged checkpoint", size + 1)


def test_a_hand_over_stripped_of_the_old_signature_is_missing_hand_over(
    rotated: Rotated,
) -> None:
    size, note, _ = _hand_over(rotated, "acme")
    rotated.replace_note("acme", size, _without(note, rotated.old.name))
    code, report, _ = rotated.verify()
    assert code == 1 and damage_of(report, "acme") == ("missing hand-over", size)
    assert damage_of(report, "globex") == (None, None)


def test_a_hand_over_stripped_of_the_new_signature_fails_at_the_next_checkpoint(
    rotated: Rotated,
) -> None:
    size, note, after = _hand_over(rotated, "globex")
    rotated.replace_note("globex", size, _without(note, rotated.new.name))
    code, report, _ = rotated.verify()
    assert code == 1 and damage_of(report, "globex") == ("missing hand-over", after)


def test_the_stolen_retired_key_cannot_sign_after_the_hand_over(rotated: Rotated) -> None:
    size, note = rotated.checkpoints("initech")[-1]
    rotated.replace_note("initech", size, sign(Checkpoint.parse(_body(note)), rotated.old))
    code, report, _ = rotated.verify()
    assert code == 1 and damage_of(report, "initech") == ("retired key", size)


def test_the_new_key_cannot_sign_before_the_hand_over(rotated: Rotated) -> None:
    size, note = rotated.checkpoints("acme")[0]
    rotated.replace_note("acme", size, sign(Checkpoint.parse(_body(note)), rotated.new))
    code, report, _ = rotated.verify()
    next_size = rotated.checkpoints("acme")[1][0]
    assert code == 1 and damage_of(report, "acme") == ("missing hand-over", next_size)


def test_proof_bundles_verify_on_both_sides_of_the_rotation(
    rotated: Rotated, tmp_path: Path
) -> None:
    old, new = rotated.labels
    first_size = rotated.checkpoints("acme")[0][0]
    newest_size = rotated.checkpoints("acme")[-1][0]
    base = ("--data-dir", str(rotated.data_dir))
    signed_by = {}
    for name, extra in (("old", ("--tree-size", str(first_size))), ("new", ())):
        bundle = tmp_path / f"{name}.json"
        code, _, err = _cli(*base, "prove", "--tenant", "acme", "--seq", "1", *extra,
                            "--out", str(bundle))  # fmt: skip
        assert code == 0, err
        code, out, err = _cli(*base, "verify-proof", str(bundle), "--key", str(rotated.keyring),
                              "--json")  # fmt: skip
        assert code == 0, (out, err)
        signed_by[name] = json.loads(out)["signed_by"]
    assert signed_by == {"old": [old], "new": [new]}
    consistency = tmp_path / "across.json"
    code, _, err = _cli(*base, "prove", "--consistency", "--tenant", "acme", str(first_size),
                        str(newest_size), "--out", str(consistency))  # fmt: skip
    assert code == 0, err
    code, out, _ = _cli(*base, "verify-proof", str(consistency), "--key", str(rotated.keyring))
    assert code == 0, out
