"""authtrail.stream.core.rotation: keyring lines, retirement marks and the key succession rules.

Known answers written out by hand, then every way a rotation can be broken or faked.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from authtrail.errors import ConfigurationError, SignatureError
from authtrail.stream.core.note import Signer, VerifierKey, make_keyring
from authtrail.stream.core.rotation import (
    MISSING_HANDOVER,
    RETIRED_KEY,
    KeySuccession,
    KeySuccessionError,
    RetiredKeyError,
    SignedRange,
    check_retirement,
    format_time,
    keyring_line,
    parse_keyring_line,
    parse_time,
)

OLD = Signer("authtrail", bytes(range(32)))
NEW = Signer("authtrail-2", bytes(range(1, 33)))
A, B = OLD.verifier_key().label, NEW.verifier_key().label
BILLION_SECONDS = 1_000_000_000 * 1_000_000  # 2001-09-09T01:46:40Z in microseconds


# --- times and keyring lines --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2001-09-09T01:46:40Z", BILLION_SECONDS),
        ("2001-09-09T01:46:40.5Z", BILLION_SECONDS + 500_000),
        ("2001-09-09T01:46:40.000001Z", BILLION_SECONDS + 1),
        ("2024-02-29T12:00:00Z", 1_709_208_000 * 1_000_000),
    ],
)
def test_time_known_answers(text: str, micros: int) -> None:
    assert parse_time(text) == micros
    assert parse_time(format_time(micros)) == micros


def test_format_time_is_canonical() -> None:
    assert format_time(BILLION_SECONDS) == "2001-09-09T01:46:40Z"
    assert format_time(BILLION_SECONDS + 500_000) == "2001-09-09T01:46:40.5Z"


@pytest.mark.parametrize(
    "text",
    [
        "2001-09-09 01:46:40Z",  # space instead of T
        "2001-09-09T01:46:40",  # no zone
        "2001-09-09T01:46:40+00:00",  # offsets are not accepted: UTC only
        "2001-09-09T01:46:40.1234567Z",  # more than microseconds
        "2001-02-30T00:00:00Z",  # no such day
        "2001-9-09T01:46:40Z",
        "",
    ],
)
def test_malformed_times_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_time(text)


def test_keyring_lines_round_trip() -> None:
    plain = OLD.verifier_key().key_string()
    assert parse_keyring_line(plain) == OLD.verifier_key()
    assert parse_keyring_line(plain).retired_micros is None
    marked = parse_keyring_line(f"{plain} retired 2001-09-09T01:46:40Z")
    assert marked.retired_micros == BILLION_SECONDS
    assert marked.public_key == OLD.verifier_key().public_key and marked.label == A
    assert keyring_line(marked) == f"{plain} retired 2001-09-09T01:46:40Z"
    assert parse_keyring_line(keyring_line(marked)) == marked


@pytest.mark.parametrize(
    "suffix",
    ["retired", "retired 2001-09-09", "expires 2001-09-09T01:46:40Z", "retired a b", "#"],
)
def test_keyring_line_annotations_other_than_retired_time_are_refused(suffix: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_keyring_line(f"{OLD.verifier_key().key_string()} {suffix}")


def test_make_keyring_keeps_the_earliest_retirement() -> None:
    plain = OLD.verifier_key()
    early, late = replace(plain, retired_micros=5), replace(plain, retired_micros=9)
    for order in ([plain, late, early], [early, plain], [late, early, plain]):
        keyring = make_keyring(order)
        assert list(keyring.values()) == [early]
    assert make_keyring([plain, plain])[plain.name, plain.key_id].retired_micros is None


# --- retirement by time ------------------------------------------------------------------


def test_a_key_may_sign_alone_until_its_retirement_time() -> None:
    retired = replace(OLD.verifier_key(), retired_micros=1000)
    check_retirement(999, [retired])  # stamped before: an old checkpoint, fine
    with pytest.raises(RetiredKeyError, match="retired keys: authtrail\\+"):
        check_retirement(1000, [retired])  # at the mark: no longer
    with pytest.raises(RetiredKeyError):
        check_retirement(5000, [retired])
    check_retirement(5000, [retired, NEW.verifier_key()])  # a hand-over: the new key signs
    assert issubclass(RetiredKeyError, SignatureError)


def test_two_retired_signers_are_still_retired() -> None:
    both = [
        replace(OLD.verifier_key(), retired_micros=10),
        replace(NEW.verifier_key(), retired_micros=20),
    ]
    check_retirement(19, both)
    with pytest.raises(RetiredKeyError):
        check_retirement(20, both)


# --- succession ---------------------------------------------------------------------------


def _follow(*steps: tuple[int, int, set[str]]) -> KeySuccession:
    succession = KeySuccession()
    for first_seq, size, signers in steps:
        succession.add(first_seq, size, signers)
    return succession


def _refused(*steps: tuple[int, int, set[str]]) -> KeySuccessionError:
    with pytest.raises(KeySuccessionError) as caught:
        _follow(*steps)
    return caught.value


def test_a_rotation_gives_three_ranges() -> None:
    succession = _follow(
        (1, 10, {A}), (11, 20, {A}), (21, 25, {A, B}), (26, 30, {B}), (31, 40, {B})
    )
    assert succession.ranges() == (
        SignedRange(1, 20, (A,), 2),
        SignedRange(21, 25, (A, B), 1, hand_over=True),
        SignedRange(26, 40, (B,), 2),
    )
    assert succession.ranges()[1].describe() == f"{A} & {B} (seq 21-25, hand-over)"
    assert succession.ranges()[1].report() == {
        "first_seq": 21, "last_seq": 25, "signed_by": [A, B], "checkpoints": 1,
        "hand_over": True,
    }  # fmt: skip


def test_one_key_and_permanent_dual_signing_are_no_rotation() -> None:
    assert _follow((1, 5, {A}), (6, 9, {A})).ranges() == (SignedRange(1, 9, (A,), 2),)
    dual = _follow((1, 5, {A, B}), (6, 9, {A, B}))
    assert dual.ranges() == (SignedRange(1, 9, (A, B), 2),)
    # A tenant created after the rotation starts with the new key, no hand-over needed.
    assert _follow((1, 5, {B})).ranges() == (SignedRange(1, 5, (B,), 1),)


def test_the_old_key_may_co_sign_more_than_the_hand_over() -> None:
    ranges = _follow((1, 5, {A}), (6, 9, {A, B}), (10, 12, {A, B}), (13, 14, {B})).ranges()
    assert [(r.first_seq, r.last_seq, r.hand_over) for r in ranges] == [
        (1, 5, False), (6, 12, True), (13, 14, False),
    ]  # fmt: skip


def test_new_key_before_any_hand_over_is_missing_hand_over() -> None:
    error = _refused((1, 5, {A}), (6, 9, {B}))
    assert error.damage == MISSING_HANDOVER
    assert A in error.detail and B in error.detail


def test_hand_over_stripped_of_the_old_signature_is_missing_hand_over() -> None:
    assert _refused((1, 5, {A}), (6, 9, {B}), (10, 12, {B})).damage == MISSING_HANDOVER


def test_hand_over_stripped_of_the_new_signature_fails_at_the_next_checkpoint() -> None:
    succession = _follow((1, 5, {A}), (6, 9, {A}))
    with pytest.raises(KeySuccessionError) as caught:
        succession.add(10, 12, {B})
    assert caught.value.damage == MISSING_HANDOVER


def test_old_key_alone_after_the_hand_over_is_retired_key() -> None:
    error = _refused((1, 5, {A}), (6, 9, {A, B}), (10, 12, {A}))
    assert error.damage == RETIRED_KEY
    assert "handed this log over to" in error.detail and "seq 9" in error.detail


def test_old_key_after_the_new_one_signed_alone_is_retired_key() -> None:
    assert _refused((1, 5, {A}), (6, 9, {A, B}), (10, 12, {B}), (13, 14, {A})).damage == (
        RETIRED_KEY
    )
    # Co-signing again after it had stopped: a key never returns to a log.
    assert _refused((1, 5, {A}), (6, 9, {A, B}), (10, 12, {B}), (13, 14, {A, B})).damage == (
        RETIRED_KEY
    )


def test_a_dropped_dual_signer_may_not_return() -> None:
    assert _refused((1, 5, {A, B}), (6, 9, {A}), (10, 12, {A, B})).damage == RETIRED_KEY


def test_a_third_key_hands_over_the_same_way() -> None:
    c = "authtrail-3+00000000"
    ranges = _follow(
        (1, 5, {A}), (6, 9, {A, B}), (10, 12, {B}), (13, 14, {B, c}), (15, 16, {c})
    ).ranges()
    assert [r.signed_by for r in ranges] == [(A,), (A, B), (B,), (B, c), (c,)]
    assert _refused((1, 5, {A}), (6, 9, {A, B}), (10, 12, {B}), (13, 14, {c})).damage == (
        MISSING_HANDOVER
    )
    # B alone after B handed over to c: retired.
    assert _refused((1, 5, {B}), (6, 9, {B, c}), (10, 12, {B})).damage == RETIRED_KEY


def test_key_labels_are_the_c2sp_key_ids() -> None:
    """The label's hex is the first 4 bytes of SHA-256(name || 0x0A || 0x01 || key)."""
    key: VerifierKey = OLD.verifier_key()
    digest = hashlib.sha256(b"authtrail\n\x01" + key.public_key).digest()
    assert f"authtrail+{digest[:4].hex()}" == A
