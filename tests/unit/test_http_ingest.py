"""HTTP ingest decisions without HTTP: tokens, request bodies, the rate limit, OpenAPI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from authtrail.errors import ConfigurationError
from authtrail.ingest_openapi import openapi_document
from authtrail.producers.http_ingest import (
    PATHS,
    BadRequest,
    RateLimiter,
    TokenTable,
    events_of_body,
    new_token_line,
)
from authtrail.producers.ingest import Preflight
from authtrail.schemas.json_schema import auth_event_json_schema

NOW = 1_764_806_400_000_000  # 2025-12-04T00:00:00Z
PREFLIGHT = Preflight(now=lambda: NOW)
DIGEST = hashlib.sha256(b"secret-token").hexdigest()


def table(tmp_path: Path, text: str) -> TokenTable:
    path = tmp_path / "tokens"
    path.write_text(text, encoding="utf-8")
    return TokenTable.load(path)


def test_tokens_grant_one_tenant_and_the_listed_paths(tmp_path: Path) -> None:
    tokens = table(tmp_path, f"# comment\nokta-prod acme okta,events {DIGEST}\n\n")
    grant = tokens.grant_for("secret-token")
    assert grant is not None and (grant.name, grant.tenant_id) == ("okta-prod", "acme")
    assert grant.allows("okta") and grant.allows("events") and not grant.allows("auth0")
    assert tokens.grant_for("secret-tokeN") is None and tokens.grant_for("") is None
    assert "secret" not in (tmp_path / "tokens").read_text()
    every = table(tmp_path, f"all acme * {DIGEST}\n").grant_for("secret-token")
    assert every is not None and every.sources == frozenset(PATHS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "grants nothing"),
        (f"a acme okta {DIGEST} extra\n", "tokens:1: expected NAME TENANT SOURCES SHA256"),
        (f"a 'bad tenant' okta {DIGEST}\n", "expected NAME"),
        (f"a -acme okta {DIGEST}\n", "not a valid tenant id"),
        (f"a acme ldap {DIGEST}\n", "unknown sources ['ldap']"),
        ("a acme okta 1234\n", "64 hex digits"),
        (f"a acme okta {DIGEST[:-1]}x\n", "64 hex digits"),
    ],
)
def test_malformed_token_files_are_refused_with_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        table(tmp_path, text)


def test_new_token_line_round_trips_and_refuses_bad_names(tmp_path: Path) -> None:
    token, line = new_token_line("kc", "acme", "keycloak")
    grant = table(tmp_path, line + "\n").grant_for(token)
    assert grant is not None and grant.sources == {"keycloak"} and token not in line
    with pytest.raises(ConfigurationError):
        new_token_line("two words", "acme")
    with pytest.raises(ConfigurationError):
        new_token_line("kc", "acme", "ldap")


def event(**changes: Any) -> dict[str, Any]:
    base = {"event_id": "svc:1", "event_type": "LOGIN_FAILED", "outcome": "FAILURE",
            "occurred_at": NOW, "user_name": "alice", "client_ip": "192.0.2.1"}  # fmt: skip
    return {**base, **changes}


def body(*values: Any) -> bytes:
    return "\n".join(json.dumps(value) for value in values).encode()


def test_events_path_fills_the_tenant_and_takes_objects_arrays_and_lines() -> None:
    one, _ = events_of_body("events", body(event()), "acme", PREFLIGHT)
    assert one == [{**event(), "tenant_id": "acme"}]
    many, counters = events_of_body(
        "events", body([event(event_id="a"), event(event_id="b")], event(event_id="c")),
        "acme", PREFLIGHT,
    )  # fmt: skip
    assert [item["event_id"] for item in many] == ["a", "b", "c"] and counters.events == 3


@pytest.mark.parametrize(
    ("payload", "status", "reason"),
    [
        (b"\xff", 400, "not UTF-8"),
        (b"{not json", 400, "not JSON"),
        (b"   ", 400, "no JSON value"),
        (body(7), 400, "event 0 is not a JSON object"),
        (body(event(tenant_id="globex")), 403, "this token writes 'acme' only"),
        (body(event(outcome="SUCCESS")), 400, "LOGIN_FAILED requires outcome FAILURE"),
        (body(event(), event(event_id="")), 400, "event 1: event_id must be a non-empty"),
        (body(event(username="x")), 400, "event 0: record does not match"),
        (body(event(occurred_at=NOW + 2 * 86_400_000_000)), 400, "(absurd_timestamp)"),
        (body(event(service="authtrail-lockout")), 400, "(reserved_identity)"),
    ],
)
def test_bad_bodies_are_refused_whole_with_the_reason(
    payload: bytes, status: int, reason: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        events_of_body("events", payload, "acme", PREFLIGHT)
    assert refused.value.status == status and reason in str(refused.value)


def test_provider_paths_map_and_refuse_the_whole_body_for_one_bad_record() -> None:
    okta = {"uuid": "u1", "published": "2025-12-03T10:00:00.000Z",
            "eventType": "user.session.start", "actor": {"alternateId": "bob"},
            "client": {"ipAddress": "198.51.100.7"}, "outcome": {"result": "FAILURE"}}  # fmt: skip
    hook = {"eventType": "com.okta.event_hook", "data": {"events": [okta]}}
    (mapped,), _ = events_of_body("okta", body(hook), "acme", PREFLIGHT)
    assert (mapped["event_id"], mapped["event_type"], mapped["user_name"]) == (
        "okta:u1", "LOGIN_FAILED", "bob",
    )  # fmt: skip
    broken = {**okta, "uuid": "u2", "published": "2017-09-31T22:00:00.000Z"}
    with pytest.raises(BadRequest, match="okta record refused \\(format_error\\): published"):
        events_of_body("okta", body({"data": {"events": [okta, broken]}}), "acme", PREFLIGHT)
    other = {"eventSource": "dynamodb.amazonaws.com", "eventName": "DescribeTable"}
    found, counters = events_of_body("cloudtrail", body({"Records": [other]}), "acme", PREFLIGHT)
    assert found == [] and counters.skipped == {"not_identity": 1}


def test_rate_limiter_known_answers() -> None:
    now = [0.0]
    limiter = RateLimiter(10.0, 20, lambda: now[0])
    assert limiter.take("a", 20) == 0.0
    assert limiter.take("a", 5) == pytest.approx(0.5)  # empty: 5 events at 10/s
    assert limiter.take("b", 1) == 0.0  # buckets are per token
    now[0] = 0.5
    assert limiter.take("a", 5) == 0.0
    assert limiter.take("a", 21) == float("inf")  # larger than any burst: 413


def test_openapi_names_every_path_and_embeds_the_event_schema() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {f"/v1/ingest/{name}" for name in PATHS}
    assert "get" in document["paths"]["/v1/ingest/okta"]
    schema = document["components"]["schemas"]["AuthEvent"]
    generated = auth_event_json_schema()
    assert schema["properties"] == generated["properties"]
    for name in PATHS:
        responses = document["paths"][f"/v1/ingest/{name}"]["post"]["responses"]
        assert {"202", "400", "401", "403", "413", "429", "503"} <= set(responses)
