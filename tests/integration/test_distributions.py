"""Both distributions build as wheels; the producer's installs alone and sends events.

A service owner installs ``authtrail-producer`` into their own environment: here an empty
virtualenv gets only its wheel (and its two dependencies from the package index), then
sends events to the real local broker. The test reads them back with the full product's
codec. chdb, Faust and pyarrow must not be importable there at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from authtrail.broker import LocalBroker
from authtrail.privacy_keys import DirectoryKeyStore
from authtrail.producers.sdk.sealed_values import open_value
from authtrail.topics import TopicSpec, ensure_topics
from tests.integration.broker_fixtures import read_events, running_broker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PRODUCER_SHIPS = ("authtrail/errors.py", "authtrail/schemas/", "authtrail/producers/sdk/",
                  "authtrail/privacy_keys.py", "authtrail/atomic_file.py")  # fmt: skip


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT / "producers"), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    built = {path.name.split("-")[0]: path for path in out.glob("*.whl")}
    assert set(built) == {"authtrail", "authtrail_producer"}, built
    return built


def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return [n for n in archive.namelist() if ".dist-info/" not in n]


def test_the_producer_wheel_holds_the_sdk_schemas_and_errors_only(wheels: dict[str, Path]) -> None:
    files = names(wheels["authtrail_producer"])
    assert "authtrail/producers/sdk/producer.py" in files
    assert "authtrail/schemas/auth_event.avsc" in files
    # Sealing at the source: the shared seal and the directory key store.
    assert "authtrail/producers/sdk/sealed_values.py" in files
    assert "authtrail/privacy_keys.py" in files and "authtrail/atomic_file.py" in files
    assert [f for f in files if not f.startswith(PRODUCER_SHIPS)] == []
    assert not [f for f in files if "__pycache__" in f]


def test_the_full_wheel_installs_everything_under_authtrail_and_nothing_twice(
    wheels: dict[str, Path],
) -> None:
    files = names(wheels["authtrail"])
    assert {f.split("/")[0] for f in files} == {"authtrail"}  # no top-level stream, sinks...
    for module in ("stream/core/merkle.py", "stream/worker/app.py", "sinks/sink.py",
                   "producers/loadgen.py", "cli/main.py", "console/server.py"):  # fmt: skip
        assert f"authtrail/{module}" in files
    assert [f for f in files if f.startswith(PRODUCER_SHIPS)] == []
    # The C speedups (hatch_build.py), so the wheel is for this platform only.
    for extension in ("_speedups", "_hashing", "_native_rows"):
        assert f"authtrail/{extension}{sysconfig.get_config_var('EXT_SUFFIX')}" in files
        assert f"authtrail/{extension}.pyi" in files
    assert "-py3-none-any" not in wheels["authtrail"].name
    with zipfile.ZipFile(wheels["authtrail"]) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = archive.read(metadata).decode()
    assert "Requires-Dist: authtrail-producer==0.1.0" in requires


def _venv(tmp_path_factory: pytest.TempPathFactory, requirement: str) -> Path:
    venv = tmp_path_factory.mktemp("service") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", requirement],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return python


@pytest.fixture(scope="module")
def producer_venv(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory, str(wheels["authtrail_producer"]))


@pytest.fixture(scope="module")
def sealing_venv(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory, f"{wheels['authtrail_producer']}[sealing]")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


SERVICE = """
import importlib.util, json, sys
from authtrail.producers.sdk import AuditProducer, new_event

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
absent = [m for m in ("chdb", "faust", "pyarrow", "clickhouse_connect", "aiokafka")
          if importlib.util.find_spec(m) is not None]
pipeline = importlib.util.find_spec("authtrail.stream") is not None
try:
    from authtrail.producers.sdk import SourceSealing
    sealing = "importable"
except ImportError as exc:
    sealing = str(exc)
producer = AuditProducer(bootstrap, topic)
ids = []
for n in range(count):
    event = new_event("acme", "LOGIN_FAILED", user_id=f"user-{n % 3}", client_ip="192.0.2.7")
    producer.send(event)
    ids.append(event["event_id"])
producer.close()
print(json.dumps({"ids": ids, "present": absent, "pipeline": pipeline, "sealing": sealing,
                  "failed": producer.failed, "acknowledged": producer.acknowledged}))
"""


def test_a_service_with_only_the_producer_wheel_sends_events(
    producer_venv: Path, broker: LocalBroker, tmp_path: Path
) -> None:
    topic = f"events-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, [TopicSpec(topic, partitions=2)])
    result = subprocess.run(
        [str(producer_venv), "-c", SERVICE, broker.bootstrap_servers, topic, "25"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["present"] == [] and report["pipeline"] is False
    assert "pip install 'authtrail-producer[sealing]'" in report["sealing"]  # no extra
    assert report["failed"] == 0 and report["acknowledged"] > 0
    received = read_events(broker.bootstrap_servers, topic, 2, expected_events=25)
    assert [event["event_id"] for _, event in received] == report["ids"]
    assert {key for key, _ in received} == {b"acme"}


SEALING_SERVICE = """
import importlib.util, json, sys
from authtrail.producers.sdk import AuditProducer, SourceSealing, new_event

bootstrap, topic, keys, policy = sys.argv[1:5]
absent = [m for m in ("chdb", "faust", "pyarrow", "clickhouse_connect", "aiokafka")
          if importlib.util.find_spec(m) is not None]
sealing = SourceSealing.from_files(keys, policy)
with AuditProducer(bootstrap, topic, sealing=sealing) as producer:
    producer.send(new_event("acme", "LOGIN_FAILED", event_id="e1", user_id="u-1",
                            user_name="alice@example.com", client_ip="192.0.2.7"))
print(json.dumps({"present": absent, "acknowledged": producer.acknowledged}))
"""


def test_a_service_with_the_sealing_extra_seals_at_the_source(
    sealing_venv: Path, broker: LocalBroker, tmp_path: Path
) -> None:
    topic = f"events-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, [TopicSpec(topic, partitions=1)])
    policy = tmp_path / "privacy.json"
    policy.write_text(json.dumps({"tenants": {"acme": {}}}))
    result = subprocess.run(
        [str(sealing_venv), "-c", SEALING_SERVICE, broker.bootstrap_servers, topic,
         str(tmp_path / "privacy"), str(policy)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["present"] == [] and report["acknowledged"] == 1
    ((_, event),) = read_events(broker.bootstrap_servers, topic, 1, expected_events=1)
    # The worker's store (this process's code) opens what the service's wheel sealed.
    key = DirectoryKeyStore(tmp_path / "privacy").key_for("acme", "id:u-1")
    for field, clear in (("user_name", "alice@example.com"), ("client_ip", "192.0.2.7")):
        assert open_value(key, "acme", "e1", field, event[field]) == clear
