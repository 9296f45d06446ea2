"""Configuring the witnesses the sink submits to, and how it treats one that is down.

No server runs here: an unreachable witness is a loopback port nobody listens on (the
submission itself, with real witnesses, is tests/integration/test_witness_submit.py).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from authtrail.cli.main import build_parser
from authtrail.errors import ConfigurationError
from authtrail.keys import write_key_pair
from authtrail.settings import Settings
from authtrail.sinks.service import witness_submitter
from authtrail.stream.core.cosignature import witness_key_of
from authtrail.stream.core.note import Signer, generate_key_strings, sign_note
from authtrail.witness_client import (
    WitnessRestingError,
    WitnessSubmitter,
    WitnessUnavailableError,
    parse_cosigning_witness,
)

WITNESS = Signer.parse(generate_key_strings("witness.test/w1")[0])
OTHER = Signer.parse(generate_key_strings("witness.test/w2")[0])
LOG = Signer.parse(generate_key_strings("authtrail.local")[0])
NOTE = sign_note(b"authtrail.local/acme\n1\n" + b"A" * 43 + b"=\n", LOG)


def _vkey_file(path: Path, *signers: Signer) -> Path:
    path.write_text("".join(f"{witness_key_of(s).key_string()}\n" for s in signers))
    return path


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_settings_read_witnesses_from_the_environment_and_flags(tmp_path: Path) -> None:
    environment = {
        "AUTHTRAIL_COSIGNING_WITNESSES": "http://w1:7380=/k/w1.vkey, https://w2/sub=/k/w2.vkey",
        "AUTHTRAIL_WITNESS_TIMEOUT_MS": "2500",
        "AUTHTRAIL_WITNESS_RETRY_MS": "0",
    }
    settings = Settings.from_env(environment)
    assert settings.cosigning_witnesses == (
        "http://w1:7380=/k/w1.vkey",
        "https://w2/sub=/k/w2.vkey",
    )
    assert (settings.witness_timeout_ms, settings.witness_retry_ms) == (2500, 0)
    again = Settings.from_env(settings.to_env())  # as `up` hands settings to children
    assert again.cosigning_witnesses == settings.cosigning_witnesses
    args = build_parser().parse_args(
        ["up", "--cosigning-witness", "http://a=/a.vkey", "--cosigning-witness", "http://b=/b.vkey"]
    )
    flagged = settings.with_overrides({"cosigning_witnesses": args.cosigning_witnesses})
    assert flagged.cosigning_witnesses == ("http://a=/a.vkey", "http://b=/b.vkey")
    for name, value in (
        ("AUTHTRAIL_WITNESS_TIMEOUT_MS", "0"),
        ("AUTHTRAIL_WITNESS_RETRY_MS", "-1"),
    ):
        with pytest.raises(ConfigurationError, match="witness_"):
            Settings.from_env({name: value})


def test_url_and_key_file_are_split_and_malformed_items_are_refused() -> None:
    assert parse_cosigning_witness(" http://127.0.0.1:7380=/k/a=b.vkey ") == (
        "http://127.0.0.1:7380", Path("/k/a=b.vkey"),
    )  # fmt: skip
    assert parse_cosigning_witness("https://w.example/witness=k") == (
        "https://w.example/witness", Path("k"),
    )  # fmt: skip
    for text in ("http://w:1", "http://w:1=", "w:1=k", "ftp://w=k", "http://=k",
                 "http://w/?q=1=k", "http://w/#x=k"):  # fmt: skip
        with pytest.raises(ConfigurationError, match="URL=KEYFILE"):
            parse_cosigning_witness(text)


def test_the_submitter_is_built_from_settings_with_one_key_per_witness(tmp_path: Path) -> None:
    one = _vkey_file(tmp_path / "w1.vkey", WITNESS)
    settings = Settings(
        data_dir=tmp_path, publication_dir=tmp_path / "published",
        cosigning_witnesses=(f"http://127.0.0.1:1={one}",), witness_timeout_ms=1500,
    )  # fmt: skip
    submitter = witness_submitter(settings)
    assert submitter is not None and submitter.witness_urls == ("http://127.0.0.1:1",)
    assert witness_submitter(Settings(data_dir=tmp_path)) is None

    two = _vkey_file(tmp_path / "two.vkey", WITNESS, OTHER)
    _, log_pub = write_key_pair(tmp_path / "keys", "authtrail")
    cases = [
        ((f"http://a={one}",), None, "needs AUTHTRAIL_PUBLICATION_DIR"),
        ((f"http://a={two}",), tmp_path, "holds 2 keys, not one"),
        ((f"http://a={log_pub}",), tmp_path, "not type 0x04"),
        ((f"http://a={tmp_path / 'missing.vkey'}",), tmp_path, "missing.vkey"),
        ((f"http://a={one}", f"http://a={one}"), tmp_path, "named twice"),
    ]
    for witnesses, publication_dir, words in cases:
        settings = Settings(
            data_dir=tmp_path, publication_dir=publication_dir, cosigning_witnesses=witnesses
        )
        with pytest.raises(ConfigurationError, match=words):
            witness_submitter(settings)


def test_an_unreachable_witness_rests_then_is_tried_again() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    clock = [100.0]
    submitter = WitnessSubmitter([url], timeout=2, retry_after=30, monotonic=lambda: clock[0])

    def no_proof(old_size: int) -> list[bytes]:
        return []

    note, failures = submitter.cosign(NOTE, 1, no_proof)
    assert note == NOTE and "unreachable" in str(failures[url])
    clock[0] += 29
    note, failures = submitter.cosign(NOTE, 1, no_proof)
    assert isinstance(failures[url], WitnessRestingError)
    assert "skipped" in str(failures[url]) and "next try in 1 s" in str(failures[url])
    clock[0] += 1
    note, failures = submitter.cosign(NOTE, 1, no_proof)
    assert isinstance(failures[url], WitnessUnavailableError)
    assert not isinstance(failures[url], WitnessRestingError)
