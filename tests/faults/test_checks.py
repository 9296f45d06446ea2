"""The suite's checks and its report, without running anything: known answers and damage.

The counting in :mod:`tests.faults.tally` decides whether a fault scenario passes, so it
is tested like verification code: a clean log is clean, and each kind of damage (a lost
event, a duplicate, a fork, a gap, a bad message missing from or repeated in
``rejected``, a good one rejected) is counted exactly, alone and together.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.faults.load import BAD_KINDS, bad_message
from tests.faults.report import BEGIN, END, describe_faults, render_section, rewrite_report
from tests.faults.runner import ScenarioResult
from tests.faults.scenarios import SCENARIOS, Fault
from tests.faults.tally import StoredRecord, Tally, tally


def _log(tenants: dict[str, int]) -> list[StoredRecord]:
    return [
        StoredRecord(tenant, seq, bytes([seq % 256]) * 32, f"{tenant}-{seq}")
        for tenant, size in tenants.items()
        for seq in range(1, size + 1)
    ]


CLEAN = _log({"acme": 20, "globex": 5})
ACKNOWLEDGED = [record.event_id for record in CLEAN]


def test_a_clean_log_is_clean() -> None:
    result = tally(
        ACKNOWLEDGED, CLEAN, acknowledged_bad=[(0, 3), (1, 8)], rejected=[(1, 8), (0, 3)]
    )
    assert result == Tally(events=25, stored=25, lost=0, duplicated=0, forked_seqs=0, gaps=0,
                           derived=0, unacknowledged_stored=0, bad=2)  # fmt: skip
    assert result.clean and result.problems() == []


def test_each_kind_of_damage_is_counted() -> None:
    lost = [record for record in CLEAN if record.event_id != "acme-20"]  # the last: no gap
    assert tally(ACKNOWLEDGED, lost).lost == 1
    assert tally(ACKNOWLEDGED, [*CLEAN, CLEAN[3], CLEAN[3]]).duplicated == 2
    forged = StoredRecord("acme", 4, b"\xff" * 32, "forged")
    forked = tally(ACKNOWLEDGED, [*CLEAN, forged])
    assert (forked.forked_seqs, forked.forks, forked.unacknowledged_stored) == (1, 1, 1)
    hole = [record for record in CLEAN if record.event_id != "globex-2"]
    assert (tally(ACKNOWLEDGED, hole).gaps, tally(ACKNOWLEDGED, hole).lost) == (1, 1)
    for damaged in (lost, hole, [*CLEAN, forged], [*CLEAN, CLEAN[0]]):
        assert not tally(ACKNOWLEDGED, damaged).clean


def test_bad_messages_must_be_rejected_exactly_once() -> None:
    bad = [(0, 3), (1, 8), (2, 1)]
    result = tally(ACKNOWLEDGED, CLEAN, acknowledged_bad=bad, rejected=[(0, 3), (0, 3), (9, 9)])
    assert (result.bad_lost, result.bad_duplicated, result.wrongly_rejected) == (2, 1, 1)
    assert result.problems() == [
        "2 bad messages not rejected",
        "1 bad messages rejected twice",
        "1 good messages rejected",
    ]


def test_miskeyed_events_may_be_chained_or_rejected_but_not_both_or_neither() -> None:
    chained, rejected = ("globex-5", (1, 40)), ("m-1", (2, 41))
    neither, both = ("m-2", (2, 42)), ("m-3", (2, 43))
    records = [*CLEAN, StoredRecord("globex", 6, b"\x06" * 32, "m-3")]
    result = tally(
        [i for i in ACKNOWLEDGED if i != "globex-5"],
        records,
        rejected=[(2, 41), (2, 43)],
        acknowledged_either=[chained, rejected, neither, both],
    )
    assert (result.events, result.either, result.either_rejected) == (28, 4, 2)
    assert (result.lost, result.duplicated, result.wrongly_rejected) == (1, 1, 0)


def test_derived_events_count_for_duplicates_and_forks_not_for_acknowledgements() -> None:
    decision = StoredRecord("acme", 21, b"\x01" * 32, "authtrail-lockout:x", derived=True)
    result = tally(ACKNOWLEDGED, [*CLEAN, decision])
    assert (result.derived, result.unacknowledged_stored, result.clean) == (1, 0, True)
    doubled = tally(ACKNOWLEDGED, [*CLEAN, decision, decision])
    assert (doubled.duplicated, doubled.duplicated_derived) == (1, 1)
    assert doubled.problems() == ["1 duplicated (1 made by the pipeline)"]


def test_a_repeated_acknowledged_id_is_refused() -> None:
    with pytest.raises(ValueError, match="repeats"):
        tally([*ACKNOWLEDGED, ACKNOWLEDGED[0]], CLEAN)


def test_bad_messages_never_decode() -> None:
    from authtrail import schemas
    from authtrail.errors import FormatError
    from authtrail.producers.sdk import new_event
    from authtrail.schemas.codec import SingleObjectCodec

    codec = SingleObjectCodec(schemas.load_schema(schemas.AUTH_EVENT))
    good = codec.encode(new_event("acme", "LOGIN", user_name="ada", service="sso"))
    rng = random.Random(5)
    kinds = set()
    for _ in range(500):
        kind, value = bad_message(rng, good)
        kinds.add(kind)
        with pytest.raises(FormatError):
            codec.decode(value)
    assert kinds == set(BAD_KINDS)


def _result(name: str, *, lost: int = 0) -> ScenarioResult:
    result = ScenarioResult(name, 2, 7, verify_exit=0)
    result.faults = [Fault("SIGKILL worker", 1.25, phase="processing"),
                     Fault("SIGKILL worker", 8.0, phase="starting")]  # fmt: skip
    result.tally = Tally(events=1234, stored=1234 - lost, lost=lost, duplicated=0,
                         forked_seqs=0, gaps=0, derived=0, unacknowledged_stored=0)  # fmt: skip
    return result


def test_the_report_rewrites_only_its_section(tmp_path: Path) -> None:
    document = tmp_path / "RELIABILITY.md"
    document.write_text(f"# Title\n\nprose before\n\n{BEGIN}\nold table\n{END}\n\nprose after\n")
    results = [_result("worker_sigkill"), _result("sink_sigkill", lost=3)]
    section = render_section(results, command="python -m tests.faults", seconds=90, commit="c0ffee")
    rewrite_report(document, section)
    text = document.read_text()
    assert text.startswith("# Title\n\nprose before\n\n" + BEGIN)
    assert text.endswith(END + "\n\nprose after\n")
    assert "old table" not in text
    assert (
        "Generated by `python -m tests.faults` on " in text and ", commit c0ffee; 1.5 min" in text
    )
    assert "| `worker_sigkill` | SIGKILL worker 2 times at 1.2-8.0 s (1 processing, 1 starting) " \
           "| 2 | 1,234 | 0 | 0 | 0 | exit 0 | pass |" in text  # fmt: skip
    assert "| **FAIL** |" in text and "* `sink_sigkill`: 3 lost" in text
    rewrite_report(document, section)
    assert document.read_text() == text  # idempotent


def test_a_report_without_markers_gets_a_section_appended(tmp_path: Path) -> None:
    document = tmp_path / "RELIABILITY.md"
    document.write_text("# Title\n")
    rewrite_report(document, f"{BEGIN}\ntable\n{END}")
    assert (
        document.read_text() == f"# Title\n\n## Fault-injection results\n\n{BEGIN}\ntable\n{END}\n"
    )


def test_outages_are_described_by_their_length() -> None:
    faults = [Fault("ClickHouse down", 3.0, 2.5), Fault("ClickHouse down", 9.0, 7.25)]
    assert describe_faults(faults) == "ClickHouse down 2 times for 2.5-7.2 s"
    assert describe_faults([]) == "none"


def test_scenario_names_are_unique_and_cover_the_issue() -> None:
    names = [scenario.name for scenario in SCENARIOS]
    assert len(set(names)) == len(names)
    assert {"worker_sigkill", "sink_sigkill", "worker_sigterm", "broker_pause",
            "clickhouse_outage", "bad_input_flood"} <= set(names)  # fmt: skip
