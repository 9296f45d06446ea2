"""Signed notes: Go sumdb/note and RFC 8032 known answers, and every tampering rejected."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from authtrail.errors import (
    CheckpointError,
    ConfigurationError,
    InvalidArgumentError,
    SignatureError,
)
from authtrail.stream.core.note import (
    MAX_SIGNATURES,
    Signer,
    VerifierKey,
    generate_key_strings,
    key_id,
    make_keyring,
    open_note,
    sign_note,
)

# Verbatim from golang.org/x/mod/sumdb/note/note_test.go.
PETER_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VERIFIER_KEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfq"
    "dngotpRZb6KE6RyyBwJnAM=\n"
).encode()
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTG"
    "wnWLox33WWd1RvMc+QQ=\n"
).encode()
SIGNED = TEXT + b"\n" + PETER_SIG

# RFC 8032 section 7.1, TEST 1-3: secret key (seed), public key, message, signature.
RFC8032_VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.fixture(scope="module")
def peter() -> Signer:
    return Signer.parse(PETER_SIGNER_KEY)


@pytest.fixture(scope="module")
def keyring_peter() -> dict[tuple[str, int], VerifierKey]:
    return dict(make_keyring([VerifierKey.parse(PETER_VERIFIER_KEY)]))


# --- known answers -------------------------------------------------------------------


def test_sign_reproduces_go_note_vector(peter: Signer) -> None:
    assert peter.name == "PeterNeumann"
    assert peter.key_id == 0xC74F20A3
    assert peter.verifier_key().key_string() == PETER_VERIFIER_KEY
    assert sign_note(TEXT, peter) == SIGNED


def test_verifier_keys_parse_and_round_trip() -> None:
    for key_string, expected_id in (
        (PETER_VERIFIER_KEY, 0xC74F20A3),
        (ENOCH_VERIFIER_KEY, 0xAF0CFE78),
    ):
        key = VerifierKey.parse(key_string)
        assert key.key_id == expected_id
        assert key.key_string() == key_string


def test_key_id_is_first_four_bytes_of_sha256_name_newline_alg_key() -> None:
    key = VerifierKey.parse(PETER_VERIFIER_KEY)
    expected = hashlib.sha256(b"PeterNeumann\n\x01" + key.public_key).digest()[:4]
    assert key_id("PeterNeumann", key.public_key).to_bytes(4, "big") == expected
    assert expected.hex() == "c74f20a3"


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032_VECTORS)
def test_rfc8032_vectors_through_signer(
    seed: str, public: str, message: str, signature: str
) -> None:
    signer = Signer("rfc8032.example", bytes.fromhex(seed))
    assert signer.verifier_key().public_key == bytes.fromhex(public)
    assert signer.sign(bytes.fromhex(message)) == bytes.fromhex(signature)
    verifier = VerifierKey("rfc8032.example", bytes.fromhex(public))
    verifier.verify(bytes.fromhex(message), bytes.fromhex(signature))
    with pytest.raises(SignatureError):
        verifier.verify(bytes.fromhex(message) + b"\x00", bytes.fromhex(signature))
    flipped = bytearray(bytes.fromhex(signature))
    flipped[0] ^= 1
    with pytest.raises(SignatureError):
        verifier.verify(bytes.fromhex(message), bytes(flipped))
    with pytest.raises(SignatureError):
        verifier.verify(bytes.fromhex(message), bytes.fromhex(signature)[:-1])


# --- opening: Go's TestOpen cases ----------------------------------------------------


def test_open_one_trusted_one_unknown(keyring_peter: dict[tuple[str, int], VerifierKey]) -> None:
    note = open_note(TEXT + b"\n" + PETER_SIG + ENOCH_SIG, keyring_peter)
    assert note.text == TEXT
    assert [(s.name, s.key_id) for s in note.signatures] == [("PeterNeumann", 0xC74F20A3)]
    assert [(s.name, s.key_id) for s in note.unverified_signatures] == [("EnochRoot", 0xAF0CFE78)]


def test_open_both_trusted() -> None:
    keyring = make_keyring(
        [VerifierKey.parse(PETER_VERIFIER_KEY), VerifierKey.parse(ENOCH_VERIFIER_KEY)]
    )
    note = open_note(TEXT + b"\n" + PETER_SIG + ENOCH_SIG, keyring)
    assert [s.name for s in note.signatures] == ["PeterNeumann", "EnochRoot"]
    assert note.unverified_signatures == ()


def test_open_without_trusted_signature_is_rejected() -> None:
    with pytest.raises(SignatureError, match="no signature by a trusted key"):
        open_note(TEXT + b"\n" + PETER_SIG + ENOCH_SIG, make_keyring([]))


def test_open_rejects_too_many_signatures(
    keyring_peter: dict[tuple[str, int], VerifierKey],
) -> None:
    for keyring in (keyring_peter, make_keyring([])):
        with pytest.raises(CheckpointError, match="more than 100") as caught:
            open_note(TEXT + b"\n" + PETER_SIG * (MAX_SIGNATURES + 1), keyring)
        assert not isinstance(caught.value, SignatureError)
    assert open_note(TEXT + b"\n" + PETER_SIG * MAX_SIGNATURES, keyring_peter).text == TEXT


def test_open_accepts_sixteen_signatures_as_the_spec_requires(peter: Signer) -> None:
    others = [Signer(f"witness{index}.example", bytes([index]) * 32) for index in range(15)]
    note = open_note(
        sign_note(TEXT, peter, *others), make_keyring([VerifierKey.parse(PETER_VERIFIER_KEY)])
    )
    assert len(note.signatures) == 1 and len(note.unverified_signatures) == 15


def test_open_rejects_invalid_signature_by_trusted_key(
    keyring_peter: dict[tuple[str, int], VerifierKey],
) -> None:
    # Go inserts "ABCD" at byte 60 of the signature line: still base64, wrong signature.
    forged = PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:]
    with pytest.raises(SignatureError, match="PeterNeumann\\+c74f20a3"):
        open_note(TEXT + b"\n" + forged, keyring_peter)


def test_open_ignores_repeats_and_keeps_unknown_ones(
    keyring_peter: dict[tuple[str, int], VerifierKey],
) -> None:
    enoch_abcd = ENOCH_SIG[:60] + b"ABCD" + ENOCH_SIG[60:]
    message = TEXT + b"\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_abcd
    note = open_note(message, keyring_peter)
    assert [s.name for s in note.signatures] == ["PeterNeumann"]
    assert len(note.unverified_signatures) == 2


def test_open_checks_every_repeat_of_a_trusted_signature(
    keyring_peter: dict[tuple[str, int], VerifierKey],
) -> None:
    forged = PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:]
    with pytest.raises(SignatureError):
        open_note(TEXT + b"\n" + PETER_SIG + forged, keyring_peter)


@pytest.mark.parametrize(
    "message",
    [
        TEXT,
        TEXT + b"\n",
        TEXT + b"\n" + PETER_SIG[:-1],
        b"\x01" + TEXT + b"\n" + PETER_SIG,
        b"\xff" + TEXT + b"\n" + PETER_SIG,
        TEXT
        + b"\n"
        + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=".encode(),  # noqa: E501
        TEXT + b"\n" + PETER_SIG + b"Unexpected line.\n",
        TEXT + b"\n" + PETER_SIG.replace("—".encode(), b"-"),
        TEXT + b"\n" + PETER_SIG.replace(b"PeterNeumann ", b"PeterNeumann  "),
        TEXT + b"\n" + PETER_SIG.replace(b"AM=", b"AM"),
        TEXT + b"\n" + PETER_SIG.replace(b"\n", b"\r\n"),
        TEXT + b"\n" + "— PeterNeumann AAAA\n".encode(),
        TEXT + b"\n" + "— PeterNeumann \n".encode(),
        TEXT + PETER_SIG,
    ],
)
def test_open_rejects_malformed_notes(
    message: bytes, keyring_peter: dict[tuple[str, int], VerifierKey]
) -> None:
    with pytest.raises(CheckpointError, match="malformed note") as caught:
        open_note(message, keyring_peter)
    assert not isinstance(caught.value, SignatureError)


def test_open_rejects_non_canonical_base64(
    keyring_peter: dict[tuple[str, int], VerifierKey],
) -> None:
    # "AM=" -> "AN=": same decoded bytes (the low bits are padding), different text.
    line = PETER_SIG.replace(b"AM=\n", b"AN=\n")
    payload = line.split(b" ")[2].strip()
    assert base64.b64decode(payload) == base64.b64decode(PETER_SIG.split(b" ")[2].strip())
    with pytest.raises(CheckpointError, match="non-canonical"):
        open_note(TEXT + b"\n" + line, keyring_peter)


# --- tampered variants ---------------------------------------------------------------


def test_every_single_bit_flip_of_a_signed_note_is_rejected(
    keyring_peter: dict[tuple[str, int], VerifierKey],
) -> None:
    assert open_note(SIGNED, keyring_peter).text == TEXT
    for index in range(len(SIGNED)):
        for bit in range(8):
            tampered = bytearray(SIGNED)
            tampered[index] ^= 1 << bit
            with pytest.raises(CheckpointError):
                open_note(bytes(tampered), keyring_peter)


def test_altered_text_fails_the_signature(
    keyring_peter: dict[tuple[str, int], VerifierKey],
) -> None:
    for altered in (
        TEXT.replace(b"problem,", b"problem;"),
        TEXT + b"extra line\n",
        TEXT.replace(b"\nthen", b" then"),
        TEXT + b"\n",  # an extra newline: the text now ends in a blank line
        TEXT[TEXT.index(b"\n") + 1 :],
    ):
        with pytest.raises(SignatureError):
            open_note(altered + b"\n" + PETER_SIG, keyring_peter)


def test_different_key_under_the_same_name_is_not_trusted(peter: Signer) -> None:
    impostor = Signer("PeterNeumann", bytes(32))
    assert impostor.key_id != peter.key_id
    with pytest.raises(SignatureError, match="no signature by a trusted key"):
        open_note(sign_note(TEXT, impostor), make_keyring([peter.verifier_key()]))


def test_same_key_id_under_another_name_is_not_trusted(
    keyring_peter: dict[tuple[str, int], VerifierKey],
) -> None:
    renamed = PETER_SIG.replace(b"PeterNeumann", b"CarmenSandiego")
    with pytest.raises(SignatureError, match="CarmenSandiego\\+c74f20a3"):
        open_note(TEXT + b"\n" + renamed, keyring_peter)


def test_truncated_signature_line_is_rejected(
    keyring_peter: dict[tuple[str, int], VerifierKey],
) -> None:
    line = PETER_SIG[:-1]
    for cut in range(1, len(line) - len("— PeterNeumann ".encode())):
        with pytest.raises(CheckpointError):
            open_note(TEXT + b"\n" + line[:-cut] + b"\n", keyring_peter)


def test_round_trip_with_generated_key_and_blank_lines_in_text() -> None:
    signer_key, verifier_key = generate_key_strings("authtrail.example/log")
    signer = Signer.parse(signer_key)
    # The c2sp.org/signed-note example text: a blank line inside the text is allowed.
    text = (
        "Ognuno sta solo sul cuor della terra\n"
        "trafitto da un raggio di sole:\n"
        "\n"
        "ed è subito sera.\n"
    )
    note = open_note(
        sign_note(text.encode(), signer), make_keyring([VerifierKey.parse(verifier_key)])
    )
    assert note.text == text.encode()
    assert signer.verifier_key() == VerifierKey.parse(verifier_key)


# --- key strings ---------------------------------------------------------------------


def test_mangled_verifier_keys_are_refused() -> None:
    VerifierKey.parse(PETER_VERIFIER_KEY)
    raw = PETER_VERIFIER_KEY.encode()
    variants = [raw[i:j] for i in range(len(raw) + 1) for j in range(i + 1, len(raw) + 1)]
    variants = [v for v in variants if v != raw]
    variants += [raw[:i] + bytes([raw[i] + 1]) + raw[i + 1 :] for i in range(len(raw))]
    for variant in variants:
        with pytest.raises(ConfigurationError):
            VerifierKey.parse(variant.decode("latin-1"))
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+0xc74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(ConfigurationError):
            VerifierKey.parse(bad)


def test_mangled_signer_keys_are_refused_without_quoting_the_secret() -> None:
    raw = PETER_SIGNER_KEY.encode()
    secret = PETER_SIGNER_KEY.rsplit("+", 2)[-2] + "+" + PETER_SIGNER_KEY.rsplit("+", 1)[-1]
    variants = [raw[i:j] for i in range(len(raw) + 1) for j in range(i + 1, len(raw) + 1)]
    variants = [v for v in variants if v != raw]
    variants += [raw[:i] + bytes([raw[i] + 1]) + raw[i + 1 :] for i in range(len(raw))]
    for variant in variants:
        with pytest.raises(ConfigurationError) as caught:
            Signer.parse(variant.decode("latin-1"))
        assert "AYEKFALV" not in str(caught.value) and secret not in str(caught.value)


def test_signer_repr_hides_the_seed(peter: Signer) -> None:
    assert repr(peter) == "Signer(name='PeterNeumann', key_id=c74f20a3)"


def test_a_signer_key_is_refused_as_verifier_key() -> None:
    with pytest.raises(ConfigurationError, match="signer") as caught:
        VerifierKey.parse(PETER_SIGNER_KEY)
    assert "AYEKFALV" not in str(caught.value)


def test_keyring_refuses_two_keys_under_one_name_and_id() -> None:
    peter = VerifierKey.parse(PETER_VERIFIER_KEY)
    assert len(make_keyring([peter, peter])) == 1
    # Cannot find a real collision; an altered entry shows the check.
    other = VerifierKey("PeterNeumann", bytes(32))
    object.__setattr__(other, "key_id", peter.key_id)
    with pytest.raises(ConfigurationError, match="ambiguous key PeterNeumann\\+c74f20a3"):
        make_keyring([peter, other])


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\x01b"])
def test_invalid_key_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgumentError):
        Signer(name, bytes(32))


def test_sign_note_preconditions(peter: Signer) -> None:
    for text in (b"", b"no newline", b"tab\there\n", b"\xff\n", b"cr\r\n"):
        with pytest.raises(InvalidArgumentError):
            sign_note(text, peter)
    with pytest.raises(InvalidArgumentError):
        sign_note(TEXT)
    with pytest.raises(InvalidArgumentError):
        sign_note(TEXT, peter, Signer.parse(PETER_SIGNER_KEY))


def test_core_modules_import_no_io_or_pipeline_packages() -> None:
    code = (
        "import sys, authtrail.stream.core.note, authtrail.stream.core.checkpoint\n"
        "bad = {'confluent_kafka', 'faust', 'aiokafka', 'clickhouse_connect', 'chdb',"
        " 'authtrail.keys', 'socket', 'http.client', 'urllib.request'}\n"
        "print(sorted(bad & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == "[]"
