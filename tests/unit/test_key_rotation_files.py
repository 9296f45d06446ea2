"""The rotation procedure's files and commands: `keys rotate`, `keys retire`, keyrings.

Known answers: what each command writes, byte for byte where it matters. Refusals: a
second rotation while one runs, retiring an unknown or the last key, malformed marks, and
every error a one-line message with exit 2.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from authtrail.cli import main as cli
from authtrail.errors import ConfigurationError
from authtrail.keys import (
    describe_keys,
    load_keyring,
    load_signer,
    next_key_name,
    retire_key,
    rotate_signing_key,
    write_key_pair,
)
from authtrail.settings import Settings
from authtrail.stream.core.rotation import parse_time

MARK = "2026-12-04T07:00:00Z"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    ("name", "following"),
    [("authtrail", "authtrail-2"), ("authtrail-2", "authtrail-3"), ("log-9", "log-10"),
     ("log-07", "log-07-2"), ("a-b", "a-b-2"), ("2026", "2026-2")],
)  # fmt: skip
def test_next_key_name(name: str, following: str) -> None:
    assert next_key_name(name) == following


def test_rotate_writes_the_new_pair_and_a_keyring_of_both(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    old_path, old_pub = write_key_pair(keys, "authtrail")
    keyring = keys / "authtrail.keyring"
    old, new, new_path, written = rotate_signing_key(old_path, keyring)
    assert (new.name, new_path, written) == ("authtrail-2", keys / "authtrail-2.key", keyring)
    assert load_signer(new_path).verifier_key() == new.verifier_key()
    assert (keys / "authtrail-2.pub").read_text() == new.verifier_key().key_string() + "\n"
    assert (_mode(new_path), _mode(keyring)) == (0o600, 0o644)
    lines = keyring.read_text().splitlines()
    assert [line for line in lines if not line.startswith("#")] == [
        old_pub.read_text().strip(), new.verifier_key().key_string()
    ]  # fmt: skip
    assert old.verifier_key().label in describe_keys([keyring])
    # The old .pub an auditor pinned stays as it was.
    assert old_pub.read_text() == old.verifier_key().key_string() + "\n"


def test_a_second_rotation_adds_to_the_keyring_and_keeps_comments(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first, _ = write_key_pair(keys, "authtrail")
    keyring = keys / "authtrail.keyring"
    rotate_signing_key(first, keyring)
    with keyring.open("a") as file:
        file.write("# handed to auditors on 2026-12-04\n")
    retire_key(keyring, load_signer(first).verifier_key().label, parse_time(MARK))
    _, third, _, _ = rotate_signing_key(keys / "authtrail-2.key", keyring)
    text = keyring.read_text()
    assert "# handed to auditors on 2026-12-04" in text
    assert f"retired {MARK}" in text and third.name == "authtrail-3"
    assert len(load_keyring([keyring])) == 3


def test_rotate_refuses_to_overwrite_or_rotate_a_retired_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    current, _ = write_key_pair(keys, "authtrail")
    write_key_pair(keys, "authtrail-2")
    keyring = keys / "authtrail.keyring"
    with pytest.raises(ConfigurationError, match="already exists"):
        rotate_signing_key(current, keyring)
    assert not keyring.exists()  # nothing written when the key could not be
    with pytest.raises(ConfigurationError, match="another name"):
        rotate_signing_key(current, keyring, "authtrail")
    rotate_signing_key(current, keyring, "other")
    retire_key(keyring, load_signer(current).verifier_key().label, 5)
    with pytest.raises(ConfigurationError, match="retired"):
        rotate_signing_key(current, keyring, "third")


def test_retire_marks_one_line_and_keeps_the_earliest_mark(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    current, _ = write_key_pair(keys, "authtrail")
    keyring = keys / "authtrail.keyring"
    old, new, _, _ = rotate_signing_key(current, keyring)
    label = old.verifier_key().label
    marked = retire_key(keyring, label, parse_time(MARK))
    assert marked.retired_micros == parse_time(MARK)
    assert f"{old.verifier_key().key_string()} retired {MARK}" in keyring.read_text()
    later = retire_key(keyring, label, parse_time("2027-01-01T00:00:00Z"))
    assert later.retired_micros == parse_time(MARK)
    loaded = load_keyring([keyring])
    assert loaded[old.name, old.key_id].retired_micros == parse_time(MARK)
    assert loaded[new.name, new.key_id].retired_micros is None
    assert describe_keys([keyring])[label] == f"{keyring} (retired {MARK})"
    # The same key pinned from its .pub too: the keyring's mark still holds.
    both = load_keyring([keys / "authtrail.pub", keyring])
    assert both[old.name, old.key_id].retired_micros == parse_time(MARK)


def test_retire_refuses_unknown_keys_and_retiring_the_last_signer(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    current, _ = write_key_pair(keys, "authtrail")
    keyring = keys / "authtrail.keyring"
    old, new, _, _ = rotate_signing_key(current, keyring)
    before = keyring.read_text()
    with pytest.raises(ConfigurationError, match="holds no key authtrail\\+00000000"):
        retire_key(keyring, "authtrail+00000000", 1)
    retire_key(keyring, old.verifier_key().label, 1)
    with pytest.raises(ConfigurationError, match="without a key that may sign"):
        retire_key(keyring, new.verifier_key().label, 1)
    assert keyring.read_text() == before.replace(
        old.verifier_key().key_string(),
        f"{old.verifier_key().key_string()} retired 1970-01-01T00:00:00.000001Z",
    )


def test_malformed_marks_in_a_keyring_name_file_and_line(tmp_path: Path) -> None:
    _, pub = write_key_pair(tmp_path, "authtrail")
    keyring = tmp_path / "bad.keyring"
    keyring.write_text(f"# ok\n{pub.read_text().strip()} retired tomorrow\n")
    with pytest.raises(ConfigurationError, match=r"bad\.keyring line 2"):
        load_keyring([keyring])


# --- the commands --------------------------------------------------------------------------


def _run(tmp_path: Path, *argv: str) -> int:
    return cli.main(["--data-dir", str(tmp_path / "data"), *argv])


def test_keys_rotate_and_retire_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [v for v in os.environ if v.startswith("AUTHTRAIL_")]:
        monkeypatch.delenv(name)
    settings = Settings(data_dir=tmp_path / "data")
    write_key_pair(settings.keys_dir, "authtrail")
    assert _run(tmp_path, "keys", "rotate") == 0
    out = capsys.readouterr().out
    new_key = (settings.keys_dir / "authtrail-2.key").resolve()
    assert f"AUTHTRAIL_SIGNING_KEY={new_key}" in out
    assert f"AUTHTRAIL_HANDOVER_KEY={settings.signing_key_path.resolve()}" in out
    old_label = load_signer(settings.signing_key_path).verifier_key().label
    assert f"authtrail keys retire {old_label}" in out
    # verify without --key now trusts the keyring (still with a warning).
    assert settings.verifier_key_paths == (settings.keyring_path,)

    monkeypatch.setenv("AUTHTRAIL_HANDOVER_KEY", str(settings.signing_key_path))
    assert _run(tmp_path, "keys", "rotate") == 2
    assert "a rotation is still running" in capsys.readouterr().err
    monkeypatch.delenv("AUTHTRAIL_HANDOVER_KEY")

    assert _run(tmp_path, "keys", "retire", old_label, "--at", MARK) == 0
    assert f"{old_label} retired from {MARK}" in capsys.readouterr().out
    assert _run(tmp_path, "keys", "retire", old_label, "--at", "noon") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "YYYY-MM-DDTHH:MM:SS" in error
    assert _run(tmp_path, "keys", "retire", "nobody+00000000") == 2
    assert "holds no key nobody+00000000" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        _run(tmp_path, "keys")
    assert usage.value.code == 2


def test_keys_rotate_without_a_signing_key_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [v for v in os.environ if v.startswith("AUTHTRAIL_")]:
        monkeypatch.delenv(name)
    assert _run(tmp_path, "keys", "rotate") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "authtrail.key" in error
