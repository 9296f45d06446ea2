"""Retention that runs on its own (authtrail/retention_schedule.py), its flags, and the
retention of the topics that hold clear text (stream/worker/app.py ``topic_specs``).

The passes themselves run against the real store in tests/integration/test_retention_all.py
and inside ``authtrail up`` in tests/integration/test_retention_schedule.py.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import pytest

from authtrail.cli.commands import _retention_every
from authtrail.cli.retention import parse_duration
from authtrail.errors import ConfigurationError
from authtrail.retention import RetentionOutcome, RetentionPeriods, retention_periods
from authtrail.retention_schedule import RetentionSchedule, TenantRetention
from authtrail.settings import Settings
from authtrail.stream.worker.app import topic_specs
from authtrail.topics import clear_text_bound_ms, transient_topic_config

DAY_MS = 86_400_000


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("1h", 3600.0), ("1d", 86400.0),
     ("0.5", 0.5), ("1.5h", 5400.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "0", "-1h", "1w", "soon", "inf", "nan", "1 h"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration"):
        parse_duration(text)


def test_retention_every_flag_then_environment_then_an_hour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AUTHTRAIL_RETENTION_EVERY", raising=False)
    assert _retention_every(None) == 3600.0
    assert _retention_every(0.0) == 0.0
    monkeypatch.setenv("AUTHTRAIL_RETENTION_EVERY", "120")
    assert (_retention_every(None), _retention_every(5.0)) == (120.0, 5.0)
    monkeypatch.setenv("AUTHTRAIL_RETENTION_EVERY", "hourly")
    with pytest.raises(ConfigurationError, match="AUTHTRAIL_RETENTION_EVERY"):
        _retention_every(None)
    with pytest.raises(ConfigurationError, match=">= 0"):
        _retention_every(-1.0)


def test_retention_periods(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    assert retention_periods(None) == RetentionPeriods(None, {}, None)
    policy.write_text('{"tenants": {"acme": {}}}')
    assert retention_periods(policy) == RetentionPeriods(None, {}, None)
    policy.write_text('{"retention_days": {"default": 365, "tenants": {"acme": 30, "hold": null}}}')
    periods = retention_periods(policy)
    assert periods == RetentionPeriods(365, {"acme": 30, "hold": None}, 365)
    assert [periods.of(name) for name in ("acme", "hold", "other", "authtrail-rejected-3")] == [
        30, None, 365, 365,
    ]  # fmt: skip
    policy.write_text(
        '{"retention_days": {"default": null, "rejected": 14,'
        ' "tenants": {"authtrail-rejected-0": 90, "acme": 30}}}'
    )
    periods = retention_periods(policy)
    names = ("acme", "other", "authtrail-rejected-0", "authtrail-rejected-1")
    assert [periods.of(name) for name in names] == [30, None, 90, 14]
    for bad in ('{"default": 0}', '{"tenants": {"x": true}}', '{"tenants": {"x": 1.5}}',
                '{"tenants": []}', "[]", '{"rejected": 0}', '{"rejected": "7"}'):  # fmt: skip
        policy.write_text(f'{{"retention_days": {bad}}}')
        with pytest.raises(ConfigurationError, match="retention"):
            retention_periods(policy)


def _outcome(**changes: object) -> RetentionOutcome:
    fields = {"tenant_id": "acme", "cut": 512, "statement_seq": 701, "sent": True, "deleted": 512}
    return RetentionOutcome(**(fields | changes))  # type: ignore[arg-type]


def test_what_a_pass_says_of_a_tenant_without_a_period() -> None:
    result = TenantRetention("acme", None, 512, _outcome(sent=False))
    assert result.line() == ("tenant acme (retention no period): retention of records 1..512 "
                             "already recorded at seq 701; 512 records deleted")  # fmt: skip


@pytest.mark.parametrize(
    ("result", "acted", "line"),
    [
        (TenantRetention("acme", 30, 0), False,
         "fewer than 256 records past retention; nothing to do"),
        (TenantRetention("acme", 30, 512, _outcome()), True,
         "retention of records 1..512 recorded at seq 701; 512 records deleted"),
        (TenantRetention("acme", 30, 512, _outcome(sent=False)), True,
         "retention of records 1..512 already recorded at seq 701; 512 records deleted"),
        (TenantRetention("acme", 30, 512, _outcome(sent=False, deleted=0)), False,
         "records 1..512 already pruned; nothing to do"),
        (TenantRetention("acme", 30, 512, _outcome(statement_seq=None, deleted=None)), True,
         "retention of records 1..512 sent, not yet chained and stored; deleted on a next run"),
        (TenantRetention("acme", 30, 512, _outcome(deleted=None)), True,
         "retention of records 1..512 recorded at seq 701; deletion left to `authtrail up`"),
        (TenantRetention("acme", 30, 512, error="broker away"), False,
         "FAILED, retried on the next run: broker away"),
    ],
)  # fmt: skip
def test_what_a_pass_says(result: TenantRetention, acted: bool, line: str) -> None:
    assert result.acted is acted
    assert result.line() == f"tenant acme (retention 30 days): {line}"
    assert result.report()["tenant_id"] == "acme"


def test_the_schedule_survives_a_failed_pass_and_says_only_what_matters() -> None:
    said: list[str] = []
    enough = threading.Event()
    results = iter([
        RuntimeError("store away"),
        [TenantRetention("acme", 30, 512, _outcome()), TenantRetention("globex", 30, 0)],
        [TenantRetention("acme", 30, 512, _outcome(sent=False, deleted=0))],
    ])  # fmt: skip

    def run_pass(stop: object) -> list[TenantRetention]:
        result = next(results, None)
        if result is None:
            enough.set()
            return []
        if isinstance(result, Exception):
            raise result
        return result

    schedule = RetentionSchedule(run_pass, 0.01, said.append).start()
    try:
        assert enough.wait(30)
    finally:
        schedule.stop()
    assert said == [
        "retention: FAILED, retried in 0.01 s: store away",
        "retention: tenant acme (retention 30 days): retention of records 1..512 recorded at "
        "seq 701; 512 records deleted",
    ]
    with pytest.raises(ValueError, match="interval"):
        RetentionSchedule(run_pass, 0, said.append)


def test_clear_text_topics_expire_and_state_topics_never_do() -> None:
    specs = {spec.name: dict(spec.config) for spec in topic_specs(Settings())}
    week = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS), "segment.ms": str(DAY_MS)}
    for name in ("authtrail.events", "authtrail.dead-letter", "authtrail.lockouts"):
        assert specs[name] == week
    for name in ("authtrail.chained", "authtrail.checkpoints"):
        assert specs[name]["retention.ms"] == "-1"
    assert specs["authtrail.chained.snapshots"] == {
        "cleanup.policy": "compact",
        "retention.ms": "-1",
    }
    unset = {spec.name: dict(spec.config) for spec in topic_specs(Settings(topic_retention_ms=0))}
    assert (
        unset["authtrail.events"] == {} and unset["authtrail.chained"] == specs["authtrail.chained"]
    )


def test_transient_topic_config_known_answers() -> None:
    assert transient_topic_config(0) == {}
    assert transient_topic_config(3_600_000)["segment.ms"] == "3600000"  # shorter than a day
    assert transient_topic_config(30 * DAY_MS) == {
        "cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS), "segment.ms": str(DAY_MS),
    }  # fmt: skip


def test_clear_text_bound_known_answers() -> None:
    assert clear_text_bound_ms(0) is None
    assert clear_text_bound_ms(7 * DAY_MS) == 8 * DAY_MS
    assert clear_text_bound_ms(3_600_000) == 7_200_000


def test_topic_retention_setting() -> None:
    assert Settings.from_env({"AUTHTRAIL_TOPIC_RETENTION_MS": "3600000"}).topic_retention_ms == (
        3_600_000
    )
    with pytest.raises(ConfigurationError, match="topic_retention_ms"):
        Settings(topic_retention_ms=-1)
