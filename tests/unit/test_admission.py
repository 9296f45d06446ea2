"""Admission: what decodes but may not enter a chain is refused with a named reason."""

from __future__ import annotations

import random
import unicodedata

import pytest

from authtrail.stream.worker import admission
from authtrail.stream.worker.admission import (
    ABSURD_TIMESTAMP,
    MISSING_FIELD,
    OVERSIZED,
    Limits,
    RejectedEvent,
    _folded,
    check_event,
)

NOW = 1_790_000_000_000_000  # a record timestamp in 2026
GOOD = {"event_id": "e1", "tenant_id": "acme", "occurred_at": NOW - 5_000_000}


def _kind(event: dict, *, size: int = 300, stamp: int | None = NOW) -> str:
    with pytest.raises(RejectedEvent) as caught:
        check_event(event, record_bytes=size, record_timestamp_micros=stamp)
    return caught.value.kind


def test_a_normal_event_is_admitted() -> None:
    check_event(GOOD, record_bytes=300, record_timestamp_micros=NOW)
    check_event(GOOD, record_bytes=300, record_timestamp_micros=None)
    old_log_line = {**GOOD, "occurred_at": 1_418_000_000_000_000}  # 2014: ingested history
    check_event(old_log_line, record_bytes=300, record_timestamp_micros=NOW)


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        ({**GOOD, "event_id": ""}, MISSING_FIELD),
        ({**GOOD, "event_id": "   "}, MISSING_FIELD),
        ({**GOOD, "tenant_id": ""}, MISSING_FIELD),
        ({**GOOD, "event_id": "x" * 257}, MISSING_FIELD),
        ({**GOOD, "occurred_at": 0}, ABSURD_TIMESTAMP),
        ({**GOOD, "occurred_at": -1}, ABSURD_TIMESTAMP),
        ({**GOOD, "occurred_at": NOW + 2 * 86_400_000_000}, ABSURD_TIMESTAMP),
    ],
)
def test_refusals_name_their_rule(event: dict, kind: str) -> None:
    assert _kind(event) == kind


def test_oversized_record_is_refused_first() -> None:
    assert _kind(GOOD, size=64 * 1024 + 1) == OVERSIZED
    check_event(GOOD, record_bytes=64 * 1024, record_timestamp_micros=NOW)


def test_future_bound_follows_the_record_not_the_wall_clock() -> None:
    tomorrow = {**GOOD, "occurred_at": NOW + 86_400_000_000}
    check_event(tomorrow, record_bytes=1, record_timestamp_micros=NOW)
    check_event(tomorrow, record_bytes=1, record_timestamp_micros=None)  # unknown: no bound
    assert _kind({**tomorrow, "occurred_at": NOW + 86_400_000_001}) == ABSURD_TIMESTAMP


def test_limits_are_configurable() -> None:
    strict = Limits(max_record_bytes=100, max_future_seconds=0)
    with pytest.raises(RejectedEvent):
        check_event(GOOD, record_bytes=101, record_timestamp_micros=NOW, limits=strict)
    with pytest.raises(RejectedEvent):
        check_event({**GOOD, "occurred_at": NOW + 1}, record_bytes=1,
                    record_timestamp_micros=NOW, limits=strict)  # fmt: skip


def test_an_event_outside_its_tenants_partition_is_refused() -> None:
    from authtrail.producers.sdk.partitioning import tenant_partition
    from authtrail.stream.worker.admission import WRONG_PARTITION

    home = tenant_partition("acme", 4)
    check_event(GOOD, record_bytes=1, record_timestamp_micros=NOW, partition=home, partitions=4)
    with pytest.raises(RejectedEvent) as caught:
        check_event(GOOD, record_bytes=1, record_timestamp_micros=NOW,
                    partition=(home + 1) % 4, partitions=4)  # fmt: skip
    assert caught.value.kind == WRONG_PARTITION
    assert "murmur2" in str(caught.value)


# --- the identity of authtrail's own lockout decisions is reserved ------------------------


