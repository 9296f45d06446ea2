"""Real identity-provider events map to AuthEvents that encode, decode and lose nothing.

Reads the Keycloak, Okta, Auth0 and CloudTrail samples in ``../shared/realdata`` (or
``$AUTHTRAIL_REALDATA``); they are not part of the project, so the module skips when they
are absent. For every sample: map it, frame it with the shipped schema, decode it, and
check that every value the source reported is in a column or in ``attributes``. Samples
the sources got wrong (an impossible date, Panther-normalised timestamps without a UTC
offset, redacted times) must be refused with :class:`FormatError`, not guessed at.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from authtrail.errors import FormatError, InvalidArgumentError
from authtrail.producers.idp_mapping import (
    map_auth0_event,
    map_cloudtrail_event,
    map_keycloak_event,
    map_okta_event,
)
from authtrail.schemas import AUTH_EVENT, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.stream.core.canonical import canonical_leaf
from tests.realdata import REALDATA

if not (REALDATA / "keycloak").is_dir():
    pytest.skip(f"real data not present at {REALDATA}", allow_module_level=True)

TENANT = "acme"
# Keycloak log lines carry only a time of day; the tests pin them to one day.
LOG_DAY = datetime(2021, 8, 4, tzinfo=UTC)
MAPPERS: dict[str, Callable[..., dict[str, Any]]] = {
    "keycloak": map_keycloak_event,
    "okta": map_okta_event,
    "auth0": map_auth0_event,
    "cloudtrail": map_cloudtrail_event,
}


class Sample:
    def __init__(self, kind: str, label: str, event: Mapping[str, Any], **options: Any) -> None:
        self.kind, self.label, self.event, self.options = kind, label, event, options

    def map(self) -> dict[str, Any]:
        return MAPPERS[self.kind](self.event, tenant_id=TENANT, **self.options)


def load(relative: str) -> Any:
    return json.loads((REALDATA / relative).read_text(encoding="utf-8"))


def log_line_micros(raw: str) -> int | None:
    match = re.match(r"(\d\d):(\d\d):(\d\d),(\d\d\d) ", raw)
    if match is None:
        return None
    hours, minutes, seconds, millis = (int(part) for part in match.groups())
    day = int(LOG_DAY.timestamp()) * 1_000_000
    return day + ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + millis * 1000


def panther_logs(relative: str, keep: Callable[[str, Mapping[str, Any]], bool]) -> Iterator[Any]:
    for rule in load(relative)["rules"]:
        for test in rule["tests"]:
            if keep(test["name"], test["log"]):
                yield f"{rule['id']}: {test['name']}", test["log"]


def collect() -> list[Sample]:
    samples = []
    for index, item in enumerate(load("keycloak/keycloak_event_samples.json")["samples"]):
        default = log_line_micros(item["raw"])
        options = {} if default is None else {"default_occurred_at": default}
        samples.append(Sample("keycloak", f"{index}-{item['type']}", item["event"], **options))
    okta_docs = load("idp_events/okta_docs_logevent_samples.json")["samples"]
    samples.append(Sample("okta", "docs LogEvent", okta_docs[0]["event"]))
    for index, event in enumerate(okta_docs[1]["event"]["data"]["events"]):
        samples.append(Sample("okta", f"docs event hook {index}", event))
    for index, item in enumerate(load("idp_events/auth0_log_samples.json")["samples"]):
        samples.append(Sample("auth0", f"{index}-{item['auth0_type']}", item["event"]))
    for index, item in enumerate(
        load("aws_cloudtrail/consolelogin_examples_awsdocs.json")["examples"]
    ):
        for record in item["event"].get("Records", [item["event"]]):
            samples.append(Sample("cloudtrail", f"docs {index}: {item['title']}", record))
    for label, log in panther_logs("idp_events/panther_okta_test_events.json", lambda *_: True):
        samples.append(Sample("okta", f"panther {label}", log))
    for label, log in panther_logs("idp_events/panther_auth0_test_events.json", lambda *_: True):
        samples.append(Sample("auth0", f"panther {label}", log))
    for label, log in panther_logs(
        "idp_events/panther_aws_cloudtrail_test_events.json", lambda *_: True
    ):
        samples.append(Sample("cloudtrail", f"panther {label}", log))
    bruteforce = "idp_events/panther_multi_source_bruteforce_test_events.json"
    for label, log in panther_logs(bruteforce, lambda name, _: name.startswith("Okta")):
        samples.append(Sample("okta", f"panther {label}", log))
    for label, log in panther_logs(bruteforce, lambda name, _: name.startswith("AWS.CloudTrail")):
        samples.append(Sample("cloudtrail", f"panther {label}", log))
    kinds = {"Okta.SystemLog": "okta", "AWS.CloudTrail": "cloudtrail"}
    for scenario in load("idp_events/panther_test_scenarios.json")["scenarios"]:
        for index, log in enumerate(scenario["logs"]):
            samples.append(Sample(kinds[scenario["log_type"]], f"{scenario['file']} {index}", log))
    return samples


SAMPLES = collect()


def rfc3339(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def refusal_expected(sample: Sample) -> bool:
    """Independently of the mapper: does the sample lack a type or a zoned timestamp?"""
    event = sample.event
    if sample.kind == "keycloak":
        return False
    if sample.kind == "okta":
        return "eventType" not in event or not rfc3339(event.get("published"))
    if sample.kind == "auth0":
        data = event.get("detail", event)["data"]
        return "type" not in data or not rfc3339(data.get("date"))
    return "eventName" not in event or not rfc3339(event.get("eventTime"))


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every non-null scalar of a JSON value with its dotted path, scalars as JSON text."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}.{index}")
    elif value is not None:
        yield path, value if isinstance(value, str) else json.dumps(value)


@pytest.fixture(scope="module")
def codec() -> SingleObjectCodec:
    return SingleObjectCodec(load_schema(AUTH_EVENT))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda sample: f"{sample.kind}:{sample.label}")
def test_sample_maps_encodes_decodes_and_keeps_every_field(
    sample: Sample, codec: SingleObjectCodec
) -> None:
    if refusal_expected(sample):
        with pytest.raises(FormatError):
            sample.map()
        return
    event = sample.map()
    decoded = codec.decode(codec.encode(event))
    assert decoded == {**decoded, **event}  # round trip; decoding only adds null defaults
    assert decoded["tenant_id"] == TENANT and decoded["source"]
    assert decoded["event_id"].startswith(f"{decoded['source']}:")
    assert (decoded["event_type"] == "OTHER") == (decoded["event_type_other"] is not None)
    assert decoded["event_type"] != "LOGIN_FAILED" or decoded["outcome"] == "FAILURE"
    canonical_leaf(decoded)  # only leaf-encodable values made it through
    columns = {
        value for name, value in decoded.items() if isinstance(value, str) and name != "attributes"
    }
    attributes = decoded["attributes"]
    lost = [
        (path, value)
        for path, value in leaves(dict(sample.event))
        if attributes.get(path) != value and value not in columns
    ]
    assert not lost, f"source values neither in a column nor in attributes: {lost}"
    assert sample.map()["event_id"] == decoded["event_id"]  # deterministic


def test_enough_samples_were_mapped_and_refused() -> None:
    refused = [sample for sample in SAMPLES if refusal_expected(sample)]
    assert len(SAMPLES) - len(refused) >= 90
    assert {sample.kind for sample in SAMPLES} == set(MAPPERS)
    assert any(sample.label == "docs LogEvent" for sample in refused)  # 2017-09-31


def find(kind: str, predicate: Callable[[Mapping[str, Any]], bool]) -> dict[str, Any]:
    matches = [sample for sample in SAMPLES if sample.kind == kind and predicate(sample.event)]
    assert matches, f"no {kind} sample matches"
    return matches[0].map()


def test_keycloak_known_answers() -> None:
    token = find("keycloak", lambda event: event.get("type") == "CODE_TO_TOKEN")
    assert token["event_type"] == "TOKEN_ISSUED" and token["outcome"] == "SUCCESS"
    assert token["token_id"] == "733a2efb-4094-4dc1-90a4-194858ce08b0"
    assert token["grant_type"] == "authorization_code"
    assert token["scopes"] == "openid profile email"
    assert token["client_id"] == "security-admin-console" and token["realm"] == "master"
    assert token["attributes"]["refresh_token_id"] == "fe31ebc2-2621-434d-a1e9-300c03b66568"

    failed = find("keycloak", lambda event: event.get("clientId") == "myapp")
    assert failed["event_type"] == "LOGIN_FAILED" and failed["outcome"] == "FAILURE"
    assert failed["failure_reason"] == "invalid_user_credentials"
    assert failed["user_name"] == "admin" and failed["auth_method"] == "oidc"
    assert failed["attributes"]["auth_method"] == "openid-connect"  # derived: source kept

    password = find("keycloak", lambda event: event.get("type") == "UPDATE_PASSWORD")
    assert password["event_type"] == "PASSWORD_CHANGED"
    assert password["event_id"] == "keycloak:a1e97bf5-f1ac-477e-beb4-e8be6775f857"
    assert password["occurred_at"] == 1_628_091_019_154_000
    assert password["user_name"] == "johnny"

    admin = find(
        "keycloak", lambda event: event.get("realmId") == "mesy" and "authDetails" in event
    )
    assert admin["event_type"] == "OTHER" and admin["event_type_other"] == "ADMIN:UPDATE"
    assert admin["actor_id"] == "96087d0a-8334-4305-be07-72166ca937a6"
    assert admin["user_id"] == "db85bef5-f1b8-462d-a563-7de86cf7a2da"  # from resourcePath

    logged = find("keycloak", lambda event: "message" in event)
    assert logged["event_type_other"] == "ADMIN:CREATE" and logged["host"] == "keycloak-0"
    assert logged["attributes"]["resourcePath"] == "clients/2a7390a6-f645-49dc-9a9d-6e99fdb83b31"


def test_keycloak_lines_without_ids_get_distinct_deterministic_ids() -> None:
    redirect_errors = [
        sample
        for sample in SAMPLES
        if sample.kind == "keycloak" and sample.event.get("error") == "invalid_redirect_uri"
    ]
    ids = {sample.map()["event_id"] for sample in redirect_errors}
    assert len(redirect_errors) >= 10 and len(ids) == len(redirect_errors)
    assert all(event_id.startswith("keycloak:sha256:") for event_id in ids)
    assert all(sample.map().get("user_id") is None for sample in redirect_errors)  # "userId=null"
    with pytest.raises(FormatError, match="no time"):
        map_keycloak_event(redirect_errors[0].event, tenant_id=TENANT)


def test_okta_known_answers() -> None:
    hook = find("okta", lambda event: event.get("uuid") == "f1d0b993-cc19-11ed-a688-db22c99ef6c4")
    assert hook["event_type"] == "LOGIN" and hook["outcome"] == "SUCCESS"
    assert hook["user_name"] == "admin@okta.com" and hook["client_ip"] == "142.126.158.61"
    assert hook["session_id"] == "idxyNcxVX2ESsSL0u462548Qg"
    assert hook["attributes"]["client.geographicalContext.city"] == "Toronto"
    assert hook["attributes"]["client.geographicalContext.geolocation.lat"] == "43.6567"
    assert hook["attributes"]["target.1.displayName"] == "Okta Admin Console"

    docs = next(sample for sample in SAMPLES if sample.label == "docs LogEvent")
    with pytest.raises(FormatError, match="2017-09-31"):
        docs.map()

    spray = [
        sample.map()
        for sample in SAMPLES
        if sample.label.startswith("test_scenarios/okta-add-administrator/brute_force_logins")
    ]
    # Nine failed guesses, then the one that worked.
    assert [(event["event_type"], event.get("failure_reason")) for event in spray] == [
        ("LOGIN_FAILED", "VERIFICATION_ERROR")
    ] * 9 + [("LOGIN", None)]


def test_auth0_known_answers() -> None:
    wrong_password = find("auth0", lambda event: event.get("data", {}).get("type") == "fp")
    assert wrong_password["event_type"] == "LOGIN_FAILED"
    assert wrong_password["failure_reason"] == "Wrong email or password."
    assert wrong_password["user_name"] == "new@test.com"
    assert wrong_password["identity_provider"] == "Username-Password-Authentication"

    bridged = find("auth0", lambda event: "detail" in event)
    assert bridged["event_type"] == "LOGIN" and bridged["outcome"] == "SUCCESS"
    assert bridged["received_at"] == 1_610_799_163_000_000
    assert bridged["occurred_at"] == 1_610_799_150_147_000
    assert bridged["session_id"] == "dt1G5nlxkGV10uJx4sKKBH7hwEVbaHAx"
    assert bridged["attributes"]["detail.data.details.prompts.1.name"] == "login"

    not_enabled = find("auth0", lambda event: event.get("data", {}).get("type") == "f")
    assert not_enabled["scopes"] == "openid profile"
    assert "user_id" not in not_enabled


def test_cloudtrail_known_answers() -> None:
    failed = find(
        "cloudtrail", lambda event: event.get("eventID") == "d38ce1b3-4575-4cb8-a632-611b8243bfc3"
    )
    assert failed["event_type"] == "LOGIN_FAILED" and failed["outcome"] == "FAILURE"
    assert failed["failure_reason"] == "Failed authentication"
    assert failed["user_name"] == "anaya" and failed["auth_method"] == "password"
    assert failed["service"] == "signin.amazonaws.com" and failed["realm"] == "111122223333"

    mfa = find("cloudtrail", lambda event: event.get("eventName") == "CheckMfa")
    assert mfa["event_type"] == "MFA_SUCCESS" and mfa["mfa_factor"] == "U2F MFA"

    api_call = find("cloudtrail", lambda event: event.get("eventName") == "EnableMFADevice")
    assert api_call["event_type"] == "OTHER" and api_call["event_type_other"] == "EnableMFADevice"
    assert api_call["outcome"] == "SUCCESS"


def test_mappers_refuse_bad_tenant_ids() -> None:
    sample = next(sample for sample in SAMPLES if sample.kind == "cloudtrail")
    with pytest.raises(InvalidArgumentError, match="tenant_id"):
        map_cloudtrail_event(sample.event, tenant_id="acme corp")
