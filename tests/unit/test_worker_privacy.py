"""The worker's privacy hook: personal fields are sealed before the leaf, retries stay
duplicates, and no clear text reaches the chained topic (tests/unit/test_worker.py's
harness, a tenant with a privacy policy)."""

from __future__ import annotations

from pathlib import Path

from authtrail.privacy_keys import DirectoryKeyStore
from authtrail.producers.sdk.sealed_values import SubjectKey, open_value, pseudonym, sealed_key_id
from authtrail.producers.sdk.sealing import PrivacyPolicies, PrivacyPolicy
from authtrail.stream.core.canonical import canonical_leaf, is_sealed
from authtrail.stream.core.merkle import leaf_hash
from authtrail.stream.core.note import Signer, generate_key_strings, make_keyring
from authtrail.stream.core.retention import RetentionStatement, retention_event, sign_retention
from authtrail.stream.worker.sequencing import CHAINED, FORGED_RETENTION_KIND
from authtrail.stream.worker.sequencing import DEAD_LETTER as DEAD_LETTER_ROLE
from authtrail.stream.worker.shredding import Sealer, erasure_event
from tests.unit.test_worker import EVENTS, SIGNER, Harness


class _Keys:
    """One fixed key per subject, in memory (the SubjectKeys protocol)."""

    def key_for(self, tenant_id: str, subject: str) -> SubjectKey:
        return SubjectKey(f"{len(subject):032x}", subject.encode().ljust(32, b"\x00")[:32])

    def find(self, tenant_id: str, key_id: str) -> SubjectKey | None:
        return None

    def pseudonym_key(self, tenant_id: str) -> bytes:
        return bytes(32)

    def destroyed(self, tenant_id: str, key_id: str, subject_pseudonym: str) -> bool:
        return False


def _failure(event_id: str, user_name: str) -> bytes:
    return EVENTS.encode({
        "event_id": event_id, "tenant_id": "acme", "event_type": "LOGIN_FAILED",
        "outcome": "FAILURE", "occurred_at": 1_700_000_000_000_000, "user_name": user_name,
        "client_ip": "192.0.2.77",
    })  # fmt: skip


def _harness(inputs: list[bytes]) -> Harness:
    return Harness(inputs, sealer=Sealer(PrivacyPolicies(default=PrivacyPolicy()), _Keys()))


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
    assert f"names key {'0' * 32}" in dead[0]["reason"]


# --- erasure records: chained only when the key store confirms the claim ------------------

BASE = 1_700_000_000_000_000


def _erasure(
    store: DirectoryKeyStore, key_ids: list[str], at: int, subject: str = "name:alice"
) -> bytes:
    subject_pseudonym = pseudonym(store.pseudonym_key("acme"), subject)
    return EVENTS.encode(erasure_event("acme", subject_pseudonym, key_ids, at))


def _stored_harness(store: DirectoryKeyStore, inputs: list[bytes]) -> Harness:
    harness = Harness(inputs, sealer=Sealer(PrivacyPolicies(default=PrivacyPolicy()), store))
    return harness


def _chained_ids(harness: Harness) -> list[str]:
    return [record["event"]["event_id"] for record in harness.decoded(CHAINED)]


def _rejected(harness: Harness) -> list[tuple[str, str, str]]:
    """(kind, tenant, reason) of each rejection chained into the rejection log."""
    return [(chained["rejection"]["error_kind"], chained["rejection"]["tenant_id"] or "",
             chained["rejection"]["reason"]) for chained in harness.rejections()]  # fmt: skip


def test_an_erasure_is_chained_only_after_the_key_store_destroyed_the_keys(
    tmp_path: Path,
) -> None:
    store = DirectoryKeyStore(tmp_path)
    harness = _stored_harness(store, [_failure("e1", "alice")])
    harness.run([0])
    (first,) = harness.decoded(CHAINED)
    key_id = sealed_key_id(first["event"]["user_name"])

    # A plain producer claims alice's key was destroyed: it was not (live), and another
    # record names a key id the store never had. Both go to the rejection log.
    forged, unknown = _erasure(store, [key_id], BASE), _erasure(store, ["0" * 32], BASE + 1)
    harness.inputs += [forged, unknown, _failure("e2", "alice")]
    harness.run([1, 2, 3])  # offsets 1-3
    assert _chained_ids(harness) == ["e1", "e2"]
    rejected = _rejected(harness)
    assert [(kind, tenant) for kind, tenant, _ in rejected] == [("reserved_identity", "acme")] * 2
    assert key_id in rejected[0][2] and "0" * 32 in rejected[1][2]
    assert all("has not destroyed" in reason for _, _, reason in rejected)
    assert {chained["chain_tenant_id"] for chained in harness.rejections()} == {
        "authtrail-rejected-2"
    }
    # The forgery did not make the sealer drop alice's key: e2 is sealed under it.
    assert sealed_key_id(harness.decoded(CHAINED)[1]["event"]["user_name"]) == key_id

    # The real erasure: the key is destroyed first, then the record is sent (twice: erase
    # is idempotent and re-sends the same record, which stays a duplicate).
    erased = store.erase("acme", "name:alice")
    assert erased.destroyed == (key_id,)
    genuine = _erasure(store, [key_id], erased.erased_at)
    # The key is destroyed now, but a record naming another subject for it is still false.
    mislabelled = _erasure(store, [key_id], erased.erased_at, subject="name:bob")
    harness.inputs += [genuine, genuine, mislabelled, _failure("e3", "alice")]
    harness.run([4, 5, 6, 7])
    chained = harness.decoded(CHAINED)
    assert [record["event"]["service"] for record in chained[2:]] == [
        "authtrail-privacy", None
    ]  # fmt: skip
    assert harness.worker.counters.duplicates == 1 and len(_rejected(harness)) == 3
    assert "has not destroyed" in _rejected(harness)[2][2]
    assert sealed_key_id(chained[3]["event"]["user_name"]) != key_id  # a new key after it