@pytest.mark.parametrize(
    "claim",
    [
        {"service": "authtrail-lockout"},
        {"service": "Authtrail-Lockout "},
        {"service": " AUTHTRAIL-LOCKOUT"},
        {"service": "".join(chr(ord(c) + 0xFEE0) for c in "authtrail") + "-lockout"},  # full width
        {"event_id": "authtrail-lockout:account_locked:" + "0" * 32},
        {"event_id": "authtrail-lockout:anything"},
        {"event_id": "AuthTrail-Lockout:account_locked:x"},
        {"service": "sso", "event_id": " authtrail-lockout:x"},
        # the worker's key hand-overs (stream/core/handover.py) are reserved the same way
        {"service": "authtrail-keys"},
        {"service": " Authtrail-Keys"},
        {"event_id": "authtrail-keys:handover:" + "0" * 32},
        {"event_id": "AUTHTRAIL-KEYS:x"},
    ],
)
def test_an_event_claiming_a_decisions_identity_is_refused(claim: dict) -> None:
    from authtrail.stream.worker.admission import RESERVED_IDENTITY

    event = {**GOOD, **claim}
    assert _kind(event) == RESERVED_IDENTITY
    with pytest.raises(RejectedEvent) as caught:
        check_event(event, record_bytes=1, record_timestamp_micros=NOW,
                    own_decision=lambda _: False)  # fmt: skip
    assert caught.value.kind == RESERVED_IDENTITY
    assert "reserved" in str(caught.value) and "acme" in str(caught.value)


def test_the_workers_own_decision_is_admitted_and_ordinary_events_are_not_asked() -> None:
    decision = {**GOOD, "service": "authtrail-lockout",
                "event_id": "authtrail-lockout:account_locked:" + "a" * 32}  # fmt: skip
    asked: list[object] = []

    def own(event: object) -> bool:
        asked.append(event)
        return True

    check_event(decision, record_bytes=1, record_timestamp_micros=NOW, own_decision=own)
    assert asked == [decision]
    asked.clear()
    for ordinary in (
        GOOD,
        {**GOOD, "service": "authtrail"},
        {**GOOD, "service": "lockout-authtrail"},
        {**GOOD, "service": "authtrail-lockouts"},
        {**GOOD, "event_id": "x:authtrail-lockout:1"},
        {**GOOD, "event_id": "authtrail-lockout-1"},  # no colon: not the prefix
        {**GOOD, "service": "authtrail-key"},
        {**GOOD, "event_id": "authtrail-keys-1"},
        {**GOOD, "service": None},
    ):
        check_event(ordinary, record_bytes=1, record_timestamp_micros=NOW, own_decision=own)
    assert asked == []  # the worker pays for the ownership check only when it matters


@pytest.mark.parametrize(
    "tenant", ["authtrail-rejected-0", "authtrail-rejected-7", "AUTHTRAIL-Rejected-7",
               " authtrail-rejected-x", "authtrail-rejected-"],
)  # fmt: skip
def test_no_event_may_join_a_rejection_log_not_even_one_the_worker_calls_its_own(
    tenant: str,
) -> None:
    from authtrail.stream.worker.admission import RESERVED_IDENTITY

    event = {**GOOD, "tenant_id": tenant}
    with pytest.raises(RejectedEvent) as caught:
        check_event(event, record_bytes=1, record_timestamp_micros=NOW,
                    own_decision=lambda _: True)  # fmt: skip
    assert caught.value.kind == RESERVED_IDENTITY and "rejection logs" in str(caught.value)
    for neighbour in ("authtrail-rejecte", "acme-authtrail-rejected-1", "authtrail"):
        check_event({**GOOD, "tenant_id": neighbour}, record_bytes=1, record_timestamp_micros=NOW)


def test_ascii_text_folds_as_the_full_unicode_folding_does() -> None:
    text = "".join(map(chr, range(128)))
    for start in range(0, 128, 7):
        sample = text[start:] + " Authtrail-Lockout " + text[:start]
        assert _folded(sample) == unicodedata.normalize("NFKC", sample).strip().casefold()


# --- erasure records: reserved, and admitted only when the worker finds the claim true ----

ERASURE = {**GOOD, "service": "authtrail-privacy", "event_type_other": "AUTHTRAIL_SUBJECT_ERASED",
           "event_id": "authtrail-privacy:erase:" + "0" * 32}  # fmt: skip


