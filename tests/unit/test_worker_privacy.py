"""The worker's privacy hook: personal fields are sealed before the leaf, retries stay
duplicates, and no clear text reaches the chained topic (tests/unit/test_worker.py's
harness, a tenant with a privacy policy)."""

from __future__ import annotations

from authtrail.stream.core.canonical import canonical_leaf, is_sealed
from authtrail.stream.core.merkle import leaf_hash
from authtrail.stream.worker.sequencing import CHAINED
from authtrail.stream.worker.sequencing import DEAD_LETTER as DEAD_LETTER_ROLE
from authtrail.stream.worker.shredding import (
    PrivacyPolicies,
    PrivacyPolicy,
    Sealer,
    SubjectKey,
    open_value,
)
from tests.unit.test_worker import EVENTS, Harness


class _Keys:
    """One fixed key per subject, in memory (the SubjectKeys protocol)."""

    def key_for(self, tenant_id: str, subject: str) -> SubjectKey:
        return SubjectKey(f"{len(subject):032x}", subject.encode().ljust(32, b"\x00")[:32])

    def find(self, tenant_id: str, key_id: str) -> SubjectKey | None:
        return None

    def pseudonym_key(self, tenant_id: str) -> bytes:
        return bytes(32)


def _failure(event_id: str, user_name: str) -> bytes:
    return EVENTS.encode({
        "event_id": event_id, "tenant_id": "acme", "event_type": "LOGIN_FAILED",
        "outcome": "FAILURE", "occurred_at": 1_700_000_000_000_000, "user_name": user_name,
        "client_ip": "192.0.2.77",
    })  # fmt: skip


def _harness(inputs: list[bytes]) -> Harness:
    harness = Harness(inputs)
    # The app passes the sealer to the constructor (stream/worker/app.py); the shared harness
    # predates it, so it is set here.
    harness.worker._sealer = Sealer(PrivacyPolicies(default=PrivacyPolicy()), _Keys())
    return harness


def test_fields_are_sealed_before_the_leaf_and_retries_stay_duplicates() -> None:
    inputs = [_failure("e1", "alice"), _failure("e1", "alice"), _failure("e2", "alice")]
    harness = _harness(inputs)
    harness.run([0, 1, 2])
    chained = harness.decoded(CHAINED)
    assert [record["event"]["event_id"] for record in chained] == ["e1", "e2"]
    assert harness.worker.counters.duplicates == 1  # the retry sealed to the same bytes
    key = _Keys().key_for("acme", "name:alice")
    for record in chained:
        event = record["event"]
        assert is_sealed(event["user_name"]) and is_sealed(event["client_ip"])
        assert record["leaf_hash"] == leaf_hash(canonical_leaf(event))
        assert open_value(key, "acme", event["event_id"], "user_name", event["user_name"]) == (
            "alice"
        )
    for role, _, value, _ in harness.published:
        assert b"alice" not in value and b"192.0.2.77" not in value, role


def test_a_conflicting_resend_is_rejected_without_its_clear_text() -> None:
    harness = _harness([_failure("e1", "alice"), _failure("e1", "mallory")])
    harness.run([0, 1])
    dead = harness.decoded(DEAD_LETTER_ROLE)
    assert [letter["error_kind"] for letter in dead] == ["event_id_conflict"]
    assert b"mallory" not in dead[0]["original"]  # the sealed re-encoding is kept


def test_input_that_looks_sealed_is_rejected() -> None:
    forged = "authtrail-sealed-v1:" + "0" * 32 + ":AAAAAAAAAAAAAAAA:AAAA"
    harness = _harness([_failure("e1", forged), _failure("e2", "alice")])
    harness.run([0, 1])
    assert [record["event"]["event_id"] for record in harness.decoded(CHAINED)] == ["e2"]
    dead = harness.decoded(DEAD_LETTER_ROLE)
    assert [letter["error_kind"] for letter in dead] == ["invalid_event"]
    assert "only authtrail's own sealing may write" in dead[0]["reason"]
