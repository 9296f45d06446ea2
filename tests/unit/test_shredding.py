"""Sealed fields and pseudonyms: known answers, the leaf v2 bytes, and tampered variants."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from hypothesis import given
from hypothesis import strategies as st

from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.producers.sdk.sealed_values import (
    SealedValueError,
    SubjectKey,
    associated_data,
    open_value,
    pseudonym,
    seal_value,
    subject_of,
)
from authtrail.producers.sdk.sealing import PrivacyPolicies, PrivacyPolicy
from authtrail.stream.core.canonical import MAGIC, MAGIC_V2, canonical_leaf
from authtrail.stream.detection.decisions import keyed_identity, user_key
from authtrail.stream.worker import shredding
from authtrail.stream.worker.shredding import (
    ERASURE_EVENT_TYPE,
    Sealer,
    erasure_event,
    erasure_record_problem,
)

KEY = SubjectKey("00112233445566778899aabbccddeeff", bytes(range(32)))
SEALED = (
    "authtrail-sealed-v1:00112233445566778899aabbccddeeff:nLD+SC88DwBbTTEv:"
    "hVmlcVRqlRAtd+OKlfgmUv+jBkTK57HM8tXxFbuT7OET"
)


def test_associated_data_spelled_out_from_the_spec() -> None:
    assert associated_data("acme", "ev-1", "user_name", KEY.key_id) == (
        b"authtrail-sealed-v1\n" + b"\x00\x00\x00\x04acme" + b"\x00\x00\x00\x04ev-1"
        + b"\x00\x00\x00\x09user_name" + b"\x00\x00\x00\x20" + KEY.key_id.encode()
    )  # fmt: skip


def test_known_answer_matches_an_independent_aes_gcm_siv() -> None:
    ad = associated_data("acme", "ev-1", "user_name", KEY.key_id)
    nonce = hashlib.sha256(ad).digest()[:12]
    sealed = AESGCMSIV(KEY.key).encrypt(nonce, b"alice@example.com", ad)
    expected = (f"authtrail-sealed-v1:{KEY.key_id}:{base64.b64encode(nonce).decode()}:"
                f"{base64.b64encode(sealed).decode()}")  # fmt: skip
    assert seal_value(KEY, "acme", "ev-1", "user_name", "alice@example.com") == expected == SEALED
    assert open_value(KEY, "acme", "ev-1", "user_name", SEALED) == "alice@example.com"


def test_leaf_v2_known_bytes() -> None:
    event = {"tenant_id": "acme", "user_name": SEALED, "occurred_at": 5, "client_ip": None}
    assert canonical_leaf(event) == (
        b"authtrail-event-v2\n"
        + b"\x00\x00\x00\x0boccurred_at" + b"i" + b"\x00\x00\x00\x015"
        + b"\x00\x00\x00\x09tenant_id" + b"s" + b"\x00\x00\x00\x04acme"
        + b"\x00\x00\x00\x09user_name" + b"c" + len(SEALED).to_bytes(4, "big") + SEALED.encode()
    )  # fmt: skip


@pytest.mark.parametrize(
    "event",
    [
        {"tenant_id": "acme", "attributes": {"note": SEALED}},  # only inside a map
        {"tenant_id": "acme", "message": "see " + SEALED},  # not at the start
        {"tenant_id": "acme", "user_name": "authtrail-sealed-v2:x"},  # another prefix
    ],
)
def test_events_without_a_sealed_value_keep_their_v1_leaf(event: dict) -> None:
    leaf = canonical_leaf(event)
    assert leaf.startswith(MAGIC) and not leaf.startswith(MAGIC_V2)


def test_sealing_is_deterministic_so_retries_stay_duplicates() -> None:
    again = seal_value(KEY, "acme", "ev-1", "user_name", "alice@example.com")
    assert again == SEALED
    assert seal_value(KEY, "acme", "ev-1", "user_name", "bob") != SEALED


@pytest.mark.parametrize(
    ("tenant", "event_id", "field"),
    [("globex", "ev-1", "user_name"), ("acme", "ev-2", "user_name"), ("acme", "ev-1", "client_ip")],
)
def test_value_moved_to_another_tenant_event_or_field_does_not_open(
    tenant: str, event_id: str, field: str
) -> None:
    with pytest.raises(SealedValueError, match="does not open"):
        open_value(KEY, tenant, event_id, field, SEALED)


def test_every_flipped_bit_of_the_ciphertext_is_refused() -> None:
    head, nonce, body = SEALED.rsplit(":", 2)
    data = base64.b64decode(body)
    for index in range(len(data)):
        for bit in (0, 7):
            flipped = bytearray(data)
            flipped[index] ^= 1 << bit
            value = f"{head}:{nonce}:{base64.b64encode(bytes(flipped)).decode()}"
            with pytest.raises(SealedValueError):
                open_value(KEY, "acme", "ev-1", "user_name", value)


@pytest.mark.parametrize(
    "value",
    [
        SEALED.rsplit(":", 1)[0],  # no ciphertext
        SEALED + ":extra",
        SEALED[:-8],  # truncated ciphertext (still base64)
        SEALED.replace("nLD+SC88DwBbTTEv", "nLD+SC88DwBb"),  # a 9-byte nonce
        SEALED.replace("nLD+SC88DwBbTTEv", "AAAAAAAAAAAAAAAA"),  # another nonce
        SEALED.replace("hVml", "h*ml"),  # not base64
        SEALED.replace("00112233", "0011223G"),  # not a key id
        "clear text",
    ],
)
def test_malformed_or_modified_values_are_refused(value: str) -> None:
    with pytest.raises(SealedValueError):
        open_value(KEY, "acme", "ev-1", "user_name", value)


def test_another_key_is_refused_with_both_ids() -> None:
    other = SubjectKey("ff" * 16, bytes(32))
    with pytest.raises(SealedValueError, match=f"under key {KEY.key_id}, not {'ff' * 16}"):
        open_value(other, "acme", "ev-1", "user_name", SEALED)


def test_pseudonym_is_hmac_sha256_with_a_domain() -> None:
    key = bytes(32)
    expected = hmac.new(key, b"authtrail-pseudonym-v1\nalice", hashlib.sha256).hexdigest()
    assert pseudonym(key, "alice") == expected
    assert expected == "8de1da4f176b04c87c4c36e639d172d7bf9bda18e1b36317f4288de0ada9ae4c"
    assert pseudonym(bytes(31) + b"\x01", "alice") != expected


class _Keys:
    """An in-memory key store (the SubjectKeys protocol), counting creations."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], SubjectKey] = {}
        self.created = 0
        self.tombstones: dict[tuple[str, str], str] = {}  # (tenant, key id): pseudonym

    def key_for(self, tenant_id: str, subject: str) -> SubjectKey:
        if (tenant_id, subject) not in self.keys:
            self.created += 1
            self.keys[tenant_id, subject] = SubjectKey(
                f"{self.created:032x}", bytes([self.created]) * 32
            )
        return self.keys[tenant_id, subject]

    def find(self, tenant_id: str, key_id: str) -> SubjectKey | None:
        return next((k for k in self.keys.values() if k.key_id == key_id), None)

    def pseudonym_key(self, tenant_id: str) -> bytes:
        return tenant_id.encode().ljust(32, b"\x00")

    def destroyed(self, tenant_id: str, key_id: str, subject_pseudonym: str) -> bool:
        return self.tombstones.get((tenant_id, key_id)) == subject_pseudonym