@pytest.mark.parametrize(
    "claim",
    [
        {"service": "authtrail-privacy"},
        {"service": "Authtrail-Privacy "},
        {"service": " AUTHTRAIL-PRIVACY"},
        {"service": "".join(chr(ord(c) + 0xFEE0) for c in "authtrail") + "-privacy"},  # full width
        {"event_id": "authtrail-privacy:erase:" + "0" * 32},
        {"event_id": "Authtrail-Privacy:anything"},
        {"service": "sso", "event_id": " authtrail-privacy:x"},
        {"event_type_other": "AUTHTRAIL_SUBJECT_ERASED"},
        {"service": "sso", "event_type_other": " authtrail_subject_erased"},
        ERASURE,
    ],
)
def test_an_event_claiming_an_erasure_is_refused_unless_the_claim_is_true(claim: dict) -> None:
    from authtrail.stream.worker.admission import RESERVED_IDENTITY

    event = {**GOOD, **claim}
    assert _kind(event) == RESERVED_IDENTITY  # no key store to check it against
    with pytest.raises(RejectedEvent) as caught:
        check_event(event, record_bytes=1, record_timestamp_micros=NOW)
    assert "no privacy key store" in str(caught.value) and "acme" in str(caught.value)
    with pytest.raises(RejectedEvent) as caught:  # the worker's check found it false
        check_event(event, record_bytes=1, record_timestamp_micros=NOW,
                    own_decision=lambda _: True,  # never asked: not a decision's claim
                    erasure_claim=lambda _: "key k is live")  # fmt: skip
    assert caught.value.kind == RESERVED_IDENTITY
    assert "key k is live" in str(caught.value) and "reserved" in str(caught.value)
    asked: list[object] = []
    check_event(event, record_bytes=1, record_timestamp_micros=NOW,
                erasure_claim=lambda claimed: asked.append(claimed))  # fmt: skip
    assert asked == [event]  # true: admitted (the worker checks the form and the keys)


def test_ordinary_events_are_not_asked_about_erasure() -> None:
    asked: list[object] = []

    def claim(event: object) -> str:
        asked.append(event)
        return "false"

    for ordinary in (
        GOOD,
        {**GOOD, "service": "authtrail-privacy-team"},
        {**GOOD, "service": "privacy"},
        {**GOOD, "event_id": "authtrail-privacy-1"},  # no colon: not the prefix
        {**GOOD, "event_id": "x:authtrail-privacy:1"},
        {**GOOD, "event_type_other": "SUBJECT_ERASED"},
        {**GOOD, "event_type_other": None, "service": None},
    ):
        check_event(ordinary, record_bytes=1, record_timestamp_micros=NOW, erasure_claim=claim)
    assert asked == []
    # a decision's identity is still the decision check's, never the erasure check's
    decision = {**GOOD, "service": "authtrail-lockout"}
    check_event(decision, record_bytes=1, record_timestamp_micros=NOW,
                own_decision=lambda _: True, erasure_claim=claim)  # fmt: skip
    assert asked == []
    # but a decision's service on an erasure claim is judged as an erasure claim
    with pytest.raises(RejectedEvent):
        check_event({**ERASURE, "service": "authtrail-lockout"}, record_bytes=1,
                    record_timestamp_micros=NOW, own_decision=lambda _: True,
                    erasure_claim=claim)  # fmt: skip
    assert len(asked) == 1


@pytest.mark.parametrize("seed", range(5))
def test_tenants_admitted_before_are_judged_as_if_first_seen(seed: int) -> None:
    """check_event remembers tenant ids that passed the tenant checks; the verdict (kind and
    reason) of every event must equal the one given with nothing remembered."""
    rng = random.Random(seed)
    tenants = ["acme", "beta", "Bad Tenant", "", "authtrail-rejected-0", "x" * 300, None, 7]
    ids = ["e1", "", "  ", "authtrail-lockout-1", "y" * 300, None]
    limits = [Limits(), Limits(max_id_chars=3)]

    def verdict(event: dict, partition: int | None, limit: Limits) -> tuple[str, str] | None:
        try:
            partitions = 4 if partition is not None else None
            check_event(event, record_bytes=300, record_timestamp_micros=NOW, limits=limit,
                        partition=partition, partitions=partitions)  # fmt: skip
        except RejectedEvent as exc:
            return exc.kind, str(exc)
        return None

    for _ in range(300):
        event = {"event_id": rng.choice(ids), "tenant_id": rng.choice(tenants),
                 "occurred_at": rng.choice([NOW, 5, None])}  # fmt: skip
        partition, limit = rng.choice([None, 0, 1, 2, 3]), rng.choice(limits)
        remembered = verdict(event, partition, limit)
        saved = set(admission._admitted)
        admission._admitted.clear()
        assert remembered == verdict(event, partition, limit)
        admission._admitted.update(saved)


def test_a_workers_many_tenants_stay_remembered() -> None:
    """A tenant forgotten costs its next event the worker's whole Python path: forgetting
    every tenant at 16 384 sent 8 % of 40 000 tenants' events down it again."""
    tenants = [f"tenant-{number}" for number in range(40_000)]
    saved = set(admission._admitted)
    admission._admitted.clear()
    try:
        for tenant in tenants:
            check_event({"event_id": "e1", "tenant_id": tenant, "occurred_at": NOW},
                        record_bytes=300, record_timestamp_micros=NOW)  # fmt: skip
        max_id_chars = Limits().max_id_chars
        assert all((tenant, None, None, max_id_chars) in admission._admitted for tenant in tenants)
    finally:
        admission._admitted.clear()
        admission._admitted.update(saved)


