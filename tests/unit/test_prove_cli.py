"""``authtrail verify-proof``: offline, exit codes 0/1/2, names the key, imports no adapter.

No store is needed: bundles are built from a log the real Sequencer signed with a key
written by ``write_key_pair``, exactly as an auditor would receive them.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from authtrail.cli.main import main
from authtrail.keys import load_signer, write_key_pair
from authtrail.stream.core.audit import MerkleLevels
from authtrail.stream.core.bundle import bundle_json, make_consistency_bundle, make_inclusion_bundle
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.tree_proofs import (
    consistency_proof_from_nodes,
    inclusion_proof_from_nodes,
)
from tests.unit.test_core_imports import FORBIDDEN

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "authtrail.test"


@pytest.fixture
def signed(tmp_path: Path) -> dict[str, Any]:
    """A 7-event log of tenant acme, checkpoints at 4 and 7, and the two bundle kinds."""
    key_path, pub_path = write_key_pair(tmp_path / "keys", "cli-test")
    sequencer = Sequencer(load_signer(key_path), ORIGIN, batch_size=4, batch_interval=3600)
    events, links, notes = [], [], {}
    for n in range(1, 8):
        event = {"event_id": f"ev-{n}", "tenant_id": "acme", "occurred_at": n, "user_id": None}
        link = sequencer.offer("acme", event["event_id"], canonical_leaf(event), n).link
        events.append(event)
        links.append(link)
        if sequencer.full_batches() or n == 7:
            checkpoint = sequencer.close_batch("acme")
            notes[checkpoint.checkpoint.size] = checkpoint.note
    levels = MerkleLevels.from_leaf_hashes([link.leaf_hash for link in links])
    inclusion = make_inclusion_bundle(
        log_origin=ORIGIN, tenant_id="acme", seq=3, event=events[2], tree_size=7,
        inclusion_proof=inclusion_proof_from_nodes(levels.node, 2, 7), checkpoint_note=notes[7],
        chain=(links[2].prev_hash, links[2].hash),
    )  # fmt: skip
    consistency = make_consistency_bundle(
        log_origin=ORIGIN, tenant_id="acme", old_note=notes[4], new_note=notes[7],
        consistency_proof=consistency_proof_from_nodes(levels.node, 4, 7),
    )  # fmt: skip
    paths = {}
    for name, bundle in (("inclusion", inclusion), ("consistency", consistency)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_bytes(bundle_json(bundle))
    return {"pub": pub_path, "bundles": paths, "inclusion": inclusion, "tmp": tmp_path}


def test_verify_proof_runs_in_a_fresh_interpreter_without_adapters(signed: dict[str, Any]) -> None:
    """An outsider's verifier: the whole command loads no ClickHouse, Arrow or Kafka code."""
    argv = ["verify-proof", str(signed["bundles"]["inclusion"]), "--key", str(signed["pub"])]
    probe = (
        "import json, sys\nfrom authtrail.cli.main import main\n"
        f"code = main({argv!r})\n"
        f"loaded = sorted(m for m in {FORBIDDEN!r} if m in sys.modules)\n"
        "print('PROBE', json.dumps([code, loaded]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    probe_line = result.stdout.strip().splitlines()[-1]
    assert probe_line.startswith("PROBE "), result.stdout + result.stderr
    code, loaded = json.loads(probe_line.removeprefix("PROBE "))
    assert (code, loaded) == (0, []), result.stdout + result.stderr
    assert "ok: event 'ev-3' is seq 3 of tenant 'acme'" in result.stdout
    assert "signed by cli-test+" in result.stdout and str(signed["pub"]) in result.stdout


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_consistency_bundle_verifies(
    signed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path, pub = str(signed["bundles"]["consistency"]), str(signed["pub"])
    code, out, _ = _run(capsys, "verify-proof", path, "--key", pub)
    assert code == 0
    assert "ok: the log authtrail.test/acme at size 7 extends its checkpoint of size 4" in out
    code, out, _ = _run(capsys, "verify-proof", path, "--key", pub, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and (report["old_size"], report["new_size"]) == (4, 7)


def test_tampered_bundle_exits_1(
    signed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = dict(signed["inclusion"], event={**signed["inclusion"]["event"], "user_id": "eve"})
    path = signed["tmp"] / "tampered.json"
    path.write_bytes(bundle_json(bundle))
    code, _, err = _run(capsys, "verify-proof", str(path), "--key", str(signed["pub"]))
    assert code == 1
    assert "integrity failure: tenant 'acme' seq 3: canonical leaf" in err
    code, out, _ = _run(capsys, "verify-proof", str(path), "--key", str(signed["pub"]), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["error"] == "EventMismatchError"


def test_untrusted_key_exits_1(signed: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    _, other_pub = write_key_pair(signed["tmp"] / "other", "cli-test")
    path = str(signed["bundles"]["inclusion"])
    code, _, err = _run(capsys, "verify-proof", path, "--key", str(other_pub))
    assert code == 1 and "no signature by a trusted key" in err
    code, _, err = _run(capsys, "verify-proof", path, "--key", str(signed["pub"]),
                        "--log-origin", "other.example")  # fmt: skip
    assert code == 1 and "log origin: expected 'other.example'" in err


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"{not json", "not valid JSON"), (b'{"format": "authtrail-inclusion-v1"}', "missing keys"),
     (b"[]", "JSON object")],
)  # fmt: skip
def test_malformed_bundle_exits_2(
    signed: dict[str, Any], capsys: pytest.CaptureFixture[str], content: bytes, words: str
) -> None:
    path = signed["tmp"] / "bad.json"
    path.write_bytes(content)
    code, _, err = _run(capsys, "verify-proof", str(path), "--key", str(signed["pub"]))
    assert code == 2 and words in err and "integrity failure" not in err
    code, out, _ = _run(capsys, "verify-proof", str(path), "--key", str(signed["pub"]), "--json")
    assert code == 2 and json.loads(out)["error"] == "FormatError"


def test_usage_errors_exit_2(
    signed: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTHTRAIL_VERIFIER_KEYS", raising=False)
    path = str(signed["bundles"]["inclusion"])
    code, _, err = _run(capsys, "verify-proof", path)
    assert code == 2 and "needs --key" in err
    code, _, err = _run(capsys, "verify-proof", str(signed["tmp"] / "absent.json"), "--key",
                        str(signed["pub"]))  # fmt: skip
    assert code == 2 and "cannot read bundle" in err
    monkeypatch.setenv("AUTHTRAIL_VERIFIER_KEYS", str(signed["pub"]))
    code, _, _ = _run(capsys, "verify-proof", path)  # the key from the environment
    assert code == 0


def _witnessed(signed: dict[str, Any]) -> tuple[Path, Path, dict[str, Any]]:
    """The inclusion bundle with its checkpoint cosigned by witness w1 (of w1, w2 trusted)."""
    from authtrail.stream.core.cosignature import append_cosignatures, cosign, witness_key_of
    from authtrail.stream.core.note import Signer, generate_key_strings

    w1, w2 = (Signer.parse(generate_key_strings(f"witness.test/w{n}")[0]) for n in (1, 2))
    keys = signed["tmp"] / "witnesses.txt"
    keys.write_text("".join(f"{witness_key_of(w).key_string()}\n" for w in (w1, w2)))
    note = signed["inclusion"]["checkpoint"].encode()
    body = note[: note.rfind(b"\n\n") + 1]
    cosigned = append_cosignatures(note, [cosign(body, w1, 1_700_000_000)])
    bundle = dict(signed["inclusion"], checkpoint=cosigned.decode())
    path = signed["tmp"] / "witnessed.json"
    path.write_bytes(bundle_json(bundle))
    return path, keys, bundle


def test_witness_cosignatures_required(
    signed: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTHTRAIL_TRUSTED_WITNESS_KEYS", raising=False)
    monkeypatch.delenv("AUTHTRAIL_WITNESSES", raising=False)
    path, keys, bundle = _witnessed(signed)
    pub = str(signed["pub"])
    code, out, _ = _run(capsys, "verify-proof", str(path), "--key", pub, "--witness-key", str(keys))
    assert code == 0 and "checkpoint cosigned by: witness.test/w1+" in out
    code, out, _ = _run(capsys, "verify-proof", str(path), "--key", pub, "--witness-key",
                        str(keys), "--json")  # fmt: skip
    assert code == 0 and [s.split("+")[0] for s in json.loads(out)["cosigned_by"]] == [
        "witness.test/w1"
    ]
    code, _, err = _run(capsys, "verify-proof", str(path), "--key", pub, "--witness-key",
                        str(keys), "--witnesses", "2")  # fmt: skip
    assert code == 1 and "checkpoint cosignatures" in err and "1 of 2 required" in err
    # The uncosigned bundle fails the default of one.
    original = str(signed["bundles"]["inclusion"])
    code, _, err = _run(capsys, "verify-proof", original, "--key", pub, "--witness-key", str(keys))
    assert code == 1 and "0 of 1 required" in err
    # A cosignature line whose signature was altered is a forgery.
    text = bundle["checkpoint"]
    head, _, encoded = text.rstrip("\n").rpartition(" ")
    payload = bytearray(base64.b64decode(encoded))
    payload[-1] ^= 1  # the last byte of the Ed25519 signature
    tampered = f"{head} {base64.b64encode(payload).decode()}\n"
    path.write_bytes(bundle_json(dict(bundle, checkpoint=tampered)))
    code, _, err = _run(capsys, "verify-proof", str(path), "--key", pub, "--witness-key", str(keys))
    assert code == 1 and "integrity failure" in err and "cosignature by witness.test/w1" in err
    code, _, err = _run(capsys, "verify-proof", original, "--key", pub, "--witnesses", "1")
    assert code == 2 and "needs the witnesses' keys" in err


def test_consistency_bundle_requires_cosignatures_of_the_new_checkpoint_only(
    signed: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTHTRAIL_TRUSTED_WITNESS_KEYS", raising=False)
    monkeypatch.delenv("AUTHTRAIL_WITNESSES", raising=False)
    _, keys, witnessed = _witnessed(signed)  # the inclusion checkpoint is the size-7 note
    path = signed["tmp"] / "consistency-witnessed.json"
    consistency = json.loads(signed["bundles"]["consistency"].read_bytes())
    path.write_bytes(bundle_json(dict(consistency, new=witnessed["checkpoint"])))
    pub = str(signed["pub"])
    code, out, _ = _run(capsys, "verify-proof", str(path), "--key", pub, "--witness-key", str(keys))
    assert code == 0 and "new checkpoint cosigned by: witness.test/w1+" in out
    original = str(signed["bundles"]["consistency"])  # new checkpoint not cosigned
    code, _, err = _run(capsys, "verify-proof", original, "--key", pub, "--witness-key", str(keys))
    assert code == 1 and "new checkpoint cosignatures" in err
