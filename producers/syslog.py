"""Traditional syslog lines (RFC 3164 layout, as in /var/log/auth.log): header, year, zone.

``Dec 10 06:55:46 host program[pid]: message``, or with an RFC 3339 timestamp in place
of the first three fields (rsyslog's high-precision format). :class:`SyslogReader`
splits a line into a :class:`SyslogLine` with its time in microseconds since the epoch.

* **Year.** The traditional timestamp has none. The reader starts at the year of the
  first line; a month going back by six or more (Dec -> Jan) starts the next year, a
  smaller step back is a line out of order within the same year, and a line six or more
  months *ahead* right after a rollover is a straggler from the previous year.
  :func:`guess_start_year` derives the first line's year from a file's mtime.
* **Time zone.** Syslog writes local time without an offset; ``tz`` says which zone
  (default UTC). An RFC 3339 timestamp carries its own offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path

__all__ = ["SyslogLine", "SyslogReader", "guess_start_year"]

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


class SyslogReader:
    """Reads the lines of one log in order, tracking the year (see the module doc)."""

    def __init__(self, year: int, tz: tzinfo = UTC) -> None:
        self._years = _Years(year)
        self._tz = tz

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
        except (KeyError, ValueError):
            return None  # "Feb 30", an unknown month name, a malformed RFC 3339 time
        delta = moment - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def guess_start_year(path: str | Path, tz: tzinfo = UTC) -> int:
    """The year of the first line of a syslog file: its mtime's year, minus one for every
    Dec -> Jan rollover in the file, minus one more if its last line's month is after
    the mtime's month (the file was last written in a later year than its last line).

    Raises ``OSError`` when the file cannot be read.
    """
    path = Path(path)
    modified = datetime.fromtimestamp(path.stat().st_mtime, tz=tz)
    years = _Years(0)
    last_month = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            month = _MONTHS.get(line[:3])
            if month:
                years.of(month)
                last_month = month
    return modified.year - years.year - (1 if last_month > modified.month else 0)
