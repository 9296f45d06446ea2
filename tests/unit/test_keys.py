"""Key files: created private, never overwritten, refused when loose or corrupt."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from authtrail.errors import ConfigurationError
from authtrail.keys import (
    generate_signing_key,
    key_file_paths,
    load_keyring,
    load_signer,
    write_key_pair,
)
from authtrail.stream.core.checkpoint import GENESIS_PREV_DIGEST, Checkpoint, open_checkpoint, sign
from authtrail.stream.core.note import Signer, VerifierKey

CHECKPOINT = Checkpoint(
    origin="authtrail.local/acme",
    size=3,
    root=bytes(32),
    batch_first_seq=1,
    batch_last_seq=3,
    batch_root=bytes(32),
    chain_hash=bytes(32),
    prev_digest=GENESIS_PREV_DIGEST,
    time_micros=0,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_generate_signing_key_returns_matching_strings() -> None:
    signer_key, verifier_key = generate_signing_key("authtrail")
    assert signer_key.startswith("PRIVATE+KEY+authtrail+")
    assert Signer.parse(signer_key).verifier_key() == VerifierKey.parse(verifier_key)
    assert generate_signing_key("authtrail") != (signer_key, verifier_key)
    with pytest.raises(ConfigurationError):
        generate_signing_key("bad name")


def test_write_key_pair_modes_and_contents(tmp_path: Path, umask: None) -> None:
    key_path, pub_path = write_key_pair(tmp_path / "keys", "authtrail")
    assert (key_path, pub_path) == (
        tmp_path / "keys/authtrail.key",
        tmp_path / "keys/authtrail.pub",
    )
    assert _mode(key_path) == 0o600
    assert _mode(pub_path) == 0o644
    assert _mode(tmp_path / "keys") == 0o700
    signer = load_signer(key_path)
    assert signer.verifier_key().key_string() + "\n" == pub_path.read_text()
    keyring = load_keyring([pub_path])
    assert open_checkpoint(sign(CHECKPOINT, signer), keyring, CHECKPOINT.origin) == CHECKPOINT


@pytest.mark.parametrize("mask", [0o000, 0o077, 0o277])
def test_modes_do_not_depend_on_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        key_path, pub_path = write_key_pair(tmp_path, "authtrail")
    finally:
        os.umask(old)
    assert _mode(key_path) == 0o600
    assert _mode(pub_path) == 0o644


def test_name_with_slash_becomes_flat_file_name(tmp_path: Path) -> None:
    key_path, pub_path = write_key_pair(tmp_path, "example.com/log")
    assert key_path.name == "example.com_log.key" and pub_path.name == "example.com_log.pub"
    assert load_signer(key_path).name == "example.com/log"
    assert key_file_paths(tmp_path, "example.com/log") == (key_path, pub_path)


def test_no_overwrite(tmp_path: Path) -> None:
    key_path, pub_path = write_key_pair(tmp_path, "authtrail")
    before = key_path.read_bytes(), pub_path.read_bytes()
    with pytest.raises(ConfigurationError, match="already exists"):
        write_key_pair(tmp_path, "authtrail")
    assert (key_path.read_bytes(), pub_path.read_bytes()) == before


def test_no_overwrite_of_a_lone_pub_and_no_half_pair(tmp_path: Path) -> None:
    (tmp_path / "authtrail.pub").write_text("someone else's key\n")
    with pytest.raises(ConfigurationError, match=r"authtrail\.pub already exists"):
        write_key_pair(tmp_path, "authtrail")
    assert not (tmp_path / "authtrail.key").exists()


def test_no_overwrite_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("precious\n")
    (tmp_path / "authtrail.key").symlink_to(target)
    with pytest.raises(ConfigurationError):
        write_key_pair(tmp_path, "authtrail")
    assert target.read_text() == "precious\n"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602, 0o610, 0o601, 0o666])
def test_loose_permissions_are_refused(tmp_path: Path, mode: int) -> None:
    key_path, _ = write_key_pair(tmp_path, "authtrail")
    secret = key_path.read_text().strip()
    os.chmod(key_path, mode)
    with pytest.raises(ConfigurationError) as caught:
        load_signer(key_path)
    message = str(caught.value)
    assert str(key_path) in message and "chmod 600" in message and f"{mode:04o}" in message
    assert secret.split("+", 4)[4] not in message


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_permissions_are_accepted(tmp_path: Path, mode: int) -> None:
    key_path, _ = write_key_pair(tmp_path, "authtrail")
    os.chmod(key_path, mode)
    assert load_signer(key_path).name == "authtrail"


def _corruptions(secret: str, verifier: str) -> list[bytes]:
    flipped = secret[:-5] + ("A" if secret[-5] != "A" else "B") + secret[-4:]
    return [
        b"",
        b"\n",
        b"garbage\n",
        secret[:-4].encode() + b"\n",  # truncated
        flipped.encode() + b"\n",  # one character changed: key id no longer matches
        verifier.encode() + b"\n",  # the public key in the secret file
        (secret + "\n" + secret + "\n").encode(),  # two keys
        b"\xff\xfe" + secret.encode(),
        secret.replace("PRIVATE+KEY+", "PRIVATE+KEYS+").encode(),
    ]


def test_corrupt_key_files_are_refused_without_leaking_the_secret(tmp_path: Path) -> None:
    key_path, pub_path = write_key_pair(tmp_path, "authtrail")
    secret = key_path.read_text().strip()
    seed_b64 = secret.split("+", 4)[4]
    for index, content in enumerate(_corruptions(secret, pub_path.read_text().strip())):
        path = tmp_path / f"corrupt{index}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, content)
        os.close(fd)
        with pytest.raises(ConfigurationError) as caught:
            load_signer(path)
        assert str(path) in str(caught.value)
        assert seed_b64 not in str(caught.value) and seed_b64[:12] not in str(caught.value)


def test_missing_and_non_regular_key_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot open"):
        load_signer(tmp_path / "missing.key")
    (tmp_path / "dir.key").mkdir(mode=0o700)
    with pytest.raises(ConfigurationError):
        load_signer(tmp_path / "dir.key")


def test_load_keyring_from_strings_paths_and_rotation_files(tmp_path: Path) -> None:
    old_key, old_pub = write_key_pair(tmp_path, "authtrail-2025")
    new_key, new_pub = write_key_pair(tmp_path, "authtrail-2026")
    trusted = tmp_path / "trusted.pub"
    trusted.write_text(
        "# keys that signed checkpoints, oldest first\n\n"
        + old_pub.read_text()
        + "  "
        + new_pub.read_text()
    )
    old_note = sign(CHECKPOINT, load_signer(old_key))
    new_note = sign(CHECKPOINT, load_signer(new_key))
    for keyring in (
        load_keyring([trusted]),
        load_keyring([str(trusted)]),
        load_keyring([old_pub, new_pub]),
        load_keyring([old_pub.read_text().strip(), new_pub.read_text().strip()]),
    ):
        assert len(keyring) == 2
        for note in (old_note, new_note):
            assert open_checkpoint(note, keyring, CHECKPOINT.origin) == CHECKPOINT


def test_load_keyring_refuses_bad_sources_without_leaking_secrets(tmp_path: Path) -> None:
    key_path, pub_path = write_key_pair(tmp_path, "authtrail")
    secret = key_path.read_text().strip()
    seed_b64 = secret.split("+", 4)[4]
    bad_line = tmp_path / "bad.pub"
    bad_line.write_text(pub_path.read_text() + "not a key\n")
    empty = tmp_path / "empty.pub"
    empty.write_text("# nothing\n")
    for sources in (
        [secret],
        [key_path],
        [str(key_path)],
        [bad_line],
        [empty],
        [tmp_path / "missing.pub"],
        ["missing.pub"],
        [pub_path.read_text().strip()[:-2]],
        [],
    ):
        with pytest.raises(ConfigurationError) as caught:
            load_keyring(sources)
        assert seed_b64 not in str(caught.value)
    with pytest.raises(ConfigurationError, match="line 2"):
        load_keyring([bad_line])
