"""Sealing at the source (docs/PRIVACY.md): the producer SDK seals a tenant's policy
fields with the worker's own primitive and keys, and the worker accepts such a value only
when it opens under the subject's current key for a field the policy seals; every other
sealed-looking value is refused, alone, as ``invalid_event``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.privacy_keys import DirectoryKeyStore
from authtrail.producers.sdk import SourceSealing
from authtrail.producers.sdk.sealed_values import (
    SubjectKey,
    open_value,
    seal_value,
    sealed_key_id,
)
from authtrail.producers.sdk.sealing import (
    PrivacyPolicies,
    PrivacyPolicy,
    load_privacy_policies,
    string_fields,
)
from authtrail.sinks.tables import event_columns
from authtrail.stream.core.canonical import canonical_leaf, is_sealed
from authtrail.stream.core.merkle import leaf_hash
from authtrail.stream.worker.sequencing import CHAINED
from authtrail.stream.worker.sequencing import DEAD_LETTER as DEAD_LETTER_ROLE
from authtrail.stream.worker.shredding import Sealer
from tests.unit.test_shredding import KEY, SEALED
from tests.unit.test_worker import EVENTS, Harness
from tests.unit.test_worker_envelopes import _envelope

POLICIES = PrivacyPolicies(tenants={"acme": PrivacyPolicy(), "globex": PrivacyPolicy()})


class _OneKey:
    """Every subject has the known-answer key (a SubjectKeySource, as a KMS client)."""

    def key_for(self, tenant_id: str, subject: str) -> SubjectKey:
        return KEY


def _login(event_id: str = "ev-1", **fields: Any) -> dict[str, Any]:
    event = {"event_id": event_id, "tenant_id": "acme", "event_type": "LOGIN_FAILED",
             "outcome": "FAILURE", "occurred_at": 1_700_000_000_000_000,
             "user_id": "u1", "user_name": "alice@example.com", "client_ip": "192.0.2.7",
             "user_agent": "curl/8", "host": "h1", "attributes": {"k": "v"}}  # fmt: skip
    return event | fields


def test_the_producer_seals_to_the_known_answer_and_only_the_policy_fields() -> None:
    sealing = SourceSealing(POLICIES, _OneKey())
    event = _login()
    sealed = sealing.seal(event)
    assert sealed["user_name"] == SEALED  # tests/unit/test_shredding.py's known answer
    assert {field for field, value in sealed.items() if is_sealed(value)} == {
        "user_name", "client_ip", "user_agent",
    }  # fmt: skip
    assert sealed["host"] == "h1" and sealed["user_id"] == "u1"
    assert "pseudonym.user_name" not in sealed["attributes"]  # the worker's to add
    assert sealing.seal(event) == sealed  # a retry seals to the same bytes
    assert event["user_name"] == "alice@example.com"  # the caller's event is left alone
    other = _login(tenant_id="initech")  # no policy: sent as given
    assert sealing.seal(other) is other


def test_the_producer_refuses_input_that_already_looks_sealed() -> None:
    sealing = SourceSealing(POLICIES, _OneKey())
    with pytest.raises(InvalidArgumentError, match="'message'"):
        sealing.seal(_login(message=SEALED))
    with pytest.raises(InvalidArgumentError, match="tenant_id"):
        sealing.seal({"event_id": "e"})


@pytest.fixture
def store(tmp_path: Path) -> DirectoryKeyStore:
    return DirectoryKeyStore(tmp_path / "privacy")


@pytest.mark.parametrize(
    "fields",
    [
        {},  # user_id: the subject id:u1
        {"user_id": None},  # subject name:<user_name>, found only by opening user_name
        {"user_id": None, "user_name": None},  # unattributed
        {"client_ip": "198.51.100.1", "user_agent": ""},  # an empty value is sealed too
    ],
)
def test_the_worker_chains_a_producer_sealed_event_with_the_leaf_it_would_have_made(
    store: DirectoryKeyStore, fields: dict[str, Any]
) -> None:
    clear = _login(**fields)
    from_producer = SourceSealing(POLICIES, store).seal(clear)
    worker = Sealer(POLICIES, store)
    chained = worker.seal(dict(from_producer))
    assert chained == worker.seal(dict(clear))  # pseudonyms from the opened clear text
    assert canonical_leaf(chained) == canonical_leaf(worker.seal(dict(clear)))
    for field in ("user_name", "client_ip", "user_agent"):
        assert chained[field] == from_producer[field]  # kept byte for byte
    if clear["client_ip"] is not None:
        assert "pseudonym.client_ip" in chained["attributes"]


def test_mixed_input_some_fields_sealed_by_an_older_policy_the_rest_by_the_worker(
    store: DirectoryKeyStore,
) -> None:
    older = PrivacyPolicies(tenants={"acme": PrivacyPolicy(sealed=frozenset({"user_name"}))})
    clear = _login()
    partly = SourceSealing(older, store).seal(clear)
    assert is_sealed(partly["user_name"]) and partly["client_ip"] == "192.0.2.7"
    worker = Sealer(POLICIES, store)
    assert worker.seal(dict(partly)) == worker.seal(dict(clear))


def _tampered(store: DirectoryKeyStore) -> dict[str, dict[str, Any]]:
    """Every way a sealed-looking input value can be wrong, by name."""
    sealing = SourceSealing(POLICIES, store)
    good = sealing.seal(_login())
    bob = sealing.seal(_login(user_id="bob"))
    globex = sealing.seal(_login(tenant_id="globex"))
    other_event = sealing.seal(_login("ev-2"))
    value = good["client_ip"]
    flipped = value[:-6] + ("A" if value[-6] != "A" else "B") + value[-5:]
    key_id = sealed_key_id(value)
    no_policy = SourceSealing(PrivacyPolicies(default=PrivacyPolicy()), store).seal(
        _login(tenant_id="initech")
    )
    return {
        "another subject's key": good | {"client_ip": bob["client_ip"]},
        "another subject's key, every field": bob | {"user_id": "u1"},
        "another tenant's key": globex | {"tenant_id": "acme"},
        "moved to another field": good | {"user_agent": value},
        "moved from another event": good | {"client_ip": other_event["client_ip"]},
        "a flipped bit": good | {"client_ip": flipped},
        "garbage": good | {"client_ip": "authtrail-sealed-v1:garbage"},
        "bad base64": good | {"client_ip": f"authtrail-sealed-v1:{key_id}:!!!:AAAA"},
        "a key id nobody has": good | {"client_ip": value.replace(key_id, "ab" * 16)},
        "a field the policy does not seal": good | {"host": value},
        "a tenant without a policy": no_policy,
    }


TAMPERED = ["another subject's key", "another subject's key, every field",
            "another tenant's key", "moved to another field", "moved from another event",
            "a flipped bit", "garbage", "bad base64", "a key id nobody has",
            "a field the policy does not seal", "a tenant without a policy"]  # fmt: skip


def test_the_tampered_cases_are_all_named(store: DirectoryKeyStore) -> None:
    assert sorted(_tampered(store)) == sorted(TAMPERED)


@pytest.mark.parametrize("case", TAMPERED)
def test_every_tampered_producer_sealed_value_is_refused(
    store: DirectoryKeyStore, case: str
) -> None:
    event = _tampered(store)[case]
    with pytest.raises(InvalidArgumentError):
        Sealer(POLICIES, store).seal(dict(event))


def test_a_value_sealed_under_an_erased_key_is_refused_even_while_the_cache_holds_it(
    store: DirectoryKeyStore,
) -> None:
    worker = Sealer(POLICIES, store)
    stale = SourceSealing(POLICIES, store).seal(_login())
    worker.seal(dict(stale))  # the worker now caches u1's key
    store.erase("acme", "id:u1")
    with pytest.raises(InvalidArgumentError, match="an erasure destroyed"):
        worker.seal(dict(stale))
    fresh = SourceSealing(POLICIES, store).seal(_login())  # after erase: a new key
    assert sealed_key_id(fresh["client_ip"]) != sealed_key_id(stale["client_ip"])
    # The worker has not seen the erasure record yet (its cache names the old key): it
    # reads the subject's key again instead of refusing the producer's new one.
    assert worker.seal(dict(fresh))["client_ip"] == fresh["client_ip"]


def test_the_worker_rejects_a_bad_sealed_event_alone_with_its_offset_and_index(
    store: DirectoryKeyStore,
) -> None:
    sealing = SourceSealing(POLICIES, store)
    good = [sealing.seal(_login(f"e{n}")) for n in range(3)]
    bad = _tampered(store)["moved from another event"] | {"event_id": "bad"}
    clear = _login("plain")  # a producer that does not seal, in the same envelope
    inputs = [
        EVENTS.encode(good[0]),
        _envelope(EVENTS.encode(good[1]), EVENTS.encode(bad), EVENTS.encode(clear)),
        EVENTS.encode(good[2]),
    ]
    harness = Harness(inputs, sealer=Sealer(POLICIES, store))
    harness.run([0, 1, 2])
    chained = harness.decoded(CHAINED)
    assert [r["event"]["event_id"] for r in chained] == ["e0", "e1", "plain", "e2"]
    dead = harness.decoded(DEAD_LETTER_ROLE)
    assert [(d["error_kind"], d["source_offset"], d["source_index"]) for d in dead] == [
        ("invalid_event", 1, 1)
    ]
    assert "does not open" in dead[0]["reason"]
    reference = Sealer(POLICIES, store)
    for record, sent in zip(chained, [good[0], good[1], clear, good[2]], strict=True):
        event = record["event"]
        assert record["leaf_hash"] == leaf_hash(canonical_leaf(event))
        expected = reference.seal(dict(sent))
        assert {f: event[f] for f in expected} == expected  # the leaf the worker would make
        key = store.find("acme", sealed_key_id(event["user_name"]))
        assert key is not None
        assert open_value(key, "acme", event["event_id"], "user_name", event["user_name"]) == (
            "alice@example.com"
        )
    for role, _, value, _ in harness.published:
        if role == CHAINED:
            assert b"alice@example.com" not in value and b"192.0.2.7" not in value


def test_from_files_reads_the_worker_policy_file_and_key_store(tmp_path: Path) -> None:
    policy = tmp_path / "privacy.json"
    policy.write_text(json.dumps({"tenants": {"acme": {"sealed": ["user_name"]}}}))
    sealing = SourceSealing.from_files(tmp_path / "privacy", policy)
    sealed = sealing.seal(_login())
    assert is_sealed(sealed["user_name"]) and sealed["client_ip"] == "192.0.2.7"
    key = DirectoryKeyStore(tmp_path / "privacy").key_for("acme", "id:u1")
    assert sealed["user_name"] == seal_value(key, "acme", "ev-1", "user_name", "alice@example.com")
    policy.write_text(json.dumps({"tenants": {"acme": {"sealed": ["event_type"]}}}))
    with pytest.raises(ConfigurationError, match="must list string fields"):
        load_privacy_policies(policy)  # an enum cannot hold ciphertext


def test_policy_fields_are_the_schemas_string_fields() -> None:
    columns = {column.name for column in event_columns() if column.kind == "s"}
    assert set(string_fields()) == columns - {"event_type", "outcome"}  # enums as columns