# -- the usual event's check in C (usual_admission) ---------------------------------------

FULL_WIDTH = "".join(chr(ord(letter) + 0xFEE0) for letter in "authtrail")  # NFKC: "authtrail"
IDENTITIES = ["e1", "Authtrail-Lockout:x", "authtrail-keys:1", "AUTHTRAIL-PRIVACY:2",
              " authtrail-lockout:y", FULL_WIDTH + "-lockout:z", "x-authtrail", "authtrai",
              "évènement", " e", "\u2003e", "   ", "e" * 256, "e" * 257, ""]  # fmt: skip
SERVICES = [None, "sso", "authtrail-lockout", "AuthTrail-Keys ", "authtrail-privacy",
            FULL_WIDTH + "-privacy", "authtrail-retention", "keycloak", "sso-é", 7]  # fmt: skip
OTHERS = [None, "CUSTOM", "AUTHTRAIL_SUBJECT_ERASED", "authtrail_subject_erased ", "ÉRASED"]
EARLIEST = Limits().earliest_micros
TIMES = [NOW, EARLIEST, EARLIEST - 1, NOW + 24 * 3600 * 1_000_000,
         NOW + 24 * 3600 * 1_000_000 + 1, True, 2**70, -(2**70), None, "1"]  # fmt: skip


def _admits(event: dict, size: int, stamp: int | None, partition: int) -> bool:
    try:
        check_event(event, record_bytes=size, record_timestamp_micros=stamp,
                    partition=partition, partitions=4)  # fmt: skip
    except RejectedEvent:
        return False
    return True


@pytest.mark.skipif(admission.AdmissionCore is None, reason="no C extension")
@pytest.mark.parametrize("seed", range(20))
def test_the_usual_check_passes_only_what_check_event_admits(seed: int) -> None:
    rng = random.Random(seed)
    usual = admission.usual_admission(Limits())
    passed = 0
    for _ in range(400):

        def pick(values: list) -> object:  # the usual value (the first) half the time
            return values[0] if rng.random() < 0.5 else rng.choice(values)

        tenant = pick(["acme", "beta", "gamma", "delta", "authtrail-rejected-0", "Bad"])
        event = {"event_id": pick(IDENTITIES), "tenant_id": tenant,
                 "occurred_at": pick(TIMES), "service": pick(SERVICES),
                 "event_type_other": pick(OTHERS)}  # fmt: skip
        for name in ("service", "event_type_other", "occurred_at"):
            if rng.random() < 0.1:
                del event[name]
        size = pick([300, Limits().max_record_bytes, Limits().max_record_bytes + 1])
        stamp = pick([NOW, None, 2**70])
        partition = pick([admission._tenant_partition(str(tenant), 4), 0, 1, 2, 3])
        fast = usual(event, size, stamp, partition, 4)
        admits = _admits(event, size, stamp, partition)  # remembers the tenants it admits
        if fast:
            passed += 1
            assert admits, event
    assert passed > 20  # the usual event does take the C path


@pytest.mark.skipif(admission.AdmissionCore is None, reason="no C extension")
def test_the_usual_check_leaves_first_seen_tenants_and_other_settings_to_python() -> None:
    usual = admission.usual_admission(Limits())
    event = {**GOOD, "tenant_id": "first-seen", "service": "sso"}
    partition = admission._tenant_partition("first-seen", 4)
    assert not usual(event, 300, NOW, partition, 4)  # not yet admitted: check_event's call
    check_event(event, record_bytes=300, record_timestamp_micros=NOW, partition=partition,
                partitions=4)  # fmt: skip
    assert usual(event, 300, NOW, partition, 4)
    assert not usual(event, 300, NOW, (partition + 1) % 4, 4)  # another partition
    assert not usual(event, 300, NOW, partition, None)  # partitions not checked: not that
    wrong = (partition + 1) % 4  # admitted where partitions are not checked, not where they are
    check_event(event, record_bytes=300, record_timestamp_micros=NOW, partition=wrong)
    assert usual(event, 300, NOW, wrong, None) and not usual(event, 300, NOW, wrong, 4)
    assert not admission.usual_admission(Limits(max_id_chars=300))(event, 300, NOW, partition, 4)
    assert not usual(dict(event, occurred_at=EARLIEST - 1), 300, NOW, partition, 4)
    assert not usual(dict(event, event_id="AuthTrail-Lockout:1"), 300, NOW, partition, 4)
    huge = admission.usual_admission(Limits(max_record_bytes=2**70))  # judged in Python
    assert not huge(event, 300, NOW, partition, 4)
