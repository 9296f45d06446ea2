"""Signed tenant directories: exact body, strict parser, signatures, tampered variants."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from authtrail.errors import (
    CheckpointError,
    InvalidArgumentError,
    SignatureError,
    TenantDirectoryError,
)
from authtrail.stream.core.checkpoint import GENESIS_PREV_DIGEST, Checkpoint, open_checkpoint, sign
from authtrail.stream.core.note import Signer, generate_key_strings, make_keyring
from authtrail.stream.core.rotation import RetiredKeyError
from authtrail.stream.core.tenant_directory import (
    TenantDirectory,
    directory_body,
    is_valid_tenant_id,
    open_directory,
    parse_directory,
    sign_directory,
)

# The Go note test key (golang.org/x/mod/sumdb/note): a fixed, public test signer.
PETER_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER = Signer.parse(PETER_SIGNER_KEY)
KEYRING = make_keyring([PETER.verifier_key()])
LOG_ORIGIN = "authtrail.local"
ROOT_A = bytes(range(32))
ROOT_B = bytes(range(32, 64))

DIRECTORY = TenantDirectory(
    LOG_ORIGIN, 1764151200000000, {"globex": (3, ROOT_A), "acme": (12, ROOT_B)}
)
# Written out by hand from docs/DEPLOYMENT.md, not produced by the code under test.
BODY = (
    b"authtrail-tenants-v1\n"
    b"authtrail.local\n"
    b"1764151200000000\n"
    b"2\n"
    b"acme 12 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n"
    b"globex 3 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
)
LINES = BODY.decode().splitlines()


def _body(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def test_body_is_the_documented_bytes() -> None:
    assert directory_body(DIRECTORY) == BODY
    assert list(DIRECTORY.entries) == ["acme", "globex"]  # ascending, whatever the input order


def test_parse_round_trips() -> None:
    parsed = parse_directory(BODY)
    assert parsed == DIRECTORY
    assert dict(parsed.entries) == {"acme": (12, ROOT_B), "globex": (3, ROOT_A)}


def test_empty_directory_says_there_are_no_tenants() -> None:
    body = b"authtrail-tenants-v1\nauthtrail.local\n0\n0\n"
    assert directory_body(TenantDirectory(LOG_ORIGIN, 0, {})) == body
    assert parse_directory(body).entries == {}


def test_signed_note_is_body_blank_line_and_an_ed25519_signature_over_the_body() -> None:
    note = sign_directory(DIRECTORY, PETER)
    assert note.startswith(BODY + b"\n\xe2\x80\x94 PeterNeumann ")
    payload = base64.b64decode(note.rsplit(b" ", 1)[1])
    assert payload[:4] == bytes.fromhex("c74f20a3")
    Ed25519PublicKey.from_public_bytes(PETER.verifier_key().public_key).verify(payload[4:], BODY)
    assert open_directory(note, KEYRING, LOG_ORIGIN) == DIRECTORY


def _replace(index: int, line: str) -> bytes:
    return _body([*LINES[:index], line, *LINES[index + 1 :]])


ACME = LINES[4]
ROOT_B64 = ACME.split(" ")[2]
URL_SAFE = base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode()
assert "-" in URL_SAFE and "_" in URL_SAFE
TAMPERED = {
    "magic v2": _replace(0, "authtrail-tenants-v2"),
    "magic case": _replace(0, "Authtrail-tenants-v1"),
    "magic missing": _body(LINES[1:]),
    "origin empty": _replace(1, ""),
    "origin with space": _replace(1, "authtrail local"),
    "origin with plus": _replace(1, "authtrail+local"),
    "time leading zero": _replace(2, "01764151200000000"),
    "time negative": _replace(2, "-1"),
    "time fraction": _replace(2, "1.5"),
    "time too large": _replace(2, str(2**64)),
    "time empty": _replace(2, ""),
    "count too high": _replace(3, "3"),
    "count too low": _replace(3, "1"),
    "count leading zero": _replace(3, "02"),
    "count plus sign": _replace(3, "+2"),
    "tenant line without root": _replace(4, "acme 12"),
    "tenant line with extra field": _replace(4, ACME + " x"),
    "tenant line double space": _replace(4, ACME.replace(" ", "  ", 1)),
    "tenant line tab": _replace(4, ACME.replace(" ", "\t", 1)),
    "tenant line trailing space": _replace(4, ACME + " "),
    "size leading zero": _replace(4, f"acme 012 {ROOT_B64}"),
    "size zero": _replace(4, f"acme 0 {ROOT_B64}"),
    "size too large": _replace(4, f"acme {2**64} {ROOT_B64}"),
    "root unpadded": _replace(4, f"acme 12 {ROOT_B64.rstrip('=')}"),
    "root url-safe alphabet": _replace(4, f"acme 12 {URL_SAFE}"),
    "root 31 bytes": _replace(4, f"acme 12 {base64.b64encode(ROOT_B[:31]).decode()}"),
    "root 33 bytes": _replace(4, f"acme 12 {base64.b64encode(ROOT_B + b'x').decode()}"),
    "root not canonical": _replace(4, f"acme 12 {ROOT_B64[:-2]}9="),  # nonzero pad bits
    "root garbage": _replace(4, "acme 12 !!!!"),
    "tenant id invalid": _replace(4, f"-acme 12 {ROOT_B64}"),
    "tenant id with slash": _replace(4, f"ac/me 12 {ROOT_B64}"),
    "tenants reordered": _body([*LINES[:4], LINES[5], LINES[4]]),
    "tenant duplicated": _body([*LINES[:3], "3", LINES[4], LINES[4], LINES[5]]),
    "tenant line dropped": _body(LINES[:5]),
    "extra line": _body([*LINES, "authtrail-extra 1"]),
    "blank line at end": BODY + b"\n",
    "no final newline": BODY[:-1],
    "crlf": BODY.replace(b"\n", b"\r\n"),
    "not utf-8": BODY.replace(b"acme", b"acm\xff"),
    "empty": b"",
}


def test_the_non_canonical_root_variant_decodes_to_the_same_bytes() -> None:
    # Guard the guard: that variant must differ only in spelling, not in value.
    variant = TAMPERED["root not canonical"].decode().splitlines()[4].split(" ")[2]
    assert variant != ROOT_B64
    assert base64.b64decode(variant) == ROOT_B


@pytest.mark.parametrize("body", TAMPERED.values(), ids=TAMPERED.keys())
def test_tampered_bodies_are_refused(body: bytes) -> None:
    assert body != BODY
    with pytest.raises(TenantDirectoryError):
        parse_directory(body)


@pytest.mark.parametrize("body", TAMPERED.values(), ids=TAMPERED.keys())
def test_tampered_bodies_are_refused_even_when_signed(body: bytes) -> None:
    note = body + b"\n\xe2\x80\x94 PeterNeumann " + base64.b64encode(
        PETER.key_id.to_bytes(4, "big") + PETER.sign(body)
    ) + b"\n"  # fmt: skip
    with pytest.raises(CheckpointError):  # TenantDirectoryError, or a malformed note
        open_directory(note, KEYRING, LOG_ORIGIN)


def test_every_bit_flip_of_the_signed_note_is_refused() -> None:
    note = sign_directory(DIRECTORY, PETER)
    for index in range(len(note)):
        for bit in range(8):
            flipped = bytearray(note)
            flipped[index] ^= 1 << bit
            with pytest.raises(CheckpointError):
                open_directory(bytes(flipped), KEYRING, LOG_ORIGIN)


def test_unsigned_body_is_refused() -> None:
    with pytest.raises(CheckpointError, match="no blank line"):
        open_directory(BODY, KEYRING, LOG_ORIGIN)


def test_a_directory_signed_by_an_untrusted_key_is_refused() -> None:
    other = Signer.parse(generate_key_strings("PeterNeumann")[0])  # same name, other key
    with pytest.raises(SignatureError, match="no signature by a trusted key"):
        open_directory(sign_directory(DIRECTORY, other), KEYRING, LOG_ORIGIN)


def test_a_directory_signed_only_by_a_retired_key_is_refused_from_its_mark_on() -> None:
    note = sign_directory(DIRECTORY, PETER)
    at = DIRECTORY.time_micros
    for mark, refused in ((at + 1, False), (at, True), (at - 1, True)):
        keyring = make_keyring([replace(PETER.verifier_key(), retired_micros=mark)])
        if refused:
            with pytest.raises(RetiredKeyError, match="retired"):
                open_directory(note, keyring, LOG_ORIGIN)
        else:
            assert open_directory(note, keyring, LOG_ORIGIN) == DIRECTORY


def test_a_directory_of_another_log_is_refused() -> None:
    note = sign_directory(TenantDirectory("other.example", 1, {"acme": (1, ROOT_A)}), PETER)
    with pytest.raises(TenantDirectoryError, match=r"'other\.example' is not the expected"):
        open_directory(note, KEYRING, LOG_ORIGIN)


def test_a_checkpoint_is_never_a_directory_and_a_directory_never_a_checkpoint() -> None:
    checkpoint = Checkpoint(
        origin="authtrail.local/acme", size=12, root=ROOT_B, batch_first_seq=1,
        batch_last_seq=12, batch_root=ROOT_A, chain_hash=ROOT_A,
        prev_digest=GENESIS_PREV_DIGEST, time_micros=1,
    )  # fmt: skip
    with pytest.raises(TenantDirectoryError, match="not a tenant directory"):
        open_directory(sign(checkpoint, PETER), KEYRING, LOG_ORIGIN)
    with pytest.raises(CheckpointError):
        open_checkpoint(sign_directory(DIRECTORY, PETER), KEYRING, "authtrail.local/acme")
    with pytest.raises(CheckpointError):
        Checkpoint.parse(BODY)


@pytest.mark.parametrize(
    ("log_origin", "time_micros", "entries"),
    [
        ("", 0, {}),
        ("a b", 0, {}),
        (LOG_ORIGIN, -1, {}),
        (LOG_ORIGIN, 2**64, {}),
        (LOG_ORIGIN, 0, {"": (1, ROOT_A)}),
        (LOG_ORIGIN, 0, {"../etc": (1, ROOT_A)}),
        (LOG_ORIGIN, 0, {"a" * 129: (1, ROOT_A)}),
        (LOG_ORIGIN, 0, {"acme": (0, ROOT_A)}),
        (LOG_ORIGIN, 0, {"acme": (2**64, ROOT_A)}),
        (LOG_ORIGIN, 0, {"acme": (1, ROOT_A[:31])}),
    ],
)
def test_constructor_refuses_what_cannot_be_written(
    log_origin: str, time_micros: int, entries: dict[str, tuple[int, bytes]]
) -> None:
    with pytest.raises(InvalidArgumentError):
        TenantDirectory(log_origin, time_micros, entries)


def test_entries_cannot_be_changed_afterwards() -> None:
    entries = {"acme": (1, ROOT_A)}
    directory = TenantDirectory(LOG_ORIGIN, 0, entries)
    entries["globex"] = (2, ROOT_B)  # the caller's dict, copied
    assert list(directory.entries) == ["acme"]
    with pytest.raises(TypeError):
        directory.entries["globex"] = (2, ROOT_B)  # type: ignore[index]


@pytest.mark.parametrize(
    ("tenant_id", "valid"),
    [("acme", True), ("A", True), ("a.b_c-9", True), ("a" * 128, True), ("a" * 129, False),
     ("", False), (".acme", False), ("-acme", False), ("ac/me", False), ("acme\n", False),
     ("ac me", False), ("acmé", False)],
)  # fmt: skip
def test_tenant_ids(tenant_id: str, valid: bool) -> None:
    assert is_valid_tenant_id(tenant_id) is valid


_TENANT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
_ENTRY = st.tuples(st.integers(1, 2**64 - 1), st.binary(min_size=32, max_size=32))


@given(st.integers(0, 2**64 - 1), st.dictionaries(_TENANT, _ENTRY, max_size=8))
def test_any_directory_round_trips(time_micros: int, entries: dict[str, tuple[int, bytes]]) -> None:
    directory = TenantDirectory(LOG_ORIGIN, time_micros, entries)
    assert parse_directory(directory_body(directory)) == directory