def _login(event_id: str, **fields: object) -> dict:
    return {"event_id": event_id, "tenant_id": "acme", "event_type": "LOGIN_FAILED",
            "occurred_at": 1, "attributes": {"k": "v"}, **fields}  # fmt: skip


def test_sealer_seals_the_policy_fields_and_adds_pseudonyms() -> None:
    keys = _Keys()
    sealer = Sealer(PrivacyPolicies(tenants={"acme": PrivacyPolicy()}), keys)
    event = _login("ev-1", user_id="u1", user_name="Alice", client_ip="192.0.2.1",
                   user_agent="curl", host="h1")  # fmt: skip
    sealed = sealer.seal(event)
    key = keys.keys["acme", "id:u1"]
    for field in ("user_name", "client_ip", "user_agent"):
        assert open_value(key, "acme", "ev-1", field, sealed[field]) == event[field]
    assert sealed["host"] == "h1" and sealed["user_id"] == "u1"  # not in the policy
    tenant_key = keys.pseudonym_key("acme")
    assert sealed["attributes"] == {
        "k": "v",
        "pseudonym.client_ip": pseudonym(tenant_key, "192.0.2.1"),
        "pseudonym.user_name": pseudonym(tenant_key, "Alice"),
    }
    assert event["user_name"] == "Alice"  # the input is left alone
    decision = sealed | {"service": "authtrail-lockout", "client_ip": "pseudonym:ab"}
    assert sealer.seal(decision) is decision  # the worker's own: kept as it is owed
    # Sealed input that opens under the subject's current key passes unchanged (what a
    # producer sealing at the source sends: tests/unit/test_source_sealing.py).
    assert sealer.seal(sealed) == sealed
    with pytest.raises(InvalidArgumentError, match="does not seal it"):
        Sealer(PrivacyPolicies(), keys).seal(sealed)  # ... for a tenant that seals nothing
    with pytest.raises(InvalidArgumentError, match="'host'"):
        Sealer(PrivacyPolicies(), keys).seal(_login("ev-2", host=SEALED))
    assert canonical_leaf(sealed).startswith(MAGIC_V2)