def test_a_chained_erasure_replayed_after_the_store_forgot_it_stays_a_duplicate(
    tmp_path: Path,
) -> None:
    store = DirectoryKeyStore(tmp_path)
    harness = _stored_harness(store, [_failure("e1", "alice")])
    harness.run([0])
    key_id = sealed_key_id(harness.decoded(CHAINED)[0]["event"]["user_name"])
    saved = (tmp_path / "acme" / "keys" / key_id).read_text()
    genuine = _erasure(store, [key_id], store.erase("acme", "name:alice").erased_at)
    harness.inputs += [genuine]
    harness.run([1])
    # A backup of the key store brought the key back (docs/PRIVACY.md): the store no longer
    # confirms the erasure, but the record already chained is only re-sent.
    (tmp_path / "acme" / "keys" / key_id).write_text(saved)
    assert not store.destroyed("acme", key_id, pseudonym(store.pseudonym_key("acme"), "name:alice"))
    harness.inputs += [genuine]
    harness.run([2])
    assert len(harness.decoded(CHAINED)) == 2 and harness.worker.counters.duplicates == 1
    assert _rejected(harness) == []


def test_a_worker_without_a_key_store_rejects_every_erasure_record(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path)
    key = store.key_for("acme", "name:alice")
    genuine = _erasure(store, [key.key_id], store.erase("acme", "name:alice").erased_at)
    harness = Harness([genuine])  # no sealer: no key store to check the claim against
    harness.run([0])
    assert harness.decoded(CHAINED) == []
    ((kind, tenant, reason),) = _rejected(harness)
    assert (kind, tenant) == ("reserved_identity", "acme") and "no privacy key store" in reason


def test_a_tenant_id_no_key_store_can_hold_is_rejected_not_a_crash(tmp_path: Path) -> None:
    """A foreign producer's tenant id outside the pattern (the SDK refuses it) is rejected
    at admission, before the sealer asks the key store for a directory of that name: the
    worker used to exit on it and meet the same event again after each restart."""
    store = DirectoryKeyStore(tmp_path / "privacy")
    tenants = ["acme corp", "../acme", "acme/x", "-acme", "a" * 129]
    bad = [
        EVENTS.decode(_failure(f"e{n}", "alice")) | {"tenant_id": tenant}
        for n, tenant in enumerate(tenants)
    ]
    harness = _stored_harness(store, [EVENTS.encode(e) for e in bad] + [_failure("ok", "bob")])
    harness.run(list(range(len(bad) + 1)))
    assert _chained_ids(harness) == ["ok"]
    assert [(kind, tenant) for kind, tenant, _ in _rejected(harness)] == [
        ("invalid_event", event["tenant_id"]) for event in bad
    ]
    assert sorted(p.name for p in (tmp_path / "privacy").iterdir()) == ["acme"]


def _login(n: int) -> bytes:
    event = {"event_id": f"l{n}", "tenant_id": "acme", "event_type": "LOGIN",
             "outcome": "SUCCESS", "occurred_at": 1_700_000_000_000_000 + n}  # fmt: skip
    return EVENTS.encode(event)


def _retention(
    signer: Signer, origin: str = "authtrail.test/acme", note: bool = True,
    tenant_id: str = "acme",
) -> bytes:  # fmt: skip
    statement = RetentionStatement(origin, 256, bytes(32), bytes(32), 1_700_000_001_000_000)
    event = retention_event(tenant_id, sign_retention(statement, signer), statement)
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


def test_a_rejection_logs_retention_statement_is_chained_into_the_log() -> None:
    """No input event may join a rejection log, but a statement pruning one must: the
    worker checks it as strictly as a tenant's and chains it as the log's own record
    (docs/INTEGRITY.md §14.4); anything else claiming the log is refused."""
    other = Signer.parse(generate_key_strings("someone")[0])
    log = "authtrail-rejected-2"  # the harness's input partition is 2
    inputs = [b"not an event %d" % n for n in range(256)] + [
        _retention(SIGNER, f"authtrail.test/{log}", tenant_id=log),
        _retention(other, f"authtrail.test/{log}", tenant_id=log),
        _retention(SIGNER, "authtrail.test/authtrail-rejected-1",
                   tenant_id="authtrail-rejected-1"),
    ]  # fmt: skip
    harness = Harness(inputs)
    harness.worker._retention = (make_keyring([SIGNER.verifier_key()]), "authtrail.test")
    harness.run(list(range(len(inputs))))
    chained = [record["rejection"] for record in harness.rejections()]
    assert [rejection["error_kind"] for rejection in chained[255:]] == [
        "undecodable", "retention", FORGED_RETENTION_KIND, "reserved_identity",
    ]  # fmt: skip
    statement = chained[256]
    assert (statement["tenant_id"], statement["original"]) == (log, b"")
    assert statement["reason"].startswith(f"authtrail.test/{log}\nauthtrail-retention-v1\n256\n")
    assert statement["source_offset"] == 256
    dead = harness.decoded(DEAD_LETTER_ROLE)
    assert len(dead) == 256 + 2  # the statement is no dead letter
    assert "no signature by a trusted key" in dead[256]["reason"]
    # A worker that trusts no key cannot check one: refused, never chained as a statement.
    untrusting = Harness(inputs[:257])
    untrusting.run(list(range(257)))
    kinds = [record["rejection"]["error_kind"] for record in untrusting.rejections()]
    assert kinds[256] == FORGED_RETENTION_KIND
