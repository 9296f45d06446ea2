"""`authtrail ingest-http` over real HTTP into the real local broker.

Status codes with their reasons, 202 only with the events in Kafka, the spool path, Okta's
verification handshake, OpenAPI, and the CLI's refusal to start without a token file.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authtrail.broker import LocalBroker
from authtrail.cli.main import main as authtrail
from authtrail.errors import ConfigurationError
from authtrail.ingest_http import IngestHttpServer, IngestService
from authtrail.privacy import source_sealing
from authtrail.privacy_keys import DirectoryKeyStore
from authtrail.producers.http_ingest import RateLimiter, TokenTable, new_token_line
from authtrail.producers.sdk import AuditProducer, SourceSealing
from authtrail.producers.sdk.sealed_values import is_sealed, open_value
from authtrail.schemas import AUTH_EVENT, load_schema
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.settings import Settings
from authtrail.topics import TopicSpec, ensure_topics
from tests.integration.broker_fixtures import read_topic, running_broker

pytestmark = pytest.mark.integration

CODEC = SingleObjectCodec(load_schema(AUTH_EVENT))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


class Client:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def request(
        self, method: str, path: str, payload: Any = None, token: str | None = None,
        headers: dict[str, str] | None = None, raw: bytes | None = None,
    ) -> tuple[int, dict[str, Any], Any]:  # fmt: skip
        data = raw if raw is not None else None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token if token is None else token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read())


def start(
    broker: LocalBroker,
    tmp_path: Path,
    *,
    spool: bool = False,
    burst: int = 20,
    sealing: SourceSealing | None = None,
) -> Iterator[tuple[Client, str, str]]:
    topic = f"http-{uuid.uuid4().hex[:10]}"
    ensure_topics(broker.bootstrap_servers, [TopicSpec(topic, 1)])
    token, line = new_token_line("okta-prod", "acme", "okta,events")
    other, other_line = new_token_line("kc", "acme", "keycloak")
    (tmp_path / "tokens").write_text(f"{line}\n{other_line}\n", encoding="utf-8")
    producer = AuditProducer(  # bare, as authtrail/ingest_http.py builds it
        broker.bootstrap_servers, topic, spool_dir=tmp_path / "spool" if spool else None,
        envelope_bytes=0,
    )  # fmt: skip
    service = IngestService(
        TokenTable.load(tmp_path / "tokens"), producer, spooled=spool, max_body_bytes=4096,
        limiter=RateLimiter(0.01, burst, time.monotonic), sealing=sealing,
    )  # fmt: skip
    server = IngestHttpServer(service).start()
    try:
        yield Client(server.url, token), other, topic
    finally:
        server.stop()
        producer.close()


@pytest.fixture
def served(broker: LocalBroker, tmp_path: Path) -> Iterator[tuple[Client, str, str]]:
    yield from start(broker, tmp_path)


def event(event_id: str, **changes: Any) -> dict[str, Any]:
    return {"event_id": event_id, "event_type": "LOGIN", "outcome": "SUCCESS",
            "occurred_at": time.time_ns() // 1000, "user_name": "alice",
            "client_ip": "192.0.2.1", **changes}  # fmt: skip


def topic_ids(broker: LocalBroker, topic: str, count: int) -> list[str]:
    messages = read_topic(broker.bootstrap_servers, topic, 1, count, timeout=10)
    return [CODEC.decode(message.value())["event_id"] for message in messages]


def test_202_only_with_the_events_in_kafka_and_refusals_send_nothing(
    broker: LocalBroker, served: tuple[Client, str, str]
) -> None:
    client, other_token, topic = served
    status, _, answer = client.request("POST", "/v1/ingest/events", [event("a"), event("b")])
    assert (status, answer["accepted"], answer["held_by"]) == (202, 2, "kafka")
    assert topic_ids(broker, topic, 2) == ["a", "b"]  # there when 202 came back

    refusals = [
        (client.request("POST", "/v1/ingest/events", [event("c"), event("d", outcome="X")]),
         400, "event 1: record does not match"),
        (client.request("POST", "/v1/ingest/events", event("e", tenant_id="globex")),
         403, "writes 'acme' only"),
        (client.request("POST", "/v1/ingest/events", event("f"), token="wrong"),
         401, "missing or unknown bearer token"),
        (client.request("POST", "/v1/ingest/keycloak", {"type": "LOGIN"}),
         403, "may not use /v1/ingest/keycloak"),
        (client.request("POST", "/v1/ingest/auth0", {}, token=other_token),
         403, "may not use /v1/ingest/auth0"),
        (client.request("POST", "/v1/ingest/events", raw=b"x" * 5000),
         413, "body larger than 4096 bytes"),
        (client.request("POST", "/v1/ingest/ldap", {}), 404, "no such path"),
        (client.request("GET", "/v1/ingest/events"), 405, "use POST"),
    ]  # fmt: skip
    for (status, _headers, answer), want_status, want_reason in refusals:
        assert status == want_status and want_reason in answer["error"], answer
    assert 'Bearer realm="authtrail-ingest"' in refusals[2][0][1]["WWW-Authenticate"]
    assert topic_ids(broker, topic, 3) == ["a", "b"]  # nothing of the refused bodies


def test_okta_hook_handshake_then_delivery_and_openapi(
    broker: LocalBroker, served: tuple[Client, str, str]
) -> None:
    client, other_token, topic = served
    challenge = {"X-Okta-Verification-Challenge": "cnM2Y4Gm1S"}
    status, _, answer = client.request("GET", "/v1/ingest/okta", headers=challenge)
    assert (status, answer) == (200, {"verification": "cnM2Y4Gm1S"})
    status, _, _ = client.request("GET", "/v1/ingest/okta", headers=challenge, token="nope")
    assert status == 401
    status, _, _ = client.request("GET", "/v1/ingest/okta", headers=challenge, token=other_token)
    assert status == 405  # that token may not use okta: no echo
    published = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    hook = {"eventType": "com.okta.event_hook", "data": {"events": [
        {"uuid": "u-1", "published": published, "eventType": "user.session.start",
         "actor": {"alternateId": "bob@example.com"}, "client": {"ipAddress": "198.51.100.7"},
         "outcome": {"result": "FAILURE", "reason": "INVALID_CREDENTIALS"}}]}}  # fmt: skip
    status, _, answer = client.request("POST", "/v1/ingest/okta", hook)
    assert (status, answer["event_ids"]) == (202, ["okta:u-1"])
    (stored,) = [CODEC.decode(m.value()) for m in read_topic(broker.bootstrap_servers, topic, 1, 1)]
    assert (stored["tenant_id"], stored["user_name"], stored["client_ip"], stored["outcome"]) == (
        "acme", "bob@example.com", "198.51.100.7", "FAILURE",
    )  # fmt: skip
    status, _, document = client.request("GET", "/openapi.json")
    assert status == 200 and "/v1/ingest/okta" in document["paths"]


def test_rate_limit_answers_429_with_retry_after(
    broker: LocalBroker, served: tuple[Client, str, str]
) -> None:
    client, _, _ = served
    status, _, _ = client.request("POST", "/v1/ingest/events", [event(f"r{i}") for i in range(20)])
    assert status == 202
    status, headers, answer = client.request("POST", "/v1/ingest/events", event("r20"))
    assert status == 429 and int(headers["Retry-After"]) >= 1 and "rate limit" in answer["error"]


def test_with_a_spool_202_means_on_disk_and_delivery_follows(
    broker: LocalBroker, tmp_path: Path
) -> None:
    for client, _, topic in start(broker, tmp_path, spool=True):
        status, _, answer = client.request("POST", "/v1/ingest/events", [event("s1"), event("s2")])
        assert (status, answer["held_by"]) == (202, "spool")
        assert topic_ids(broker, topic, 2) == ["s1", "s2"]


def test_cli_needs_a_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--data-dir", str(tmp_path), "ingest-http", "--bootstrap-servers", "127.0.0.1:9"]
    assert authtrail(argv) == 2
    assert "cannot read token file" in capsys.readouterr().err
    assert authtrail(["--data-dir", str(tmp_path), "ingest-token", "kc", "--tenant", "acme"]) == 0
    token = capsys.readouterr().out.strip()
    tokens = tmp_path / "ingest-tokens"
    assert (tokens.stat().st_mode & 0o777) == 0o600 and token not in tokens.read_text()
    assert TokenTable.load(tokens).grant_for(token) is not None
    assert authtrail(["ingest-http", "--openapi"]) == 0
    assert json.loads(capsys.readouterr().out)["openapi"] == "3.1.0"


def test_sealing_sends_the_policy_fields_sealed_and_refuses_before_sending(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """`ingest-http --seal` (and `up` with a privacy policy): a request's events are sealed
    before any is sent, so the topic never holds the clear values; a sealed-looking input
    value is a 400 and a failing key store a 503, with nothing sent either way."""
    policy = tmp_path / "privacy.json"
    policy.write_text(json.dumps({"tenants": {"acme": {}}}), encoding="utf-8")
    keys = tmp_path / "privacy"
    sealing = SourceSealing.from_files(keys, policy)
    served = start(broker, tmp_path, sealing=sealing)
    client, _, topic = next(served)
    try:
        status, _, answer = client.request("POST", "/v1/ingest/events", [event("s1")])
        assert (status, answer["event_ids"]) == (202, ["s1"]), answer
        [message] = read_topic(broker.bootstrap_servers, topic, 1, 1, timeout=10)
        raw = message.value() or b""
        assert b"alice" not in raw and b"192.0.2.1" not in raw
        sent = CODEC.decode(raw)
        key = DirectoryKeyStore(keys).key_for("acme", "name:alice")
        for field, clear in (("user_name", "alice"), ("client_ip", "192.0.2.1")):
            assert is_sealed(sent[field])
            assert open_value(key, "acme", "s1", field, sent[field]) == clear

        looks_sealed = event("s2", user_agent="authtrail-sealed-v1:00:AA==:AA==")
        status, _, answer = client.request("POST", "/v1/ingest/events", [event("s3"), looks_sealed])
        assert status == 400 and "starts with" in answer["error"], answer

        (keys / "acme").rename(tmp_path / "moved")  # the store's tenant directory ...
        (keys / "acme").write_text("not a directory")  # ... is no directory any more
        status, _, answer = client.request("POST", "/v1/ingest/events", [event("s4")])
        assert status == 503 and "key store" in answer["error"], answer
        assert topic_ids(broker, topic, 2) == ["s1"]  # s3 and s4 were never sent
    finally:
        served.close()


def test_seal_without_a_policy_file_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="AUTHTRAIL_PRIVACY_POLICY_FILE"):
        source_sealing(Settings(data_dir=tmp_path))