def test_sealer_leaves_tenants_without_a_policy_alone() -> None:
    sealer = Sealer(PrivacyPolicies(tenants={"globex": PrivacyPolicy()}), _Keys())
    event = _login("ev-1", user_name="Alice")
    assert sealer.seal(event) is event


def test_an_erasure_record_drops_the_cached_key() -> None:
    keys = _Keys()
    sealer = Sealer(PrivacyPolicies(default=PrivacyPolicy()), keys)
    first = sealer.seal(_login("ev-1", user_id="u1", user_name="a"))
    old = keys.keys.pop(("acme", "id:u1"))  # what `erase` does to the store
    sealer.seal(_login("ev-2", user_id="u1", user_name="a"))
    assert keys.created == 1  # cached: not asked again
    sealer.seal(erasure_event("acme", "p", [old.key_id], 7) | {"user_name": None})
    second = sealer.seal(_login("ev-3", user_id="u1", user_name="a"))
    assert keys.created == 2
    assert first["user_name"].split(":")[1] != second["user_name"].split(":")[1]


def test_subjects() -> None:
    assert subject_of({"user_id": "u1", "user_name": "a"}) == "id:u1"
    assert subject_of({"user_name": "a"}) == "name:a"
    assert subject_of({"user_name": SEALED}) == "unattributed"
    assert subject_of({"client_ip": "192.0.2.1"}) == "unattributed"


def test_detectors_count_sealed_identities_by_pseudonym() -> None:
    sealer = Sealer(PrivacyPolicies(default=PrivacyPolicy()), _Keys())
    one = sealer.seal(_login("ev-1", user_name="alice", client_ip="192.0.2.1"))
    two = sealer.seal(_login("ev-2", user_name="alice", client_ip="192.0.2.1"))
    assert one["user_name"] != two["user_name"]  # each sealing differs ...
    assert user_key(one, True) == user_key(two, True)  # ... the keyed identity does not
    assert user_key(one, True).startswith("name:pseudonym:")
    assert keyed_identity(one, "client_ip") == keyed_identity(two, "client_ip")
    assert "192.0.2.1" not in (keyed_identity(one, "client_ip") or "")
    assert keyed_identity({"client_ip": "192.0.2.9"}, "client_ip") == "192.0.2.9"
    assert keyed_identity({"client_ip": SEALED}, "client_ip") is None  # no pseudonym


def test_erasure_record_is_determined_by_the_erasure() -> None:
    record = erasure_event("acme", "p" * 64, ["b" * 32, "a" * 32], 1_700_000_000_000_000)
    assert record == erasure_event("acme", "p" * 64, ["a" * 32, "b" * 32], 1_700_000_000_000_000)
    assert record["event_type_other"] == ERASURE_EVENT_TYPE
    assert record["attributes"]["key_ids"] == "a" * 32 + "," + "b" * 32
    assert record["event_id"].startswith("authtrail-privacy:erase:")


PSEUDONYM = "ab" * 32
A, B = "a" * 32, "b" * 32
GENUINE = erasure_event("acme", PSEUDONYM, [A, B], 1_700_000_000_000_000)


