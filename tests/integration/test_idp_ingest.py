"""Acceptance: each identity provider's real samples through `authtrail ingest` into `events`.

Keycloak, Okta, Auth0 and CloudTrail samples from ``../shared/realdata`` (or
``$AUTHTRAIL_REALDATA``; see SOURCES.txt there; the module skips when absent) are written
as a user would have them (Keycloak's JSON, Okta's event hook delivery and NDJSON, Auth0's
log stream batch, a gzipped CloudTrail log file), ingested with the CLI into the real
local broker, sequenced by a real worker, and stored by the sink. Expected values are
read from the raw samples here, not from the mapper: who (``user_name``), from where
(``client_ip``), what (``event_type``) and the outcome, keyed by the provider's own id.
Each file is ingested twice: the second pass repeats the event ids and stores nothing.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authtrail.cli.main import main as authtrail
from authtrail.sinks.backend import ClickHouseBackend
from tests.integration import test_pipeline
from tests.integration.broker_fixtures import read_events
from tests.integration.test_pipeline import Pipeline, Store, _store
from tests.realdata import REALDATA

# The pipeline test's fixtures: a broker per module, fresh topics and keys per test.
broker = test_pipeline.broker
pipeline = test_pipeline.pipeline
store = test_pipeline.store

pytestmark = pytest.mark.integration

if not (REALDATA / "keycloak").is_dir():
    pytest.skip(f"real data not present at {REALDATA}", allow_module_level=True)

TENANT = "idp"


def load(relative: str) -> Any:
    return json.loads((REALDATA / relative).read_text(encoding="utf-8"))


def write_inputs(directory: Path) -> dict[str, tuple[Path, dict[str, tuple[Any, ...]], int]]:
    """Per source: the input file, {event id: (who, from where, what, outcome)} expected
    from the raw samples, and how many records the file holds that must be sent."""
    inputs = {}
    # Keycloak: the samples that are JSON as Keycloak wrote it (event listener output,
    # Quarkus JSON log records), verbatim, one after the other as in a log file.
    keycloak = [item for item in load("keycloak/keycloak_event_samples.json")["samples"]
                if item["format"] in ("keycloak_event_json", "quarkus_json_log_line")]  # fmt: skip
    path = directory / "keycloak.json"
    path.write_text("\n".join(item["raw"] for item in keycloak) + "\n", encoding="utf-8")
    expected = {}
    for item in keycloak:
        event = item["event"]
        if "id" in event:
            failed = bool(event.get("error")) or event.get("type", "").endswith("_ERROR")
            ip = event.get("ipAddress") or event.get("authDetails", {}).get("ipAddress")
            expected[f"keycloak:{event['id']}"] = (
                (event.get("details") or {}).get("username") or event.get("username"), ip, None,
                "FAILURE" if failed else "SUCCESS",
            )  # fmt: skip
    inputs["keycloak"] = (path, expected, len(keycloak))

    # Okta: the docs' LogEvent (its date, 2017-09-31, does not exist: refused), the docs'
    # event hook delivery, and Panther's brute-force scenario as NDJSON.
    docs = load("idp_events/okta_docs_logevent_samples.json")["samples"]
    brute = next(s for s in load("idp_events/panther_test_scenarios.json")["scenarios"]
                 if s["file"].endswith("brute_force_logins.yml"))["logs"]  # fmt: skip
    path = directory / "okta.ndjson"
    lines = [docs[0]["event"], docs[1]["event"], *brute]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    expected = {}
    for event in [*docs[1]["event"]["data"]["events"], *brute]:
        result = event["outcome"]["result"]
        what = "LOGIN_FAILED" if result == "FAILURE" else "LOGIN"
        assert event["eventType"] == "user.session.start"
        expected[f"okta:{event['uuid']}"] = (
            event["actor"]["alternateId"], event["client"]["ipAddress"], what,
            "FAILURE" if result == "FAILURE" else "SUCCESS",
        )  # fmt: skip
    inputs["okta"] = (path, expected, len(expected))

    # Auth0: a log stream batch (a JSON array), one of them in an EventBridge envelope.
    logs = [item["event"] for item in load("idp_events/auth0_log_samples.json")["samples"]]
    path = directory / "auth0.json"
    path.write_text(json.dumps(logs, indent=2), encoding="utf-8")
    expected = {}
    for log in logs:
        body = log.get("detail", log)
        data = body["data"]
        success = data["type"] == "s"
        expected[f"auth0:{body['log_id']}"] = (
            data.get("user_name"), data.get("ip"), "LOGIN" if success else "LOGIN_FAILED",
            "SUCCESS" if success else "FAILURE",
        )  # fmt: skip
    inputs["auth0"] = (path, expected, len(logs))

    # CloudTrail: one gzipped log file of every documented sign-in record.
    examples = load("aws_cloudtrail/consolelogin_examples_awsdocs.json")["examples"]
    records = [record for example in examples
               for record in example["event"].get("Records", [example["event"]])]  # fmt: skip
    path = directory / "cloudtrail.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"Records": records}).encode()))
    expected = {}
    for record in records:
        response = (record.get("responseElements") or {}).get(record["eventName"])
        outcome = {"Success": "SUCCESS", "Failure": "FAILURE"}.get(response, "SUCCESS")
        what = {"ConsoleLogin": "LOGIN_FAILED" if outcome == "FAILURE" else "LOGIN"}.get(
            record["eventName"]
        )
        expected[f"aws.cloudtrail:{record['eventID']}"] = (
            record["userIdentity"].get("userName"), record["sourceIPAddress"], what, outcome,
        )  # fmt: skip
    inputs["cloudtrail"] = (path, expected, len(records))
    return inputs


def ingest(
    pipeline: Pipeline, source: str, path: Path, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    argv = ["--data-dir", str(pipeline.settings.data_dir), "ingest", source, str(path),
            "--tenant", TENANT, "--json"]  # fmt: skip
    assert authtrail(argv) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err  # nothing here will be refused
    report: dict[str, Any] = json.loads(captured.out)
    return report


def stored_rows(store: Store) -> Iterator[dict[str, Any]]:
    backend = store.open()
    try:
        yield from backend.query_arrow(
            "SELECT event_id, source, event_type, outcome, user_name, client_ip, "
            "source_event_type FROM events WHERE tenant_id = 'idp' "
            "AND NOT startsWith(event_id, 'authtrail-lockout:')"
        ).to_pylist()
    finally:
        backend.close()


class HttpIngest:
    """The same inputs through `authtrail ingest-http`, as the providers would post them:
    Keycloak's and Okta's one event (hook delivery) per request, Auth0's batch and the
    CloudTrail file in one."""

    def __init__(self, pipeline: Pipeline, tmp_path: Path) -> None:
        from authtrail.ingest_http import IngestHttpServer, IngestService
        from authtrail.producers.http_ingest import TokenTable, new_token_line
        from authtrail.producers.sdk import AuditProducer

        self.token, line = new_token_line("providers", TENANT)
        (tmp_path / "tokens").write_text(line + "\n", encoding="utf-8")
        settings = pipeline.settings
        self.producer = AuditProducer(settings.bootstrap_servers or "", settings.events_topic)
        service = IngestService(TokenTable.load(tmp_path / "tokens"), self.producer)
        self.server = IngestHttpServer(service).start()

    def post(self, source: str, body: bytes) -> tuple[int, dict[str, Any]]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            f"{self.server.url}/v1/ingest/{source}", data=body, method="POST",
            headers={"Authorization": f"Bearer {self.token}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def ingest(self, source: str, path: Path) -> dict[str, Any]:
        from authtrail.producers.idp_files import json_values
        from authtrail.producers.ingest import ParseCounters

        data = path.read_bytes()
        data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        if source in ("keycloak", "okta"):
            values = list(json_values(data.decode(), ParseCounters()))
            bodies = [json.dumps(value).encode() for value in values]
        else:
            bodies = [data]
        report: dict[str, Any] = {"acknowledged": 0, "refused": []}
        for body in bodies:
            status, answer = self.post(source, body)
            if status == 202:
                report["acknowledged"] += answer["accepted"]
            else:
                report["refused"].append((status, answer["error"]))
        return report

    def close(self) -> None:
        self.server.stop()
        self.producer.close()


@pytest.mark.parametrize("via", ["file", "http"])
@pytest.mark.parametrize("store", ["embedded"], indirect=True)
def test_every_provider_reaches_the_events_table_once_with_who_where_what_outcome(
    pipeline: Pipeline, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, via: str,
) -> None:  # fmt: skip
    for name, value in pipeline.environment.items():
        if name.startswith("AUTHTRAIL_"):
            monkeypatch.setenv(name, value)
    pipeline.start_worker()
    inputs = write_inputs(tmp_path)
    http = HttpIngest(pipeline, tmp_path) if via == "http" else None
    try:
        reports = {}
        for _ in range(2):  # the second pass repeats every event id
            for source, (path, _expected, records) in inputs.items():
                if http is None:
                    report = ingest(pipeline, source, path, capsys)
                    assert report["sent"] == records, (source, report)
                else:
                    report = http.ingest(source, path)
                assert report["acknowledged"] == records, (source, report)
                assert reports.setdefault(source, report) == report  # the same both times
        if http is None:
            assert reports["okta"]["skipped"] == {"format_error": 1}  # 2017-09-31
            assert "2017-09-31" in reports["okta"]["first_errors"]["format_error"]
            assert reports["cloudtrail"]["parsed"]["ConsoleLogin"] == 6
        else:
            ((status, reason),) = reports["okta"]["refused"]  # the same record, refused
            assert status == 400 and "2017-09-31" in reason
            assert all(not reports[source]["refused"] for source in inputs if source != "okta")

        # A last event after everything: once it is stored, so is all that came before.
        marker = {"Records": [{"eventTime": "2024-01-01T00:00:00Z", "eventID": "marker",
                  "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin",
                  "eventType": "AwsConsoleSignIn"}]}  # fmt: skip
        (tmp_path / "marker.json").write_text(json.dumps(marker), encoding="utf-8")
        if http is None:
            ingest(pipeline, "cloudtrail", tmp_path / "marker.json", capsys)
        else:
            assert http.ingest("cloudtrail", tmp_path / "marker.json")["acknowledged"] == 1
    finally:
        if http is not None:
            http.close()

    def marker_stored(backend: ClickHouseBackend) -> bool:
        query = "SELECT count() FROM events WHERE event_id = 'aws.cloudtrail:marker'"
        return bool(backend.query_arrow(query).column(0)[0].as_py())

    expected = {key: value for _, want, _ in inputs.values() for key, value in want.items()}
    keycloak_without_id = inputs["keycloak"][2] - len(inputs["keycloak"][1])
    _store(pipeline, store, len(expected) + keycloak_without_id + 1, 240, until=marker_stored)

    rows = list(stored_rows(store))
    ids = [row["event_id"] for row in rows]
    assert len(ids) == len(set(ids))  # the second pass stored nothing
    assert len(rows) == len(expected) + keycloak_without_id + 1
    by_id = {row["event_id"]: row for row in rows}
    assert set(expected) <= set(by_id)
    for event_id, (who, where, what, outcome) in expected.items():
        row = by_id[event_id]
        assert (row["user_name"], row["client_ip"], row["outcome"]) == (who, where, outcome)
        if what is not None:
            assert row["event_type"] == what, event_id
    sources = {row["source"] for row in rows}
    assert sources == {"keycloak", "okta", "auth0", "aws.cloudtrail"}
    failed_okta = [r for r in rows if r["source"] == "okta" and r["outcome"] == "FAILURE"]
    want = [key for key, value in inputs["okta"][1].items() if value[3] == "FAILURE"]
    assert sorted(r["event_id"] for r in failed_okta) == sorted(want) and len(want) >= 9


def test_follow_and_stdin_send_the_same_events_as_the_file(
    broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import io
    import threading
    import time
    import uuid

    from authtrail.producers.idp_files import run_idp_ingest
    from authtrail.topics import TopicSpec, ensure_topics

    inputs = write_inputs(tmp_path)
    path, expected, _ = inputs["okta"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    topics = []
    for _ in range(3):
        topics.append(f"idp-{uuid.uuid4().hex[:10]}")
        ensure_topics(broker.bootstrap_servers, [TopicSpec(topics[-1], 1)])
    common = {"bootstrap_servers": broker.bootstrap_servers, "tenant_id": TENANT}
    run_idp_ingest("okta", path, topic=topics[0], **common)

    grown = tmp_path / "growing.ndjson"
    grown.write_text("".join(lines[:3]), encoding="utf-8")
    stop = threading.Event()
    thread = threading.Thread(target=run_idp_ingest, args=("okta", grown), kwargs={
        "topic": topics[1], "follow": True, "poll_interval": 0.05, "stop": stop.is_set,
        **common})  # fmt: skip
    thread.start()
    try:
        time.sleep(0.3)
        with grown.open("a", encoding="utf-8") as handle:
            handle.writelines(lines[3:])
        followed = read_events(broker.bootstrap_servers, topics[1], 1, len(expected))
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    argv = ["ingest", "okta", "-", "--tenant", TENANT, "--json",
            "--bootstrap-servers", broker.bootstrap_servers]  # fmt: skip
    monkeypatch.setenv("AUTHTRAIL_EVENTS_TOPIC", topics[2])
    assert authtrail(argv) == 0
    assert json.loads(capsys.readouterr().out)["acknowledged"] == len(expected)

    by_file, by_stdin = (
        read_events(broker.bootstrap_servers, topic, 1, len(expected)) for topic in topics[::2]
    )
    ids = [[event["event_id"] for _, event in got] for got in (by_file, followed, by_stdin)]
    assert ids[0] == ids[1] == ids[2] and sorted(ids[0]) == sorted(expected)

    follow_cloudtrail = ["ingest", "cloudtrail", "x.json", "--tenant", TENANT, "--follow",
                         "--bootstrap-servers", broker.bootstrap_servers]  # fmt: skip
    assert authtrail(follow_cloudtrail) == 2
    assert "--follow does not apply to cloudtrail" in capsys.readouterr().err
