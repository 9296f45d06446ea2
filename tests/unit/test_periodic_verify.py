"""`up`'s periodic verify: the command it runs is the one a person would run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from authtrail.cli.periodic_verify import verify_command
from authtrail.settings import Settings


def test_the_command_pins_the_data_dirs_key_keeps_state_and_checks_the_publication(
    tmp_path: Path,
) -> None:
    settings = replace(Settings.from_env({}), data_dir=tmp_path, publication_dir=tmp_path / "pub")
    command = verify_command(settings, tmp_path / "r.json", tmp_path / "s.json")
    assert command[1:] == [
        "-m", "authtrail.cli", "--data-dir", str(tmp_path), "verify",
        "--report-json", str(tmp_path / "r.json"), "--state", str(tmp_path / "s.json"),
        "--key", str(tmp_path / "keys" / "authtrail.pub"), "--published", str(tmp_path / "pub"),
    ]  # fmt: skip
    (tmp_path / "keys").mkdir()
    settings.keyring_path.write_text("")  # after a rotation: the keyring
    assert verify_command(settings, tmp_path / "r.json", tmp_path / "s.json")[-3] == str(
        settings.keyring_path
    )