def test_a_well_formed_erasure_record_is_exactly_what_erase_sends() -> None:
    assert erasure_record_problem(GENUINE) is None
    # decoded from Avro, every other field is there, empty
    assert erasure_record_problem({**GENUINE, "user_name": None, "received_at": None}) is None
    later = erasure_event("acme", PSEUDONYM, ["a" * 32], 1_700_000_000_000_001)
    for changed, why in [
        ({"user_name": "bob"}, "user_name"),
        ({"event_id": "authtrail-privacy:erase:" + "0" * 32}, "event_id"),
        ({"occurred_at": 1_700_000_000_000_001}, "event_id"),  # the id follows the time
        ({"service": "Authtrail-Privacy "}, "service"),
        ({"message": "subject keys destroyed: all"}, "message"),
        ({"outcome": "FAILURE"}, "outcome"),
        ({"attributes": {**GENUINE["attributes"], "extra": "x"}}, "attributes"),
        ({"attributes": {"key_ids": f"{B},{A}", "subject_pseudonym": PSEUDONYM}}, "attributes"),
        ({"attributes": {"key_ids": f"{A},{A}", "subject_pseudonym": PSEUDONYM}}, "distinct"),
        ({"attributes": {"key_ids": "", "subject_pseudonym": PSEUDONYM}}, "key ids"),
        ({"attributes": {"key_ids": "../x", "subject_pseudonym": PSEUDONYM}}, "key ids"),
        ({"attributes": {"key_ids": "a" * 32, "subject_pseudonym": "bob"}}, "pseudonym"),
        ({"attributes": {"key_ids": "a" * 32}}, "lacks"),
        ({"attributes": {}}, "lacks"),
        ({"occurred_at": None}, "occurred_at"),
        ({"tenant_id": "globex"}, "event_id"),
    ]:
        problem = erasure_record_problem({**GENUINE, **changed})
        assert problem is not None and why in problem, (changed, problem)
    assert erasure_record_problem(later) is None


def test_the_sealer_checks_an_erasure_claim_against_its_key_store() -> None:
    keys = _Keys()
    sealer = Sealer(PrivacyPolicies(default=PrivacyPolicy()), keys)
    live = keys.key_for("acme", "id:u1")
    other = keys.key_for("acme", "id:u2")
    claim = erasure_event("acme", PSEUDONYM, [live.key_id], 7_000_000)
    problem = sealer.erasure_claim_problem(claim)  # forged: the key is live
    assert problem is not None and live.key_id in problem and "no such erasure" in problem
    never = erasure_event("acme", PSEUDONYM, ["f" * 32], 7_000_000)  # never existed
    assert "f" * 32 in (sealer.erasure_claim_problem(never) or "")
    keys.tombstones["acme", live.key_id] = PSEUDONYM  # what `erase` does to the store
    keys.keys.pop(("acme", "id:u1"))
    assert sealer.erasure_claim_problem(claim) is None
    # the key was destroyed, but as another subject's: the record names the wrong person
    someone_else = erasure_event("acme", "cd" * 32, [live.key_id], 7_000_000)
    assert "cd" * 32 in (sealer.erasure_claim_problem(someone_else) or "")
    both = erasure_event("acme", PSEUDONYM, [live.key_id, other.key_id], 7_000_000)
    problem = sealer.erasure_claim_problem(both)  # one destroyed, one live: still false
    assert problem is not None and other.key_id in problem and live.key_id not in problem
    elsewhere = erasure_event("globex", PSEUDONYM, [live.key_id], 7_000_000)
    assert sealer.erasure_claim_problem(elsewhere) is not None  # another tenant's key
    malformed = claim | {"user_name": "bob"}
    assert "not a well-formed erasure record" in (sealer.erasure_claim_problem(malformed) or "")


def test_policy_document_is_parsed_and_checked() -> None:
    strings = ("user_name", "client_ip", "user_agent", "message", "host")
    parsed = PrivacyPolicies.parse(
        {"default": None, "tenants": {"acme": {}, "globex": {"sealed": ["host"]}}}, strings
    )
    assert parsed.for_tenant("acme") == PrivacyPolicy()
    assert parsed.for_tenant("globex") == PrivacyPolicy(sealed=frozenset({"host"}))
    assert parsed.for_tenant("initech") is None
    with pytest.raises(ConfigurationError, match=r"tenants\.acme\.sealed"):
        PrivacyPolicies.parse({"tenants": {"acme": {"sealed": ["occurred_at"]}}}, strings)
    with pytest.raises(ConfigurationError, match="expected an object"):
        PrivacyPolicies.parse({"tenants": {"acme": ["user_name"]}}, strings)


