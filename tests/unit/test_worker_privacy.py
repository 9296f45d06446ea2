"""The worker's privacy hook: personal fields are sealed before the leaf, retries stay
duplicates, and no clear text reaches the chained topic (tests/unit/test_worker.py's
harness, a tenant with a privacy policy)."""

from __future__ import annotations

from stream.canonical import canonical_leaf, is_sealed
from stream.merkle import leaf_hash
from stream.note import Signer, generate_key_strings, make_keyring
from stream.retention import RetentionStatement, retention_event, sign_retention
from stream.shredding import PrivacyPolicies, PrivacyPolicy, Sealer, SubjectKey, open_value
from stream.worker import CHAINED, FORGED_RETENTION_KIND
from stream.worker import DEAD_LETTER as DEAD_LETTER_ROLE
from tests.unit.test_worker import EVENTS, SIGNER, Harness


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
    # The app passes the sealer to the constructor (stream/app.py); the shared harness
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


def _login(n: int) -> bytes:
    event = {"event_id": f"l{n}", "tenant_id": "acme", "event_type": "LOGIN",
             "outcome": "SUCCESS", "occurred_at": 1_700_000_000_000_000 + n}  # fmt: skip
    return EVENTS.encode(event)


def _retention(signer: Signer, origin: str = "authtrail.test/acme", note: bool = True) -> bytes:
    statement = RetentionStatement(origin, 256, bytes(32), bytes(32), 1_700_000_001_000_000)
    event = retention_event("acme", sign_retention(statement, signer), statement)
    if not note:
        event["attributes"] = {}
    return EVENTS.encode(event)


def test_only_retention_statements_a_trusted_key_signed_are_chained() -> None:
    other = Signer.parse(generate_key_strings("someone")[0])
    inputs = [_login(n) for n in range(256)] + [
        _retention(SIGNER), _retention(other), _retention(SIGNER, "authtrail.test/globex"),
        _retention(SIGNER, note=False),
    ]  # fmt: skip
    harness = Harness(inputs)
    harness.worker._retention = (make_keyring([SIGNER.verifier_key()]), "authtrail.test")
    harness.run(list(range(len(inputs))))
    chained = harness.decoded(CHAINED)
    assert len(chained) == 257 and chained[-1]["event"]["service"] == "authtrail-retention"
    dead = harness.decoded(DEAD_LETTER_ROLE)
    assert [letter["error_kind"] for letter in dead] == [FORGED_RETENTION_KIND] * 3
    assert "no signature by a trusted key" in dead[0]["reason"]
    assert "names log 'authtrail.test/globex', not 'authtrail.test/acme'" in dead[1]["reason"]
    # Before record 257, a statement pruning 256 records would prune itself.
    early = Harness([_retention(SIGNER)])
    early.worker._retention = (make_keyring([SIGNER.verifier_key()]), "authtrail.test")
    early.run([0])
    assert "includes itself" in early.decoded(DEAD_LETTER_ROLE)[0]["reason"]
