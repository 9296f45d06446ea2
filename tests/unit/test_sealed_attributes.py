"""Sealed attributes (docs/PRIVACY.md): ``attributes`` values a policy names are sealed
like fields, bound to ``attributes.<key>``; the leaf is unchanged (a string in the map);
every misplaced or foreign sealed value is refused; an sshd line's user and address are
unreadable everywhere the worker writes once the subject is erased."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.privacy import reveal_table
from authtrail.privacy_keys import DirectoryKeyStore
from authtrail.producers.sdk import SourceSealing
from authtrail.producers.sdk.sealed_values import (
    SubjectKey,
    associated_data,
    open_value,
    seal_value,
    sealed_key_id,
)
from authtrail.producers.sdk.sealing import (
    DEFAULT_SEALED,
    DEFAULT_SEALED_ATTRIBUTES,
    PrivacyPolicies,
    PrivacyPolicy,
    string_fields,
)
from authtrail.producers.sshd import iter_events
from authtrail.stream.core.canonical import MAGIC, MAGIC_V2, canonical_leaf, is_sealed
from authtrail.stream.core.handover import handover_event
from authtrail.stream.core.merkle import leaf_hash
from authtrail.stream.core.retention import NOTE_ATTRIBUTE, RetentionStatement, retention_event
from authtrail.stream.detection.decisions import ACCOUNT_LOCKED, Decision, decision_to_event
from authtrail.stream.worker.sequencing import CHAINED
from authtrail.stream.worker.sequencing import DEAD_LETTER as DEAD_LETTER_ROLE
from authtrail.stream.worker.shredding import ERASED, Sealer, erasure_event
from tests.unit.test_shredding import KEY
from tests.unit.test_worker import EVENTS, Harness

RAW = "Failed password for bob from 198.51.100.9 port 22 ssh2"
SEALED_RAW = (
    "authtrail-sealed-v1:00112233445566778899aabbccddeeff:4vsgUc4bRrx92Ne/:"
    "MFQDnCLeZgESvBHyvRUkoA80szjNiRDwJUn5sIzqIRISf09R517Mr0IIHEoINSI1MRcR9gKEm08YGP3hzamKW4W"
    "krcVUoA=="
)
POLICIES = PrivacyPolicies(tenants={"acme": PrivacyPolicy(), "globex": PrivacyPolicy()})


def test_attribute_known_answer_matches_an_independent_aes_gcm_siv() -> None:
    ad = b"".join(
        [
            b"authtrail-sealed-v1\n",
            b"\x00\x00\x00\x04acme",
            b"\x00\x00\x00\x04ev-1",
            b"\x00\x00\x00\x0eattributes.raw",
            b"\x00\x00\x00\x20",
            KEY.key_id.encode(),
        ]
    )
    assert associated_data("acme", "ev-1", "attributes.raw", KEY.key_id) == ad
    nonce = hashlib.sha256(ad).digest()[:12]
    body = AESGCMSIV(KEY.key).encrypt(nonce, RAW.encode(), ad)
    expected = (f"authtrail-sealed-v1:{KEY.key_id}:{base64.b64encode(nonce).decode()}:"
                f"{base64.b64encode(body).decode()}")  # fmt: skip
    assert seal_value(KEY, "acme", "ev-1", "attributes.raw", RAW) == expected == SEALED_RAW
    # A key outside ASCII is framed as its UTF-8 bytes.
    assert (
        associated_data("acme", "ev-1", "attributes.é", KEY.key_id).count(
            b"\x00\x00\x00\x0dattributes.\xc3\xa9"
        )
        == 1
    )


def test_a_sealed_attribute_is_a_plain_map_string_in_the_leaf() -> None:
    event = {"tenant_id": "acme", "occurred_at": 5, "attributes": {"raw": SEALED_RAW}}
    raw = SEALED_RAW.encode()
    assert canonical_leaf(event) == (
        MAGIC
        + b"\x00\x00\x00\x0aattributes" + b"m" + b"\x00\x00\x00\x01"
        + b"\x00\x00\x00\x03raw" + len(raw).to_bytes(4, "big") + raw
        + b"\x00\x00\x00\x0boccurred_at" + b"i" + b"\x00\x00\x00\x015"
        + b"\x00\x00\x00\x09tenant_id" + b"s" + b"\x00\x00\x00\x04acme"
    )  # fmt: skip
    # Beside a sealed field the leaf is v2, and the map entry still has no type byte of its own.
    leaf = canonical_leaf({**event, "user_name": SEALED_RAW})
    assert leaf.startswith(MAGIC_V2) and len(raw).to_bytes(4, "big") + raw in leaf


@pytest.mark.parametrize(
    ("key", "sealed"),
    [
        ("raw", True), ("rhost", True), ("program", False), ("raw.x", False),
        ("request.ipChain.0.ip", True), ("request.ipChain.12.geographicalContext.city", True),
        ("request.ipChain", False), ("target.1.alternateId", True), ("target.1.id", False),
        ("details.updated_email", True), ("detail.data.details.prompts.0.user_name", True),
        ("pseudonym.user_name", False),  # the worker's own pseudonyms, whatever matches
    ],
)  # fmt: skip
def test_default_attribute_patterns(key: str, sealed: bool) -> None:
    assert PrivacyPolicy().seals_attribute(key) is sealed


def test_policy_file_names_attribute_keys_and_patterns() -> None:
    parsed = PrivacyPolicies.parse(
        {"tenants": {"acme": {}, "globex": {"sealed_attributes": ["a.*.b", "exact"]},
                     "initech": {"sealed_attributes": []}}},
        string_fields(),
    )  # fmt: skip
    assert parsed.for_tenant("acme") == PrivacyPolicy()
    assert PrivacyPolicy().sealed_attributes == frozenset(DEFAULT_SEALED_ATTRIBUTES)
    globex = parsed.for_tenant("globex")
    assert globex is not None and globex.sealed == frozenset(DEFAULT_SEALED)
    assert globex.seals_attribute("a.0.b") and globex.seals_attribute("exact")
    assert not globex.seals_attribute("raw") and not globex.seals_attribute("exactly")
    initech = parsed.for_tenant("initech")
    assert initech is not None and not initech.seals_attribute("raw")
    for bad in ("raw", ["raw", ""], [1]):
        with pytest.raises(ConfigurationError, match="sealed_attributes"):
            PrivacyPolicies.parse({"default": {"sealed_attributes": bad}}, string_fields())


class _OneKey:
    def key_for(self, tenant_id: str, subject: str) -> SubjectKey:
        return KEY


class _Keys:
    """Keys per subject in memory (SubjectKeys), the known-answer key for name:bob."""

    def __init__(self) -> None:
        self.keys = {("acme", "name:bob"): KEY, ("globex", "name:bob"): KEY}

    def key_for(self, tenant_id: str, subject: str) -> SubjectKey:
        if (tenant_id, subject) not in self.keys:
            number = len(self.keys) + 1
            self.keys[tenant_id, subject] = SubjectKey(f"{number:032x}", bytes([number]) * 32)
        return self.keys[tenant_id, subject]

    def find(self, tenant_id: str, key_id: str) -> SubjectKey | None:
        return next((key for (t, _), key in self.keys.items()
                     if t == tenant_id and key.key_id == key_id), None)  # fmt: skip

    def pseudonym_key(self, tenant_id: str) -> bytes:
        return bytes(32)

    def destroyed(self, tenant_id: str, key_id: str, subject_pseudonym: str) -> bool:
        return False


def _failure(event_id: str = "ev-1", **attributes: str) -> dict[str, Any]:
    return {"event_id": event_id, "tenant_id": "acme", "event_type": "LOGIN_FAILED",
            "outcome": "FAILURE", "occurred_at": 1_700_000_000_000_000, "user_name": "bob",
            "client_ip": "198.51.100.9",
            "attributes": {"raw": RAW, "rhost": "198.51.100.9", "program": "sshd",
                           **attributes}}  # fmt: skip


def test_producer_and_worker_seal_attributes_to_the_same_bytes() -> None:
    from_producer = SourceSealing(POLICIES, _OneKey()).seal(_failure())
    assert from_producer["attributes"]["raw"] == SEALED_RAW
    assert is_sealed(from_producer["attributes"]["rhost"])
    assert from_producer["attributes"]["program"] == "sshd"  # not in the policy
    keys = _Keys()
    from_worker = Sealer(POLICIES, keys).seal(_failure())
    assert from_worker["attributes"]["raw"] == SEALED_RAW
    # The worker accepts the producer's values unchanged and adds only the pseudonyms.
    accepted = Sealer(POLICIES, keys).seal(dict(from_producer))
    assert accepted == from_worker
    assert leaf_hash(canonical_leaf(accepted)) == leaf_hash(canonical_leaf(from_worker))
    opened = open_value(KEY, "acme", "ev-1", "attributes.rhost", accepted["attributes"]["rhost"])
    assert opened == "198.51.100.9"
    with pytest.raises(InvalidArgumentError, match=r"'attributes\.raw' starts with"):
        SourceSealing(POLICIES, _OneKey()).seal(_failure(raw=SEALED_RAW))  # clear input only


def _refusal(event: dict[str, Any], keys: _Keys, tenant_has_policy: bool = True) -> str:
    policies = POLICIES if tenant_has_policy else PrivacyPolicies()
    with pytest.raises(InvalidArgumentError) as refused:
        Sealer(policies, keys).seal(event)
    return str(refused.value)


def test_every_misplaced_or_foreign_sealed_attribute_is_refused() -> None:
    keys = _Keys()
    rhost_sealed = seal_value(KEY, "acme", "ev-1", "attributes.rhost", "198.51.100.9")
    other_subject = keys.key_for("acme", "name:mallory")
    pseudonym_sealed = seal_value(KEY, "acme", "ev-1", "attributes.pseudonym.user_name", "x")
    variants = {
        "moved to another key": _failure(raw=rhost_sealed),
        "moved to a field": {**_failure(), "user_name": SEALED_RAW},
        "moved from another event": _failure("ev-2", raw=SEALED_RAW),
        "moved from another tenant": {**_failure(raw=SEALED_RAW), "tenant_id": "globex"},
        "a field moved into it": _failure(raw=seal_value(KEY, "acme", "ev-1", "user_name", RAW)),
        "another subject's key": _failure(
            raw=seal_value(other_subject, "acme", "ev-1", "attributes.raw", RAW)
        ),
        "garbage": _failure(raw="authtrail-sealed-v1:garbage"),
        "a flipped byte": _failure(raw=SEALED_RAW[:-6] + "AAAA=="),
        "an attribute the policy does not seal": _failure(
            program=seal_value(KEY, "acme", "ev-1", "attributes.program", "sshd")
        ),
        "a pseudonym attribute": _failure(**{"pseudonym.user_name": pseudonym_sealed}),
    }
    reasons = {name: _refusal(event, keys) for name, event in variants.items()}
    moved = ("moved to another key", "moved to a field", "moved from another event",
             "moved from another tenant", "a field moved into it", "a flipped byte")  # fmt: skip
    for name in moved:
        assert "does not open" in reasons[name], (name, reasons[name])
    assert "not its subject's current key" in reasons["another subject's key"]
    assert "not a sealed value" in reasons["garbage"]
    assert "'attributes.program'" in reasons["an attribute the policy does not seal"]
    assert "does not seal it" in reasons["a pseudonym attribute"]
    assert "does not seal it" in _refusal(_failure(raw=SEALED_RAW), keys, tenant_has_policy=False)


# --- the worker on sshd events: after erasure neither the user nor the address is readable


LINES = [
    "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user bob from 198.51.100.9",
    "Dec 10 06:55:48 LabSZ sshd[24200]: pam_unix(sshd:auth): authentication failure; "
    "logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.9  user=bob",
    "Dec 10 06:55:48 LabSZ sshd[24200]: Failed password for invalid user bob from "
    "198.51.100.9 port 22 ssh2",
    "Dec 10 06:55:50 LabSZ sshd[24202]: Accepted password for bob from 198.51.100.9 port "
    "51234 ssh2",
]
# The sshd adapter repeats the syslog message in the `message` field: a tenant that
# ingests auth logs seals it too (docs/PRIVACY.md, "Sealed attributes").
AUTH_LOG_POLICY = PrivacyPolicy()  # the default: message is sealed too (sshd repeats the line)


# "bob" as a word: sealed values, notes and hashes hold base64 and random bytes, which
# spell a short name by chance (in about one run of a hundred), but not one standing alone.
_BOB = re.compile(rb"(?<![A-Za-z0-9+/=])bob(?![A-Za-z0-9+/=])")


def test_erased_sshd_subject_is_unreadable_in_everything_the_worker_wrote(
    tmp_path: Path,
) -> None:
    events = list(iter_events(LINES, tenant_id="acme", year=2016, tz=UTC))
    assert len(events) == 4 and all(event["user_name"] == "bob" for event in events)
    assert all("bob" in event["attributes"]["raw"] for event in events)
    store = DirectoryKeyStore(tmp_path)
    # Half the events are sealed by a producer at the source, half by the worker.
    sealing = SourceSealing(PrivacyPolicies(default=AUTH_LOG_POLICY), store)
    inputs = [dict(sealing.seal(event)) if n % 2 else event for n, event in enumerate(events)]
    harness = Harness(
        [EVENTS.encode(event) for event in inputs],
        sealer=Sealer(PrivacyPolicies(default=AUTH_LOG_POLICY), store),
    )
    harness.run(list(range(len(inputs))))
    chained = [record["event"] for record in harness.decoded(CHAINED)]
    assert len(chained) == 4 and harness.decoded(DEAD_LETTER_ROLE) == []
    assert {sealed_key_id(event["attributes"]["raw"]) for event in chained} == {
        store.key_for("acme", "name:bob").key_id
    }
    assert is_sealed(chained[1]["attributes"]["rhost"])
    for role, _, value, _ in harness.published:  # chained records, lockout inputs, …
        assert not _BOB.search(value) and b"198.51.100.9" not in value, role

    table = pa.table({
        "tenant_id": [event["tenant_id"] for event in chained],
        "event_id": [event["event_id"] for event in chained],
        "message": [event["message"] for event in chained],
        "attributes": pa.array([list(event["attributes"].items()) for event in chained],
                               type=pa.map_(pa.string(), pa.string())),
    })  # fmt: skip
    before = reveal_table(table, store).to_pylist()
    assert [dict(row["attributes"])["raw"] for row in before] == [
        event["attributes"]["raw"] for event in events
    ]
    assert dict(before[1]["attributes"])["rhost"] == "198.51.100.9"

    store.erase("acme", "name:bob")
    after = reveal_table(table, store).to_pylist()
    text = repr(after).encode()
    assert not _BOB.search(text) and b"198.51.100.9" not in text
    assert {row["message"] for row in after} == {ERASED}
    assert {dict(row["attributes"])["raw"] for row in after} == {ERASED}
    assert dict(after[0]["attributes"])["program"] == "sshd"  # not personal: clear


def test_the_workers_own_records_keep_their_leaf_whatever_the_policy_names() -> None:
    """A policy that seals every attribute and ``message`` leaves alone what admission
    vouched for (a hand-over's leaf is checked before sealing) and a retention note
    (``verify`` reads it); a producer's event claiming nothing is sealed as usual."""
    greedy = PrivacyPolicies(
        default=PrivacyPolicy(sealed=frozenset({"message"}), sealed_attributes=frozenset({"*"}))
    )
    sealer = Sealer(greedy, _Keys())
    handover = handover_event("acme", ["old+1234+AAAA"], "new+5678+BBBB", 256, 1)
    erasure = erasure_event("acme", "ab" * 32, ["cd" * 16], 1)
    decision = decision_to_event(
        Decision(ACCOUNT_LOCKED, "acme", "quick", 1, "ev-1", user_name=SEALED_RAW)
    )
    for own in (handover, erasure, decision):
        assert sealer.seal(own) is own
    statement = RetentionStatement("authtrail.test/acme", 256, bytes(32), bytes(32), 1)
    retention = retention_event("acme", b"note text", statement)
    sealed = sealer.seal(retention)
    assert sealed["attributes"][NOTE_ATTRIBUTE] == "note text" and is_sealed(sealed["message"])
    plain = sealer.seal(_failure())
    assert {key for key, value in plain["attributes"].items() if not is_sealed(value)} == {
        "pseudonym.client_ip", "pseudonym.user_name"
    }  # fmt: skip