def _reference_leaf(event: dict) -> bytes:
    """docs/INTEGRITY.md §2 and §2.1 spelled out plainly (strings and integers only)."""

    def framed(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    sealed = any(
        isinstance(v, str) and v.startswith("authtrail-sealed-v1:") for v in event.values()
    )
    parts = [b"authtrail-event-v2\n" if sealed else b"authtrail-event-v1\n"]
    for name in sorted(event, key=str.encode):
        value = event[name]
        if value is None:
            continue
        if isinstance(value, int):
            kind, data = b"i", str(value).encode()
        else:
            kind = b"c" if value.startswith("authtrail-sealed-v1:") else b"s"
            data = value.encode()
        parts.append(framed(name.encode()) + kind + framed(data))
    return b"".join(parts)


@given(
    st.dictionaries(
        st.sampled_from(["user_name", "client_ip", "user_agent", "host", "message", "seq"]),
        st.one_of(
            st.none(),
            st.integers(-(2**63), 2**63 - 1),
            st.text(max_size=20),
            st.text(max_size=20).map(lambda text: "authtrail-sealed-v1:" + text),
        ),
    )
)
def test_leaf_matches_the_reference_for_any_mix_of_sealed_values(event: dict) -> None:
    assert canonical_leaf(event) == _reference_leaf(event)


class _NoKeys:
    """A key store the tests below must never reach."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the key store was asked for {name}")


LOOKS_SEALED = st.builds(lambda text: "authtrail-sealed-v1:" + text, st.text(max_size=8))


@given(st.dictionaries(st.sampled_from(["user_name", "user_id", "client_ip"]),
                       st.text() | LOOKS_SEALED))  # fmt: skip
def test_a_sealer_without_policies_leaves_events_unchanged_unless_a_value_looks_sealed(
    fields: dict[str, str],
) -> None:
    from authtrail.schemas import AUTH_EVENT, load_schema
    from authtrail.schemas.codec import SingleObjectCodec

    codec = SingleObjectCodec(load_schema(AUTH_EVENT))
    event = {"event_id": "e1", "tenant_id": "acme", "event_type": "LOGIN", "outcome": "SUCCESS",
             "occurred_at": 1_767_225_600_000_000, **fields}  # fmt: skip
    raw = codec.encode(event)
    decoded = codec.decode(raw)
    sealer = Sealer(PrivacyPolicies(tenants={"other": None}), _NoKeys())  # type: ignore[arg-type]
    looks_sealed = any(value.startswith("authtrail-sealed-v1:") for value in fields.values())
    assert sealer.leaves_unchanged(raw) == ("authtrail-sealed-v1:" not in str(fields))
    if sealer.leaves_unchanged(raw):
        assert sealer.seal(decoded, raw) is decoded
    elif looks_sealed:
        with pytest.raises(InvalidArgumentError):
            sealer.seal(decoded, raw)
    for policies in (PrivacyPolicies(default=PrivacyPolicy()),
                     PrivacyPolicies(tenants={"acme": PrivacyPolicy()})):  # fmt: skip
        assert not Sealer(policies, _NoKeys()).leaves_unchanged(raw)  # type: ignore[arg-type]


def test_the_key_cache_keeps_the_subjects_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """At its bound the cache forgets the least recently used key, not every key: a
    subject active throughout keeps its key while others come and go."""
    monkeypatch.setattr(shredding, "_MAX_CACHED_KEYS", 3)
    keys = _Keys()
    asked: list[str] = []
    key_for = keys.key_for

    def counted(tenant_id: str, subject: str) -> SubjectKey:
        asked.append(subject)
        return key_for(tenant_id, subject)

    monkeypatch.setattr(keys, "key_for", counted)
    sealer = Sealer(PrivacyPolicies(default=PrivacyPolicy()), keys)
    for number, user in enumerate(["hot", "a", "hot", "b", "hot", "c", "hot", "d", "hot", "a"]):
        sealer.seal(_login(f"ev-{number}", user_id=user, user_name=user))
    # "a" was the least recently used when "c" came, and is read again at the end.
    assert asked == ["id:hot", "id:a", "id:b", "id:c", "id:d", "id:a"]
