"""`verify --published DIR --witness-key FILE --witnesses N`: the published newest notes
must carry N trusted witness cosignatures (docs/INTEGRITY.md §9). No store, no HTTP: the
publication is built in a tmp dir and cosigned with authtrail.stream.core.cosignature directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from authtrail.cli.main import main
from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.keys import load_witness_keys
from authtrail.sinks.publication import Publication
from authtrail.sinks.publication_files import newest_checkpoints, note_body, note_file_name
from authtrail.sinks.published_view import FORGED_COSIGNATURE, MISSING_COSIGNATURES, read_published
from authtrail.stream.core.audit import key_label
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.cosignature import (
    WitnessPolicy,
    append_cosignatures,
    cosign,
    witness_key_of,
)
from authtrail.stream.core.note import Keyring, Signer, generate_key_strings, make_keyring
from authtrail.stream.core.sequencer import Sequencer

ORIGIN = "authtrail.test"
TIME = 1_700_000_000
LOG = Signer.parse(generate_key_strings("authtrail")[0])
W1, W2, W3 = (Signer.parse(generate_key_strings(f"witness.test/w{n}")[0]) for n in (1, 2, 3))
TRUSTED = (witness_key_of(W1), witness_key_of(W2))  # W3 is nobody this verifier trusts


def _label(witness: Signer) -> str:
    key = witness_key_of(witness)
    return key_label(key.name, key.key_id)


@pytest.fixture(autouse=True)
def _no_witness_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTHTRAIL_TRUSTED_WITNESS_KEYS", raising=False)
    monkeypatch.delenv("AUTHTRAIL_WITNESSES", raising=False)


@pytest.fixture
def published(tmp_path: Path) -> Path:
    """Two tenants, two checkpoints each, published the way the sink does it."""
    sequencer = Sequencer(LOG, ORIGIN, batch_size=3, batch_interval=3600)
    notes = []
    for n in range(12):
        tenant_id = ("acme", "globex")[n % 2]
        event = {"event_id": f"ev-{n}", "tenant_id": tenant_id, "occurred_at": n}
        sequencer.offer(tenant_id, f"ev-{n}", canonical_leaf(event), n)
        for due in sequencer.full_batches():
            signed = sequencer.close_batch(due)
            notes.append((due, signed.checkpoint.size, signed.note))
    directory = tmp_path / "published"
    publication = Publication(directory, log_origin=ORIGIN, signer=LOG)
    publication.publish_checkpoints(notes)
    publication.publish_directory()
    return directory


def _keyring() -> Keyring:
    return make_keyring([LOG.verifier_key()])


def cosign_newest(directory: Path, tenant_id: str, *witnesses: Signer, body: bytes = b"") -> None:
    """Stand in for the publisher: add cosignatures to the tenant's newest published note.

    ``body`` (default: the note's own) is what the witnesses sign: another one forges.
    """
    size, note = newest_checkpoints(directory)[tenant_id]
    lines = [cosign(body or note_body(note), witness, TIME) for witness in witnesses]
    path = directory / "checkpoints" / tenant_id / note_file_name(size)
    path.chmod(0o644)
    path.write_bytes(append_cosignatures(note, lines))


def test_two_required_cosignatures_present(published: Path) -> None:
    for tenant_id in ("acme", "globex"):
        cosign_newest(published, tenant_id, W1, W2)
    view = read_published(published, _keyring(), ORIGIN, WitnessPolicy(TRUSTED, 2))
    assert view.damage == []
    assert view.cosigned_by == {
        "acme": (6, [_label(W1), _label(W2)]),
        "globex": (6, [_label(W1), _label(W2)]),
    }
    assert set(view.anchors) == {"acme", "globex"}  # cosignatures change no anchor


def test_one_cosignature_missing_is_damage_naming_tenant_size_and_witness(
    published: Path,
) -> None:
    cosign_newest(published, "acme", W1)
    cosign_newest(published, "globex", W1, W2)
    view = read_published(published, _keyring(), ORIGIN, WitnessPolicy(TRUSTED, 2))
    (damage,) = view.damage
    assert damage["damage"] == MISSING_COSIGNATURES
    assert damage["name"] == f"{published}/checkpoints/acme/{note_file_name(6)}"
    assert "tenant 'acme' size 6" in damage["detail"]
    assert "1 of 2 required" in damage["detail"] and W1.name in damage["detail"]
    assert view.cosigned_by["acme"] == (6, [_label(W1)])


def test_a_forged_cosignature_by_a_trusted_witness_is_damage(published: Path) -> None:
    _, other = newest_checkpoints(published)["globex"]
    cosign_newest(published, "acme", W1)
    cosign_newest(published, "acme", W2, body=note_body(other))  # W2's line, wrong body
    view = read_published(published, _keyring(), ORIGIN, WitnessPolicy(TRUSTED, 1))
    forged = [d for d in view.damage if d["damage"] == FORGED_COSIGNATURE]
    assert len(forged) == 1 and "tenant 'acme' size 6" in forged[0]["detail"]
    assert W2.name in forged[0]["detail"]
    assert f"valid cosignatures by: {_label(W1)}" in forged[0]["detail"]
    # globex carries no cosignature at all: missing, not forged.
    assert [d["damage"] for d in view.damage] == [FORGED_COSIGNATURE, MISSING_COSIGNATURES]


def test_an_untrusted_witness_does_not_count(published: Path) -> None:
    for tenant_id in ("acme", "globex"):
        cosign_newest(published, tenant_id, W1, W3)
    view = read_published(published, _keyring(), ORIGIN, WitnessPolicy(TRUSTED, 2))
    assert [d["damage"] for d in view.damage] == [MISSING_COSIGNATURES] * 2
    assert view.cosigned_by["acme"] == (6, [_label(W1)])
    assert read_published(published, _keyring(), ORIGIN, WitnessPolicy(TRUSTED, 1)).damage == []


def test_without_a_policy_cosignatures_are_not_looked_at(published: Path) -> None:
    view = read_published(published, _keyring(), ORIGIN)
    assert view.damage == [] and view.cosigned_by["acme"] == (6, [])


def test_a_policy_no_note_could_meet_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"must be in 0\.\.2"):
        WitnessPolicy(TRUSTED, 3)
    with pytest.raises(InvalidArgumentError, match=r"must be in 0\.\.2"):
        WitnessPolicy(TRUSTED, -1)


def test_witness_key_files(tmp_path: Path) -> None:
    path = tmp_path / "witnesses.txt"
    path.write_text(f"# our witnesses\n{TRUSTED[0].key_string()}\n\n{TRUSTED[1].key_string()}\n")
    assert load_witness_keys([path]) == TRUSTED
    path.write_text(f"# a log key by mistake\n{LOG.verifier_key().key_string()}\n")
    with pytest.raises(ConfigurationError, match=r"witnesses.txt line 2: .*not type 0x04"):
        load_witness_keys([path])
    path.write_text("# nothing\n")
    with pytest.raises(ConfigurationError, match="holds no key"):
        load_witness_keys([path])


def _verify(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(tmp_path / "data"), "verify", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_witness_flags_usage_errors_exit_2(
    tmp_path: Path, published: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "witnesses.txt"
    keys.write_text("\n".join(key.key_string() for key in TRUSTED) + "\n")
    for argv, message in (
        (("--witnesses", "1"), "needs the witnesses' keys"),
        (("--witness-key", str(keys)), "needs --published DIR"),
        (("--witness-key", str(keys), "--witnesses", "2"), "needs --published DIR"),
    ):
        code, out, err = _verify(capsys, tmp_path, *argv)
        assert code == 2 and out == "" and message in err
        assert len(err.strip().splitlines()) == 1
    code, _, err = _verify(
        capsys, tmp_path, "--witness-key", str(keys), "--witnesses", "3", "--published",
        str(published),
    )  # fmt: skip
    assert code == 2 and "must be in 0..2" in err
    code, _, err = _verify(capsys, tmp_path, "--witnesses", "1", "--published", str(published))
    assert code == 2 and "needs the witnesses' keys" in err
