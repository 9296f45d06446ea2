"""Traditional syslog lines (RFC 3164 layout, as in /var/log/auth.log): header, year, zone.

``Dec 10 06:55:46 host program[pid]: message``, or with an RFC 3339 timestamp in place
of the first three fields (rsyslog's high-precision format). :class:`SyslogReader`
splits a line into a :class:`SyslogLine` with its time in microseconds since the epoch.

* **Year.** The traditional timestamp has none. The reader starts at the year of the
  first line; a month going back by six or more (Dec -> Jan) starts the next year, a
  smaller step back is a line out of order within the same year, and a line six or more
  months *ahead* right after a rollover is a straggler from the previous year.
* **Never in the future** (the rule of rsyslog and Logstash): a timestamp that would lie
  more than :data:`FUTURE_SLACK_MICROS` (one day, room for a wrong zone) ahead of the
  reader's ``now`` belongs to the previous year, and so do the lines after it.
  :func:`guess_start_year` derives the first line's year from a file's mtime by the same
  rule: the newest line cannot be later than the file's last write, nor than now.
* **Time zone.** Syslog writes local time without an offset; ``tz`` says which zone
  (default UTC). An RFC 3339 timestamp carries its own offset.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

__all__ = ["FUTURE_SLACK_MICROS", "SyslogLine", "SyslogReader", "guess_start_year", "wall_clock"]

# How far ahead of now a year-less timestamp may lie before it is taken as last year's:
# a day covers a log written in one zone and read as another (offsets span 26 h only
# between the two extremes; a day is the usual error of a wrong --tz).
FUTURE_SLACK_MICROS = 86_400 * 1_000_000

_MONTHS = {name: index for index, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
)}  # fmt: skip
_HEADER = re.compile(
    r"(?:(?P<month>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<clock>\d\d:\d\d:\d\d)"
    r"|(?P<iso>\d{4}-\d\d-\d\dT\S+)) (?P<host>\S+) (?P<rest>.*)"
)
# "sshd[24200]:", "sshd(pam_unix)[19939]:" (old RHEL), "sudo:" (no pid).
_PROGRAM = re.compile(r"(?P<program>[\w.\-/]+)(?:\((?P<module>[\w-]+)\))?(?:\[(?P<pid>\d+)\])?: ?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SyslogLine:
    """One parsed line. ``raw`` is the line without its line ending."""

    raw: str
    occurred_at: int
    host: str
    program: str
    module: str | None
    pid: str | None
    message: str


class _Years:
    def __init__(self, year: int) -> None:
        self.year, self.month = year, 0

    def of(self, month: int) -> int:
        if self.month and month <= self.month - 6:
            self.year += 1  # Dec -> Jan: a new year, not a line six months late
        elif self.month and month >= self.month + 6:
            return self.year - 1  # a straggler from before the rollover
        if month > self.month or month <= self.month - 6:
            self.month = month
        return self.year


def wall_clock() -> int:
    """Now, in microseconds since the epoch."""
    return time.time_ns() // 1000


class SyslogReader:
    """Reads the lines of one log in order, tracking the year (see the module doc).

    ``now`` (microseconds since the epoch) bounds year-less timestamps: one that would lie
    more than :data:`FUTURE_SLACK_MICROS` after it is put in the previous year. None: no
    bound (the year given is trusted, as for ``--year``).
    """

    def __init__(self, year: int, tz: tzinfo = UTC, now: Callable[[], int] | None = None) -> None:
        self._years = _Years(year)
        self._tz = tz
        self._now = now

    def read(self, raw: str) -> SyslogLine | str:
        """The parsed line, or why it cannot be: ``blank``, ``unparsable``, ``no_program``."""
        line = raw.rstrip("\r\n")
        header = _HEADER.fullmatch(line)
        if header is None:
            return "unparsable" if line.strip() else "blank"
        occurred_at = self._timestamp(header)
        if occurred_at is None:
            return "unparsable"
        program = _PROGRAM.match(header["rest"])
        if program is None:
            return "no_program"
        message = header["rest"][program.end() :].rstrip()
        return SyslogLine(
            line, occurred_at, header["host"], program["program"], program["module"],
            program["pid"], message,
        )  # fmt: skip

    def _timestamp(self, header: re.Match[str]) -> int | None:
        try:
            if header["iso"]:
                moment = datetime.fromisoformat(header["iso"])
                moment = moment if moment.tzinfo else moment.replace(tzinfo=self._tz)
            else:
                month = _MONTHS[header["month"]]
                hour, minute, second = (int(part) for part in header["clock"].split(":"))
                year = self._years.of(month)
                moment = datetime(year, month, int(header["day"]), hour, minute, second)
                moment = moment.replace(tzinfo=self._tz)
                if self._now is not None and _micros(moment) > self._now() + FUTURE_SLACK_MICROS:
                    # Ahead of now: last year's. The lines after it are, too: the year
                    # tracked moves back with it (a straggler leaves it alone).
                    if year == self._years.year:
                        self._years.year -= 1
                    moment = moment.replace(year=year - 1)
        except (KeyError, ValueError):
            return None  # "Feb 30", an unknown month name, a malformed RFC 3339 time
        return _micros(moment)


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def guess_start_year(path: str | Path, tz: tzinfo = UTC, now: int | None = None) -> int:
    """The year of the first line of a syslog file, such that its newest line lies at or
    before the file's last write (mtime) and before ``now`` (microseconds; default the
    wall clock), each within :data:`FUTURE_SLACK_MICROS`: the year of that bound, or the
    one before when the newest line's date would come after it; then one less for every
    Dec -> Jan rollover between the first line and the newest.

    Raises ``OSError`` when the file cannot be read.
    """
    path = Path(path)
    now = wall_clock() if now is None else now
    bound = min(path.stat().st_mtime_ns // 1000, now) + FUTURE_SLACK_MICROS
    reference = (_EPOCH + timedelta(microseconds=bound)).astimezone(tz)
    years = _Years(0)
    newest: tuple[int, int, int, int, int, int] | None = None  # year offset, month, ... second
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            header = _HEADER.match(line)
            if header is None or not header["month"] or header["month"] not in _MONTHS:
                continue
            month = _MONTHS[header["month"]]
            offset = years.of(month)
            hour, minute, second = (int(part) for part in header["clock"].split(":"))
            stamp = (offset, month, int(header["day"]), hour, minute, second)
            newest = stamp if newest is None or stamp > newest else newest
    if newest is None:
        return reference.year
    offset, *when = newest
    reference_when = [reference.month, reference.day, reference.hour, reference.minute,
                      reference.second]  # fmt: skip
    newest_year = reference.year - (1 if when > reference_when else 0)
    return newest_year - offset
