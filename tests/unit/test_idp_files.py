"""JSON exports of identity providers to AuthEvents: framing, envelopes, skips, stable ids."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from authtrail.errors import FormatError, InvalidArgumentError
from authtrail.producers.idp_files import RecordReader, json_values, read_json_values
from authtrail.producers.ingest import ParseCounters

CONSOLE_LOGIN = {
    "eventVersion": "1.05", "eventTime": "2024-05-01T10:00:00Z",
    "eventSource": "signin.amazonaws.com",
    "eventName": "ConsoleLogin", "sourceIPAddress": "192.0.2.10", "eventID": "ct-1",
    "userIdentity": {"type": "IAMUser", "userName": "alice"}, "eventType": "AwsConsoleSignIn",
    "responseElements": {"ConsoleLogin": "Failure"}, "errorMessage": "Failed authentication",
}  # fmt: skip
OKTA = {
    "uuid": "okta-1", "published": "2024-05-01T10:00:01.000Z", "eventType": "user.session.start",
    "actor": {"alternateId": "bob@example.com"}, "client": {"ipAddress": "198.51.100.7"},
    "outcome": {"result": "SUCCESS"},
}  # fmt: skip


def events(source: str, text: str | bytes) -> tuple[list[dict[str, Any]], ParseCounters]:
    counters = ParseCounters()
    reader = RecordReader(source, "acme", counters)
    data = text.encode() if isinstance(text, str) else text
    return list(reader.events(read_json_values(data, counters))), counters


def test_json_values_reads_lines_arrays_pretty_and_concatenated_and_skips_garbage() -> None:
    counters = ParseCounters()
    text = '{"a": 1}\n[1, 2]\n{\n  "b": {"c": 3}\n}{"d": 4}\nnot json at all\n\ufeff{"e": 5}\n{"f":'
    assert list(json_values(text, counters)) == [
        {"a": 1},
        [1, 2],
        {"b": {"c": 3}},
        {"d": 4},
        {"e": 5},
    ]
    assert counters.skipped == {"not_json": 2}  # the garbage line and the truncated tail


def test_gzip_is_recognised_and_corrupt_gzip_is_refused() -> None:
    document = json.dumps({"Records": [CONSOLE_LOGIN]}).encode()
    plain, _ = events("cloudtrail", document)
    zipped, _ = events("cloudtrail", gzip.compress(document))
    assert zipped == plain and len(plain) == 1
    with pytest.raises(FormatError, match="corrupt gzip"):
        events("cloudtrail", gzip.compress(document)[:-10])


def test_cloudtrail_file_digest_and_services_that_are_not_identity() -> None:
    other = {**CONSOLE_LOGIN, "eventSource": "dynamodb.amazonaws.com", "eventName": "DescribeTable"}
    digest = {"digestStartTime": "2024-05-01T10:00:00Z", "logFiles": []}
    text = json.dumps({"Records": [CONSOLE_LOGIN, other]}) + "\n" + json.dumps(digest)
    found, counters = events("cloudtrail", text)
    assert [(e["event_type"], e["outcome"], e["user_name"], e["client_ip"]) for e in found] == [
        ("LOGIN_FAILED", "FAILURE", "alice", "192.0.2.10")
    ]
    assert found[0]["event_id"] == "aws.cloudtrail:ct-1"
    assert counters.skipped == {"not_identity": 1, "cloudtrail_digest": 1}
    assert (counters.lines, counters.events, counters.parsed) == (3, 1, {"ConsoleLogin": 1})


def test_okta_hook_delivery_api_array_and_single_event_give_the_same_event() -> None:
    hook = {"eventType": "com.okta.event_hook", "data": {"events": [OKTA]}}
    by_hook, _ = events("okta", json.dumps(hook))
    by_array, _ = events("okta", json.dumps([OKTA]))
    by_line, _ = events("okta", json.dumps(OKTA) + "\n")
    assert by_hook == by_array == by_line
    assert by_line[0]["event_id"] == "okta:okta-1" and by_line[0]["user_name"] == "bob@example.com"


def test_auth0_bare_management_api_log_is_read_as_a_log_stream_log() -> None:
    bare = {"log_id": "90020240501", "date": "2024-05-01T10:00:02.000Z", "type": "fp",
            "user_name": "carol", "ip": "203.0.113.9",
            "description": "Wrong password."}  # fmt: skip
    (from_bare,), _ = events("auth0", json.dumps(bare))
    (from_stream,), _ = events("auth0", json.dumps({"log_id": bare["log_id"], "data": bare}))
    assert from_bare["event_id"] == from_stream["event_id"] == "auth0:90020240501"
    assert (from_bare["event_type"], from_bare["user_name"], from_bare["client_ip"]) == (
        "LOGIN_FAILED", "carol", "203.0.113.9",
    )  # fmt: skip


def test_keycloak_log_records_of_other_loggers_are_skipped_and_bad_records_explained() -> None:
    startup = {"timestamp": "2025-10-10T09:00:00Z", "loggerName": "io.quarkus", "message": "a=b"}
    login = {"id": "kc-1", "time": 1758791787360, "type": "LOGIN_ERROR", "realmId": "r",
             "ipAddress": "192.0.2.44", "error": "invalid_user_credentials",
             "details": {"username": "dave"}}  # fmt: skip
    no_time = {"type": "LOGIN", "realmId": "r"}
    text = "\n".join(json.dumps(item) for item in (startup, login, no_time, 7))
    found, counters = events("keycloak", text)
    assert [(e["event_type"], e["user_name"], e["failure_reason"]) for e in found] == [
        ("LOGIN_FAILED", "dave", "invalid_user_credentials")
    ]
    assert counters.skipped == {"not_an_event": 1, "format_error": 1, "not_an_object": 1}


def test_unknown_source_and_bad_tenant_fail_at_once() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown source"):
        RecordReader("ldap", "acme", ParseCounters())
    for source in ("keycloak", "okta", "auth0", "cloudtrail"):
        with pytest.raises(InvalidArgumentError, match="tenant"):
            RecordReader(source, "bad tenant!", ParseCounters())


def test_reading_twice_gives_the_same_ids_and_ids_follow_the_content() -> None:
    no_id = {k: v for k, v in CONSOLE_LOGIN.items() if k != "eventID"}
    text = json.dumps({"Records": [no_id, {**no_id, "sourceIPAddress": "192.0.2.11"}]})
    first, _ = events("cloudtrail", text)
    again, _ = events("cloudtrail", text)
    assert [e["event_id"] for e in first] == [e["event_id"] for e in again]
    assert len({e["event_id"] for e in first}) == 2
    assert all(e["event_id"].startswith("aws.cloudtrail:sha256:") for e in first)
