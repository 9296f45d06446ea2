"""The generated JSON Schema of the auth event: in sync, and agreeing with the pipeline.

Known answers: events the SDK and the worker accept (hand-made, and every real OpenSSH /
identity-provider sample when ``../shared/realdata`` is present) validate. Tampered
variants, each breaking one rule, are refused by the schema *and* by the SDK's or the
worker's own check, so the schema is neither looser nor stricter on them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from authtrail.errors import InvalidArgumentError
from authtrail.producers.sdk import events as sdk
from authtrail.producers.sshd import iter_events
from authtrail.schemas import AUTH_EVENT, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.schemas.json_schema import PIPELINE_RULES, auth_event_json_schema, main, render
from authtrail.stream.worker.admission import Limits, RejectedEvent, check_event
from tests.realdata import REALDATA

CHECKED_IN = Path(__file__).resolve().parents[2] / "schemas" / "auth_event.schema.json"
VALIDATOR = Draft202012Validator(auth_event_json_schema())
CODEC = SingleObjectCodec(load_schema(AUTH_EVENT))
NOW = 1_764_806_400_000_000  # 2025-12-04T00:00:00Z


def pipeline_accepts(event: dict[str, Any]) -> bool:
    """The SDK's checks, the Avro encoding, and the worker's admission, as in production."""
    try:
        sdk.validate_event(event)
        value = CODEC.encode(event)
        check_event(event, record_bytes=len(value), record_timestamp_micros=NOW)
    except (InvalidArgumentError, RejectedEvent):
        return False
    return True


def test_checked_in_file_is_the_generated_schema(tmp_path: Path) -> None:
    assert CHECKED_IN.read_text(encoding="utf-8") == render(), "stale: run make json-schema"
    assert main(["--check", str(CHECKED_IN)]) == 0
    stale = tmp_path / "stale.json"
    stale.write_text(render().replace('"LOGIN",', '"SIGN_IN",', 1), encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    Draft202012Validator.check_schema(json.loads(CHECKED_IN.read_text(encoding="utf-8")))


def test_pipeline_rules_are_the_pipelines_constants() -> None:
    limits = Limits()
    assert PIPELINE_RULES["tenant_id"]["pattern"] == f"^{sdk.TENANT_ID_PATTERN.pattern}$"
    assert PIPELINE_RULES["event_id"]["maxLength"] == limits.max_id_chars
    assert PIPELINE_RULES["occurred_at"]["minimum"] == limits.earliest_micros
    avro_fields = [field["name"] for field in load_schema(AUTH_EVENT)["fields"]]
    assert list(auth_event_json_schema()["properties"]) == avro_fields
    assert auth_event_json_schema()["required"] == [
        "event_id", "tenant_id", "event_type", "occurred_at",
    ]  # fmt: skip


def good() -> dict[str, Any]:
    return sdk.new_event(
        "acme", "LOGIN_FAILED", event_id="okta:1", occurred_at=NOW, user_name="alice",
        client_ip="192.0.2.1", received_at=None, attributes={"client.city": "Paris"},
    )  # fmt: skip


TAMPERED: dict[str, Callable[[dict[str, Any]], None]] = {
    "no event_id": lambda e: e.pop("event_id"),
    "empty event_id": lambda e: e.update(event_id=""),
    "blank event_id": lambda e: e.update(event_id="   "),
    "event_id too long": lambda e: e.update(event_id="x" * 257),
    "tenant with a space": lambda e: e.update(tenant_id="ac me"),
    "tenant too long": lambda e: e.update(tenant_id="a" * 129),
    "unknown event type": lambda e: e.update(event_type="SIGN_IN"),
    "unknown outcome": lambda e: e.update(outcome="MAYBE"),
    "LOGIN_FAILED with SUCCESS": lambda e: e.update(outcome="SUCCESS"),
    "event_type_other without OTHER": lambda e: e.update(event_type_other="x"),
    "occurred_at as text": lambda e: e.update(occurred_at="2025-12-04T00:00:00Z"),
    "occurred_at before 2000": lambda e: e.update(occurred_at=946_684_799_999_999),
    "occurred_at in milliseconds": lambda e: e.update(occurred_at=NOW // 1000),
    "unknown field": lambda e: e.update(username="alice"),
    "Avro JSON union": lambda e: e.update(user_name={"string": "alice"}),
    "attribute not text": lambda e: e.update(attributes={"port": 22}),
    "no occurred_at": lambda e: e.pop("occurred_at"),
}


def test_a_good_event_validates_and_the_pipeline_accepts_it() -> None:
    event = good()
    VALIDATOR.validate(event)
    assert pipeline_accepts(event)
    other = {**event, "event_type": "OTHER", "outcome": "UNKNOWN", "event_type_other": "x"}
    VALIDATOR.validate(other)
    assert pipeline_accepts(other)


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_each_tampered_variant_is_refused_by_schema_and_pipeline(name: str) -> None:
    event = good()
    TAMPERED[name](event)
    assert not VALIDATOR.is_valid(event), name
    assert not pipeline_accepts(event), name


@pytest.mark.skipif(not (REALDATA / "loghub").is_dir(), reason="no real data")
def test_every_real_sample_that_maps_validates() -> None:
    from authtrail.producers.idp_files import RecordReader, read_json_values
    from authtrail.producers.ingest import ParseCounters

    with (REALDATA / "loghub" / "OpenSSH_2k.log").open(encoding="utf-8") as lines:
        events = list(iter_events(lines, tenant_id="labsz", year=2016))
    for relative, source in [
        ("idp_events/okta_docs_logevent_samples.json", "okta"),
        ("idp_events/panther_aws_cloudtrail_test_events.json", "cloudtrail"),
        ("idp_events/auth0_log_samples.json", "auth0"),
        ("keycloak/keycloak_event_samples.json", "keycloak"),
    ]:
        document = json.loads((REALDATA / relative).read_text(encoding="utf-8"))
        logs = [test["log"] for rule in document.get("rules", []) for test in rule["tests"]]
        logs += [sample["event"] for sample in document.get("samples", [])]
        reader = RecordReader(source, "acme", ParseCounters())
        found = list(reader.events(read_json_values(json.dumps(logs).encode(), ParseCounters())))
        assert found, relative
        events += found
    assert len(events) > 2008 + 20
    for event in events:
        VALIDATOR.validate(event)
