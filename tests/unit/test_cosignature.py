"""Witness cosignatures (c2sp.org/tlog-cosignature): exact bytes, and every tampering fails."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from authtrail.errors import CheckpointError, ConfigurationError, InvalidArgumentError
from authtrail.stream.core.checkpoint import open_checkpoint
from authtrail.stream.core.cosignature import (
    CosignatureError,
    MissingCosignaturesError,
    WitnessKey,
    append_cosignatures,
    check_witness_reply,
    cosign,
    cosignature_key_id,
    cosigned_message,
    verify_cosignatures,
    witness_key_of,
)
from authtrail.stream.core.note import (
    Note,
    NoteSignature,
    Signer,
    generate_key_strings,
    make_keyring,
    open_note,
    sign_note,
)
from authtrail.stream.core.sequencer import Sequencer

# RFC 8032 §7.1 TEST 1: a fixed seed whose public key anyone can look up.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC_KEY = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
WITNESS = Signer("witness.example/w1", SEED)
# The body and time of the examples in c2sp.org/tlog-cosignature.
BODY = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
TIME = 1679315147

EXPECTED_MESSAGE = (
    b"cosignature/v1\n"
    b"time 1679315147\n"
    b"example.com/behind-the-sofa\n"
    b"20852163\n"
    b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
EXPECTED_KEY_ID = 0xEB762CC2  # SHA-256("witness.example/w1" || 0x0A || 0x04 || key)[:4]
EXPECTED_VKEY = "witness.example/w1+eb762cc2+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
EXPECTED_LINE = (
    "\u2014 witness.example/w1 63YswgAAAABkGFDL+TPmh4BYuAjsYRoqMJCWb/gWJaeRF/kmm5tlCr9sJ57DLErur7"
    "K0yDXc2ArN+TIuotuB/HbuL3AJsp3bv/aNCQ==\n"
)

LOG = Signer.parse(generate_key_strings("authtrail.local")[0])
LOG_KEYRING = make_keyring([LOG.verifier_key()])
OTHER_WITNESS = Signer.parse(generate_key_strings("witness.example/w2")[0])


def _payload(line: str) -> bytes:
    return base64.b64decode(line.rstrip("\n").split(" ")[2])


def _line(name: str, payload: bytes) -> str:
    return f"\u2014 {name} {base64.b64encode(payload).decode()}\n"


def _note(body: bytes, *lines: str) -> Note:
    """A note as open_note returns it when no key in its keyring made ``lines``."""
    signatures = []
    for line in lines:
        payload = _payload(line)
        name = line.split(" ")[1]
        signatures.append(NoteSignature(name, int.from_bytes(payload[:4], "big"), payload[4:]))
    return Note(body, (), tuple(signatures))


# --- known answers --------------------------------------------------------------------


def test_the_fixed_seed_is_rfc8032_test_1() -> None:
    assert WITNESS.verifier_key().public_key == PUBLIC_KEY


def test_cosigned_message_is_header_time_line_then_body() -> None:
    assert cosigned_message(BODY, TIME) == EXPECTED_MESSAGE


def test_key_id_uses_algorithm_byte_0x04() -> None:
    by_hand = hashlib.sha256(b"witness.example/w1\n\x04" + PUBLIC_KEY).digest()[:4]
    assert int.from_bytes(by_hand, "big") == EXPECTED_KEY_ID
    assert cosignature_key_id("witness.example/w1", PUBLIC_KEY) == EXPECTED_KEY_ID
    # The same key as a log (note) key has another id, so open_note never confuses them.
    assert WITNESS.key_id != EXPECTED_KEY_ID


def test_cosignature_line_has_the_spec_layout() -> None:
    line = cosign(BODY, WITNESS, TIME)
    assert line == EXPECTED_LINE
    payload = _payload(line)
    assert len(payload) == 4 + 8 + 64
    assert payload[:4] == EXPECTED_KEY_ID.to_bytes(4, "big")
    assert payload[4:12] == bytes.fromhex("00000000641850cb")  # 1679315147, u64 big-endian
    # Checked with the Ed25519 library directly, over the hand-written message.
    Ed25519PublicKey.from_public_bytes(PUBLIC_KEY).verify(payload[12:], EXPECTED_MESSAGE)


def test_the_spec_example_cosignature_has_the_same_timestamp_layout() -> None:
    # c2sp.org/tlog-cosignature's example line for this body at time 1679315147.
    example = (
        "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
        "qhf5nNo0xUe+mbIUBkBIfZ+qnA=="
    )
    payload = base64.b64decode(example)
    assert len(payload) == 76
    assert int.from_bytes(payload[4:12], "big") == TIME


def test_witness_vkey_is_name_hex8_base64_of_0x04_and_key() -> None:
    key = witness_key_of(WITNESS)
    assert key.key_string() == EXPECTED_VKEY
    assert base64.b64decode(EXPECTED_VKEY.split("+", 2)[2]) == b"\x04" + PUBLIC_KEY
    assert WitnessKey.parse(EXPECTED_VKEY) == key
    assert WitnessKey.from_verifier_key(WITNESS.verifier_key()) == key


def test_verify_returns_one_cosignature_per_witness() -> None:
    note = _note(BODY, EXPECTED_LINE)
    [cosignature] = verify_cosignatures(note, [witness_key_of(WITNESS)], required=1)
    assert (cosignature.name, cosignature.key_id, cosignature.timestamp) == (
        "witness.example/w1",
        EXPECTED_KEY_ID,
        TIME,
    )


# --- the checkpoint note still opens ----------------------------------------------------


def _checkpoint_note() -> bytes:
    sequencer = Sequencer(LOG, "authtrail.local", batch_size=2, batch_interval=60)
    for offset in range(2):
        sequencer.offer("acme", f"e{offset}", f"leaf {offset}".encode(), offset)
    return sequencer.close_batch("acme").note


def test_open_note_and_open_checkpoint_ignore_cosignature_lines() -> None:
    note = _checkpoint_note()
    body = open_note(note, LOG_KEYRING).text
    cosigned = append_cosignatures(
        note, [cosign(body, WITNESS, TIME), cosign(body, OTHER_WITNESS, TIME + 1)]
    )
    opened = open_note(cosigned, LOG_KEYRING)
    assert opened.text == body
    assert len(opened.unverified_signatures) == 2
    assert open_checkpoint(cosigned, LOG_KEYRING, "authtrail.local/acme").size == 2
    witnesses = [witness_key_of(WITNESS), witness_key_of(OTHER_WITNESS)]
    assert {c.name for c in verify_cosignatures(opened, witnesses, required=2)} == {
        "witness.example/w1",
        "witness.example/w2",
    }


def test_append_cosignatures_skips_lines_already_there_and_refuses_non_lines() -> None:
    note = _checkpoint_note()
    line = cosign(open_note(note, LOG_KEYRING).text, WITNESS, TIME)
    once = append_cosignatures(note, [line])
    assert append_cosignatures(once, [line, line.rstrip("\n")]) == once
    for bad in ("", "witness AAAA", "\u2014 witness", "\u2014 a b c", "\u2014 a+b AAAA"):
        with pytest.raises(InvalidArgumentError):
            append_cosignatures(note, [bad])
    with pytest.raises(InvalidArgumentError):
        append_cosignatures(b"no signatures\n", [line])


# --- tampered variants: all must fail ---------------------------------------------------

TRUSTED = [witness_key_of(WITNESS)]


@pytest.mark.parametrize(
    "body",
    [
        BODY.replace(b"example.com/behind-the-sofa", b"example.com/behind-the-couch"),  # origin
        BODY.replace(b"20852163", b"20852164"),  # size
        BODY.replace(b"CsUY", b"DsUY"),  # root
        BODY + b"extension\n",  # an extension line added
        BODY[:-1] + b" \n",  # trailing space
    ],
    ids=["origin", "size", "root", "extension", "whitespace"],
)
def test_any_changed_body_line_is_a_forgery(body: bytes) -> None:
    with pytest.raises(CosignatureError, match="invalid cosignature"):
        verify_cosignatures(_note(body, EXPECTED_LINE), TRUSTED, required=1)


def test_a_signature_over_another_header_does_not_verify() -> None:
    # Signed "cosignature/v2": a witness key never vouches for other statements.
    payload = _payload(EXPECTED_LINE)
    other = EXPECTED_MESSAGE.replace(b"cosignature/v1", b"cosignature/v2")
    forged = _line("witness.example/w1", payload[:12] + WITNESS.sign(other))
    with pytest.raises(CosignatureError):
        verify_cosignatures(_note(BODY, forged), TRUSTED, required=1)
    # And a plain note signature (no header, no time) by the same key is not one either.
    plain = _line("witness.example/w1", payload[:12] + WITNESS.sign(BODY))
    with pytest.raises(CosignatureError):
        verify_cosignatures(_note(BODY, plain), TRUSTED, required=1)


@pytest.mark.parametrize("delta", [1, -1, 2**32])
def test_a_changed_time_is_a_forgery(delta: int) -> None:
    payload = _payload(EXPECTED_LINE)
    time_bytes = (TIME + delta).to_bytes(8, "big")
    forged = _line("witness.example/w1", payload[:4] + time_bytes + payload[12:])
    with pytest.raises(CosignatureError):
        verify_cosignatures(_note(BODY, forged), TRUSTED, required=1)


def test_a_time_above_2_63_is_refused() -> None:
    payload = _payload(EXPECTED_LINE)
    forged = _line("witness.example/w1", payload[:4] + (2**63).to_bytes(8, "big") + payload[12:])
    with pytest.raises(CosignatureError, match="2\\^63"):
        verify_cosignatures(_note(BODY, forged), TRUSTED, required=1)
    with pytest.raises(InvalidArgumentError):
        cosign(BODY, WITNESS, 2**63)
    with pytest.raises(InvalidArgumentError):
        cosign(BODY, WITNESS, -1)


def test_every_flipped_signature_bit_fails() -> None:
    payload = _payload(EXPECTED_LINE)
    for position in range(12, len(payload)):
        for bit in (0x01, 0x80):
            changed = bytearray(payload)
            changed[position] ^= bit
            forged = _line("witness.example/w1", bytes(changed))
            with pytest.raises(CosignatureError):
                verify_cosignatures(_note(BODY, forged), TRUSTED, required=1)


@pytest.mark.parametrize("length", [0, 1, 8, 8 + 63, 8 + 65])
def test_truncated_or_extended_cosignature_is_refused(length: int) -> None:
    payload = _payload(EXPECTED_LINE) + b"\x00"
    forged = _line("witness.example/w1", payload[: 4 + length])
    with pytest.raises(CosignatureError):
        verify_cosignatures(_note(BODY, forged), TRUSTED, required=1)


def test_wrong_key_id_or_name_is_not_this_witness_so_it_does_not_count() -> None:
    payload = _payload(EXPECTED_LINE)
    log_type_id = WITNESS.key_id.to_bytes(4, "big")  # the 0x01 id of the same key
    variants = [
        _line("witness.example/w1", log_type_id + payload[4:]),
        _line("witness.example/w1", (EXPECTED_KEY_ID ^ 1).to_bytes(4, "big") + payload[4:]),
        _line("witness.example/w2", payload),
    ]
    for line in variants:
        with pytest.raises(MissingCosignaturesError) as info:
            verify_cosignatures(_note(BODY, line), TRUSTED, required=1)
        assert info.value.found == ()
        assert verify_cosignatures(_note(BODY, line), TRUSTED, required=0) == []


def test_a_cosignature_of_another_checkpoint_is_a_forgery() -> None:
    other_body = b"example.com/behind-the-sofa\n20852164\n" + BODY.split(b"\n")[2] + b"\n"
    copied = cosign(other_body, WITNESS, TIME)
    with pytest.raises(CosignatureError):
        verify_cosignatures(_note(BODY, copied), TRUSTED, required=1)


def test_a_forged_line_fails_even_when_a_valid_one_is_there() -> None:
    forged = cosign(BODY + b"x\n", WITNESS, TIME)
    for lines in ((EXPECTED_LINE, forged), (forged, EXPECTED_LINE)):
        with pytest.raises(CosignatureError):
            verify_cosignatures(_note(BODY, *lines), TRUSTED, required=1)


def test_one_witness_twice_counts_once() -> None:
    again = cosign(BODY, WITNESS, TIME + 60)
    witnesses = [*TRUSTED, witness_key_of(OTHER_WITNESS)]
    assert len(verify_cosignatures(_note(BODY, EXPECTED_LINE, again), witnesses, 1)) == 1
    with pytest.raises(MissingCosignaturesError, match="1 of 2") as info:
        verify_cosignatures(_note(BODY, EXPECTED_LINE, again), witnesses, required=2)
    assert info.value.found == ("witness.example/w1",)
    assert isinstance(info.value, CheckpointError)


def test_future_timestamps_are_refused_when_asked() -> None:
    note = _note(BODY, EXPECTED_LINE)
    assert verify_cosignatures(note, TRUSTED, 1, latest_time=TIME)
    with pytest.raises(CosignatureError, match="after"):
        verify_cosignatures(note, TRUSTED, 1, latest_time=TIME - 1)


def test_impossible_policies_are_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        verify_cosignatures(_note(BODY, EXPECTED_LINE), TRUSTED, required=2)
    with pytest.raises(InvalidArgumentError):
        verify_cosignatures(_note(BODY, EXPECTED_LINE), TRUSTED, required=-1)
    impostor = WitnessKey("witness.example/w1", OTHER_WITNESS.verifier_key().public_key)
    assert impostor.key_id != EXPECTED_KEY_ID  # different key: different id, no ambiguity


# --- witness key strings ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "witness.example/w1+eb762cc2",  # no key
        "witness.example/w1+eb762cc3+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea",  # wrong id
        "witness.example/w1+eb762cc2+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea",  # type 0x01
        "witness.example/w1+eb762cc2+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1E",  # bad base64
        "witness.example/w1+eb762cc2+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Eb",  # non-canonical
        "+eb762cc2+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea",  # no name
    ],
)
def test_malformed_witness_keys_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        WitnessKey.parse(text)


def test_a_log_note_signature_is_no_cosignature() -> None:
    # A note signed by the witness key as an ordinary (0x01) key has no valid cosignature.
    signed = sign_note(BODY, WITNESS)
    opened = open_note(signed, make_keyring([WITNESS.verifier_key()]))
    with pytest.raises(MissingCosignaturesError):
        verify_cosignatures(opened, TRUSTED, required=1)


def test_cosignature_modules_import_no_io_adapter() -> None:
    probe = (
        "import sys, json, authtrail.stream.core.cosignature, authtrail.stream.core.witness_state; "
        "print(json.dumps(sorted(m for m in ('http', 'http.server', 'urllib.request', "
        "'socket', 'authtrail.keys', 'authtrail.witness') if m in sys.modules)))"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- a submitter's check of a witness's reply -------------------------------------------


def test_a_witness_reply_keeps_exactly_that_witness_s_valid_lines() -> None:
    other = cosign(BODY, OTHER_WITNESS, TIME)  # valid, but not the witness asked
    for reply in ([EXPECTED_LINE], [other, EXPECTED_LINE], [EXPECTED_LINE.rstrip("\n")]):
        assert check_witness_reply(BODY, reply, TRUSTED[0]) == [EXPECTED_LINE]


def test_a_tampered_or_foreign_witness_reply_is_refused() -> None:
    payload = _payload(EXPECTED_LINE)
    flipped = bytearray(payload)
    flipped[-1] ^= 0x01
    forged = [
        [_line("witness.example/w1", bytes(flipped))],  # a flipped signature bit
        [cosign(BODY + b"x\n", WITNESS, TIME)],  # a cosignature of another body
        [_line("witness.example/w1", payload[:4] + (TIME + 1).to_bytes(8, "big") + payload[12:])],
        [EXPECTED_LINE, _line("witness.example/w1", bytes(flipped))],  # one good, one forged
    ]
    for reply in forged:
        with pytest.raises(CosignatureError) as info:
            check_witness_reply(BODY, reply, TRUSTED[0])
        assert not isinstance(info.value, MissingCosignaturesError)
    for reply in ([], [cosign(BODY, OTHER_WITNESS, TIME)]):  # nothing by this witness
        with pytest.raises(MissingCosignaturesError):
            check_witness_reply(BODY, reply, TRUSTED[0])
    with pytest.raises(CheckpointError, match="malformed"):
        check_witness_reply(BODY, ["not a signature line"], TRUSTED[0])
