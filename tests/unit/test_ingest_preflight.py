"""The ingest preflight refuses what the worker refuses (authtrail.stream.worker.admission), before
sending.

Known answers from loghub's OpenSSH_2k.log (``../shared/realdata``; those tests skip when
it is absent): its "Dec 10" lines read in early December of a year are refused as
``absurd_timestamp`` with that year (the issue's report) and accepted with the guessed one.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from authtrail.producers.ingest import Preflight
from authtrail.producers.sshd import iter_events
from authtrail.producers.syslog import guess_start_year
from authtrail.stream.worker.admission import Limits
from tests.realdata import REALDATA

OPENSSH = REALDATA / "loghub" / "OpenSSH_2k.log"
NOW = int(datetime(2026, 12, 4, 5, 0, tzinfo=UTC).timestamp()) * 1_000_000
needs_realdata = pytest.mark.skipif(not OPENSSH.is_file(), reason=f"no real data at {REALDATA}")


def event(**changes: Any) -> dict[str, Any]:
    base = {"event_id": "e-1", "tenant_id": "acme", "event_type": "LOGIN", "outcome": "SUCCESS",
            "occurred_at": NOW, "source": "test"}  # fmt: skip
    return {**base, **changes}


def test_each_admission_rule_is_counted_with_its_first_reason() -> None:
    preflight = Preflight(now=lambda: NOW)
    assert preflight.check(event()) is None
    assert preflight.check(event(occurred_at=NOW + 86_400 * 1_000_000)) is None  # the limit
    assert preflight.check(event(occurred_at=NOW + 86_401 * 1_000_000)) == "absurd_timestamp"
    assert preflight.check(event(occurred_at=0)) == "absurd_timestamp"
    assert preflight.check(event(event_id="x" * 257)) == "missing_field"
    assert preflight.check(event(service="Authtrail-Lockout ")) == "reserved_identity"
    big = event(attributes={"raw": "a" * Limits().max_record_bytes})
    assert preflight.check(big) == "oversized"
    assert preflight.refused == {"absurd_timestamp": 2, "missing_field": 1,
                                 "reserved_identity": 1, "oversized": 1}  # fmt: skip
    assert preflight.first["absurd_timestamp"].startswith("e-1: occurred_at is 86401 s after")


@needs_realdata
def test_the_issue_case_a_year_in_the_future_is_refused_and_the_guess_is_not(
    tmp_path: Path,
) -> None:
    with OPENSSH.open(encoding="utf-8") as lines:
        wrong = list(iter_events(lines, tenant_id="labsz", year=2026))
    preflight = Preflight(now=lambda: NOW)
    assert [preflight.check(item) for item in wrong] == ["absurd_timestamp"] * 2008
    # The same file as a user has it: written on Dec 4, read that morning.
    copy = tmp_path / "OpenSSH_2k.log"
    copy.write_bytes(OPENSSH.read_bytes())
    os.utime(copy, (NOW / 1e6 - 7200,) * 2)
    year = guess_start_year(copy, now=NOW)
    assert year == 2025
    with copy.open(encoding="utf-8") as lines:
        right = list(iter_events(lines, tenant_id="labsz", year=year, now=lambda: NOW))
    preflight = Preflight(now=lambda: NOW)
    assert [preflight.check(item) for item in right] == [None] * 2008
    assert {item["event_id"] for item in right}.isdisjoint(item["event_id"] for item in wrong)
    # Given the wrong year and a clock bound, the reader corrects every line itself.
    with copy.open(encoding="utf-8") as lines:
        corrected = list(iter_events(lines, tenant_id="labsz", year=2026, now=lambda: NOW))
    assert [item["event_id"] for item in corrected] == [item["event_id"] for item in right]
