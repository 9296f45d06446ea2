"""The sink cuts each batch into runs of one month, so every INSERT is one part.

Why (sinks/sink.py ``_month_runs``): the tables are partitioned by month and ClickHouse
commits an insert's parts one by one; a crash between two commits must never leave rows
stored after rows that are not. Known answers at month boundaries, in both timestamp
forms the rows carry, and the partition columns checked against the DDL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from authtrail.sinks.sink import _month_runs, _utc_month

JANUARY_END = datetime(2025, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC)
FEBRUARY_START = datetime(2025, 2, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("value", "month"),
    [
        (JANUARY_END, 202501),
        (FEBRUARY_START, 202502),
        (_micros(JANUARY_END), 202501),
        (_micros(FEBRUARY_START), 202502),
        (0, 197001),
        (-1, 196912),  # floor division: a microsecond before the epoch
        (_micros(datetime(2024, 2, 29, 12, tzinfo=UTC)), 202402),
        (_micros(datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)), 202412),
        # 00:30 on 1 February at UTC+1 is still January in UTC, as ClickHouse partitions it.
        (datetime(2025, 2, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))), 202501),
    ],
)
def test_utc_month_known_answers(value: datetime | int, month: int) -> None:
    assert _utc_month(value) == month


def _row(offset: int, moment: datetime | int) -> dict[str, object]:
    return {"kafka_offset": offset, "occurred_at": moment}


def test_one_month_is_one_run() -> None:
    rows = [_row(offset, _micros(JANUARY_END) - offset) for offset in range(5)]
    assert _month_runs(rows, "occurred_at") == [rows]


def test_runs_follow_the_rows_and_cut_at_every_month_change() -> None:
    months: list[datetime | int] = [
        JANUARY_END, _micros(JANUARY_END), FEBRUARY_START, FEBRUARY_START, JANUARY_END
    ]  # fmt: skip
    rows = [_row(offset, moment) for offset, moment in enumerate(months)]
    runs = _month_runs(rows, "occurred_at")
    assert [[row["kafka_offset"] for row in run] for run in runs] == [[0, 1], [2, 3], [4]]
    assert [row for run in runs for row in run] == rows  # nothing lost, reordered or repeated


def test_no_rows_no_runs() -> None:
    assert _month_runs([], "occurred_at") == []
