"""OpenSSH and Linux auth-log lines to AuthEvents, and ``run_ingest`` to send them to Kafka.

Reads syslog lines (``Dec 10 06:55:46 host sshd[24200]: message``, or an RFC 3339
timestamp instead) from sshd, its PAM module, su, sudo, login, the shadow tools and
klogind, and turns every authentication-relevant line into one AuthEvent (a syslog
"message repeated N times" line into N). docs/LOCKOUT.md lists every kind, how it maps,
and which lines are skipped and why. Rules worth knowing here:

* **Year and time zone**: the caller gives the year of the first line and the zone of
  timestamps without an offset (default UTC); :mod:`authtrail.producers.syslog` has the rollover
  rule, the rule that puts no line in the future, and
  :func:`~authtrail.producers.syslog.guess_start_year`.
* **Event ids** are ``authlog:<32 hex>`` of SHA-256 over the resolved timestamp, the raw
  line, how often that exact line was seen before, and the repeat index. No path and no
  line number: a rotated (renamed) or copy-truncated file re-ingested yields the same ids,
  so the sequencer's event-id window drops them.
* The original line is kept in ``attributes["raw"]``, with ``pid``, ``port`` and the
  fields each message carries.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authtrail.producers import tail
from authtrail.producers.ingest import IngestSummary, ParseCounters, deliver
from authtrail.producers.syslog import SyslogLine, SyslogReader, guess_start_year, wall_clock

if TYPE_CHECKING:  # needs cryptography, only when sealing
    from authtrail.producers.sdk.sealing import SourceSealing

__all__ = [
    "IngestSummary",
    "ParseCounters",
    "guess_start_year",
    "iter_events",
    "run_ingest",
]

_REPEATED = re.compile(r"message repeated (\d+) times: \[ ?(.*?)\]")
_IP = r"(?P<ip>[0-9A-Fa-f:.]+?)"
_PORT = r"(?: port (?P<port>\d+))?"
_PREAUTH = r"(?: \[preauth\])?"
_SSH2 = r"(?: ssh2)?"
_BREAK_IN = r"(?: - POSSIBLE BREAK-IN ATTEMPT!)?"
# sshd names the account state before the user in newer messages.
_WHO = r"(?:(?P<state>invalid user|authenticating user|user) (?P<user>\S*) )?"

# One rule: (kind, event_type, outcome, pattern), tried in order on sshd's message.
_SSHD_RULE_TEXT = [
    ("accepted", "LOGIN", "SUCCESS",
     rf"Accepted (?P<method>\S+) for (?P<user>\S+) from {_IP}{_PORT}{_SSH2}(?:: (?P<key>.+))?"),
    ("failed", "LOGIN_FAILED", "FAILURE",
     rf"Failed (?P<method>\S+) for (?P<invalid>invalid user )?(?P<user>.*?) from {_IP}"
     rf"{_PORT}{_SSH2}"),
    ("invalid_user", "OTHER", "FAILURE", rf"Invalid user (?P<user>.*?) from {_IP}{_PORT}"),
    ("invalid_user_request", "OTHER", "FAILURE",
     rf"input_userauth_request: invalid user (?P<user>.*?){_PREAUTH}"),
    ("too_many_failures", "OTHER", "FAILURE",
     rf"Disconnecting:? (?:{_WHO}{_IP}{_PORT}: )?Too many authentication failures"
     rf"(?: for (?:invalid user )?(?P<user2>\S+))?{_PREAUTH}"),
    ("max_attempts_exceeded", "OTHER", "FAILURE",
     rf"(?:error: )?maximum authentication attempts exceeded for (?P<invalid>invalid user )?"
     rf"(?P<user>\S+) from {_IP}{_PORT}{_SSH2}{_PREAUTH}"),
    ("possible_break_in", "OTHER", "UNKNOWN",
     rf"reverse mapping checking getaddrinfo for (?P<rhost>\S+) \[{_IP}\] failed{_BREAK_IN}"),
    ("possible_break_in", "OTHER", "UNKNOWN",
     rf"Address {_IP} maps to (?P<rhost>\S+), but this does not map back to the address"
     rf"{_BREAK_IN}"),
    ("disconnect_auth_failed", "OTHER", "FAILURE",
     rf"(?:error: )?Received disconnect from {_IP}{_PORT}: ?(?P<code>\d+): "
     rf"(?P<reason>.*(?:Auth fail|No more user authentication methods).*?){_PREAUTH}"),
    ("disconnect_received", "OTHER", "UNKNOWN",
     rf"(?:error: )?Received disconnect from {_IP}{_PORT}: ?(?P<code>\d+): "
     rf"(?P<reason>.*?){_PREAUTH}"),
    ("disconnected", "OTHER", "UNKNOWN", rf"Disconnected from {_WHO}{_IP}{_PORT}{_PREAUTH}"),
    ("connection_closed", "OTHER", "UNKNOWN",
     rf"Connection (?P<how>closed|reset) by {_WHO}{_IP}{_PORT}{_PREAUTH}"),
    ("no_identification", "OTHER", "FAILURE",
     rf"Did not receive identification string from {_IP}{_PORT}"),
    ("bad_identification", "OTHER", "FAILURE",
     r"(?:error: )?(?:kex_exchange_identification|Bad protocol version identification"
     r"|banner exchange)(?P<reason>.*)"),
    ("negotiation_failed", "OTHER", "FAILURE",
     rf"Unable to negotiate with {_IP}{_PORT}: (?P<reason>.*?){_PREAUTH}"),
    ("postponed", "OTHER", "UNKNOWN",
     rf"Postponed (?P<method>\S+) for (?P<user>\S+) from {_IP}{_PORT}{_SSH2}{_PREAUTH}"),
    ("user_not_allowed", "OTHER", "FAILURE",
     rf"User (?P<user>\S+) (?:from {_IP} )?not allowed because (?P<reason>.+)"),
    ("session_started", "OTHER", "SUCCESS",
     rf"Starting session: (?P<what>.+?) for (?P<user>\S+) from {_IP}{_PORT}(?: id \d+)?"),
    ("connection_error", "OTHER", "FAILURE", rf"(?:fatal|error): (?P<reason>.*?){_PREAUTH}"),
]  # fmt: skip
_SSHD_RULES = [
    (kind, event_type, outcome, re.compile(pattern))
    for kind, event_type, outcome, pattern in _SSHD_RULE_TEXT
]
_PAM = re.compile(
    r"(?:pam_unix\((?P<service>[\w-]+):(?P<phase>\w+)\): )?(?:"
    r"(?P<auth_failure>authentication failure; (?P<fields>.*))"
    r"|(?P<unknown>check pass; user unknown)"
    r"|session (?P<session>opened|closed) for user (?P<user>\S+)(?: by (?P<by>.*))?"
    r"|(?P<changed>password changed for (?P<changed_user>\S+))"
    r"|PAM (?P<more>\d+) more authentication failures?; (?P<more_fields>.*)"
    r"|PAM service\((?P<retries_service>[^)]*)\) ignoring max retries; "
    r"(?P<tries>\d+) > (?P<max>\d+))$"
)
_PAM_FIELD = re.compile(r"(\w+)=(\S*)")
# Lines of auth programs that are not about authentication: the daemon's own life, and
# connection notices that carry no account, credential or outcome.
_SERVICE_NOTICE = re.compile(
    r"Server listening on|Received signal|Exiting on signal|Received SIGHUP"
)
_CONNECTION_NOTICE = re.compile(r"Connection from .* port \d+ on|connection from |getpeername ")
_SUDO = re.compile(
    r"\s*(?P<user>\S+) : (?:(?P<denied>[^;=]+?) ; )?TTY=(?P<tty>.*?) ; PWD=(?P<pwd>.*?) ; "
    r"USER=(?P<target>.*?) ; (?:.*?; )?COMMAND=(?P<command>.*)"
)
_SHADOW = re.compile(
    r"(?P<what>new user|new group|delete user|delete group|change user)[: ]+'?(?:name=)?"
    r"(?P<name>[^',]+)'?(?P<details>.*)"
)
_SHADOW_KINDS = {
    "new user": "user_created",
    "new group": "group_created",
    "delete user": "user_deleted",
    "delete group": "group_deleted",
    "change user": "user_changed",
}
_KLOGIND = re.compile(
    rf"(?:Authentication failed from {_IP} \((?P<rhost>[^)]*)\): (?P<reason>.+?)"
    r"|Kerberos authentication failed)\s*"
)
_FTPD_LOGIN = re.compile(
    rf"(?P<anonymous>ANONYMOUS )?FTP LOGIN FROM {_IP}, +\(?(?P<user>[^)\s]+)\)?"
)
_FTPD_TIMEOUT = re.compile(r"User (?P<user>\S+) timed out after (?P<seconds>\d+) seconds.*")
# Programs whose lines authtrail reads; anything else is skipped as "other_program".
_AUTH_PROGRAMS = frozenset(
    {"sshd", "su", "sudo", "login", "passwd", "chpasswd", "useradd", "userdel", "usermod",
     "groupadd", "groupdel", "klogind", "ftpd"}
)  # fmt: skip
_SHADOW_PROGRAMS = frozenset({"useradd", "userdel", "usermod", "groupadd", "groupdel"})
_LOGIN_PROGRAMS = frozenset({"sshd", "login"})
# Named groups that become columns or are flags, not attributes.
_NOT_ATTRIBUTES = frozenset({"user", "user2", "ip", "method", "invalid", "state", "anonymous"})


class _Parser:
    def __init__(
        self, tenant_id: str, year: int, tz: tzinfo, counters: ParseCounters,
        now: Callable[[], int] | None,
    ) -> None:  # fmt: skip
        self.tenant_id, self.counters = tenant_id, counters
        self.reader = SyslogReader(year, tz, now)
        self.seen: Counter[str] = Counter()  # identical lines so far, for distinct event ids

    def parse(self, raw: str) -> list[dict[str, Any]]:
        self.counters.lines += 1
        line = self.reader.read(raw)
        if isinstance(line, str):
            return self._skip(line)
        if line.program not in _AUTH_PROGRAMS:
            return self._skip("other_program")
        repeated = _REPEATED.fullmatch(line.message)
        times, message = (int(repeated[1]), repeated[2].strip()) if repeated else (1, line.message)
        classified = self._classify(line.program, line.module, message)
        if isinstance(classified, str):
            return self._skip(classified)
        if len(self.seen) > 10_000:
            self.seen.clear()  # identical lines lie seconds apart; keep memory bounded
        occurrence = self.seen[line.raw]
        self.seen[line.raw] += 1
        events = []
        for repeat in range(times):
            seed = f"{line.occurred_at}\x00{line.raw}\x00{occurrence}\x00{repeat}"
            event_id = "authlog:" + hashlib.sha256(seed.encode()).hexdigest()[:32]
            events.append(self._event(event_id, line, message, classified, repeat, times))
        self.counters.parsed[classified[0]] += times
        self.counters.events += times
        return events

    def _skip(self, reason: str) -> list[dict[str, Any]]:
        self.counters.skipped[reason] += 1
        return []

    def _classify(
        self, program: str, module: str | None, message: str
    ) -> tuple[str, str, str, dict[str, str | None]] | str:
        """(kind, event_type, outcome, fields) for an auth line, or the skip reason."""
        if _SERVICE_NOTICE.match(message):
            return "service_notice"
        if _CONNECTION_NOTICE.match(message):
            return "connection_notice"
        pam = _PAM.match(message)
        if pam and (module == "pam_unix" or pam["service"] or pam["more"] or pam["tries"]):
            return _pam(program, module, pam)
        if program == "sshd":
            for kind, event_type, outcome, pattern in _SSHD_RULES:
                match = pattern.fullmatch(message)
                if match:
                    return kind, event_type, outcome, match.groupdict()
        elif program == "sudo" and (sudo := _SUDO.fullmatch(message)):
            denied = sudo["denied"]
            kind, outcome = ("sudo_denied", "FAILURE") if denied else ("sudo_command", "SUCCESS")
            return kind, "OTHER", outcome, {**sudo.groupdict(), "reason": denied}
        elif program in _SHADOW_PROGRAMS and (shadow := _SHADOW.fullmatch(message)):
            details = shadow["details"].strip(", ") or None
            fields = {"user": shadow["name"], "details": details}
            return _SHADOW_KINDS[shadow["what"]], "OTHER", "SUCCESS", fields
        elif program == "klogind" and (klogind := _KLOGIND.fullmatch(message)):
            fields = {**klogind.groupdict(), "method": "kerberos"}
            return "kerberos_failed", "LOGIN_FAILED", "FAILURE", fields
        elif program == "ftpd" and (ftp := _FTPD_LOGIN.fullmatch(message)):
            method = "anonymous" if ftp["anonymous"] else "password"
            return "ftp_login", "LOGIN", "SUCCESS", {**ftp.groupdict(), "method": method}
        elif program == "ftpd" and (timeout := _FTPD_TIMEOUT.fullmatch(message)):
            # ftpd says "User unknown" when the client never got as far as naming one.
            user = None if timeout["user"] == "unknown" else timeout["user"]
            return (
                "ftp_timeout",
                "SESSION_EXPIRED",
                "SUCCESS",
                {**timeout.groupdict(), "user": user},
            )
        return "unrecognized"

    def _event(
        self, event_id: str, line: SyslogLine, message: str,
        classified: tuple[str, str, str, dict[str, str | None]], repeat: int, times: int,
    ) -> dict[str, Any]:  # fmt: skip
        kind, event_type, outcome, fields = classified
        attributes = {"raw": line.raw, "program": line.program}
        if line.pid:
            attributes["pid"] = line.pid
        if times > 1:
            attributes["repeat"] = f"{repeat + 1}/{times}"
        for name, value in fields.items():
            if value and name not in _NOT_ATTRIBUTES:
                attributes[name] = value.strip()
        user = fields.get("user") or fields.get("user2")
        invalid = (
            bool(fields.get("invalid"))
            or fields.get("state") == "invalid user"
            or kind.startswith("invalid_user")
        )
        if invalid:
            attributes["invalid_user"] = "true"
        rhost = fields.get("rhost")
        client_ip = _ip(fields.get("ip")) or _ip(rhost)
        is_failure = event_type == "LOGIN_FAILED" or outcome == "FAILURE"
        return {
            "event_id": event_id,
            "tenant_id": self.tenant_id,
            "event_type": event_type,
            "event_type_other": kind if event_type == "OTHER" else None,
            "outcome": outcome,
            "occurred_at": line.occurred_at,
            "source": "openssh" if line.program == "sshd" else "linux",
            "source_event_type": kind,
            "user_name": user or None,
            "service": line.program,
            "host": line.host,
            "client_ip": client_ip,
            "auth_method": (fields.get("method") or "").lower() or None,
            "failure_reason": _failure_reason(kind, fields) if is_failure else None,
            "message": message,
            "attributes": attributes,
        }


def _pam(
    program: str, module: str | None, pam: re.Match[str]
) -> tuple[str, str, str, dict[str, str | None]]:
    service = pam["service"] or program
    legacy = module == "pam_unix"  # "sshd(pam_unix)[pid]:" — old syslog layout, see below
    if pam["auth_failure"]:
        fields: dict[str, str | None] = dict(_PAM_FIELD.findall(pam["fields"]))
        fields = {
            "user": fields.pop("user", None),
            **fields,
            "method": "password",
            "pam_service": service,
        }
        # Old RHEL wrote sshd's PAM lines to /var/log/messages without sshd's own "Failed
        # password" line: there the PAM line is the only record of the failed login. In
        # the modern layout it repeats the "Failed" line that follows, so it is not one.
        if legacy and service in _LOGIN_PROGRAMS:
            return "pam_login_failed", "LOGIN_FAILED", "FAILURE", fields
        return "pam_auth_failure", "OTHER", "FAILURE", fields
    if pam["unknown"]:
        return "pam_user_unknown", "OTHER", "FAILURE", {"pam_service": service}
    if pam["session"]:
        fields = {"user": pam["user"], "by": pam["by"], "pam_service": service}
        if pam["session"] == "closed" and service in _LOGIN_PROGRAMS:
            return "session_closed", "LOGOUT", "SUCCESS", fields
        return f"session_{pam['session']}", "OTHER", "SUCCESS", fields
    if pam["changed"]:
        return (
            "password_changed",
            "PASSWORD_CHANGED",
            "SUCCESS",
            {"user": pam["changed_user"], "pam_service": service},
        )
    if pam["more"]:
        fields = dict(_PAM_FIELD.findall(pam["more_fields"]))
        return (
            "pam_more_failures",
            "OTHER",
            "FAILURE",
            {"user": fields.pop("user", None), **fields, "count": pam["more"]},
        )
    return (
        "pam_max_retries",
        "OTHER",
        "FAILURE",
        {"pam_service": pam["retries_service"], "tries": pam["tries"], "max": pam["max"]},
    )


def _ip(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None  # a host name (PAM's rhost often is one): kept in attributes["rhost"]


_REASONS = {
    "pam_login_failed": "authentication failure",
    "pam_auth_failure": "authentication failure",
    "pam_user_unknown": "user unknown",
    "pam_more_failures": "more authentication failures",
    "pam_max_retries": "ignoring max retries",
    "kerberos_failed": "Kerberos authentication failed",
}


def _failure_reason(kind: str, fields: dict[str, str | None]) -> str:
    if fields.get("reason"):
        return str(fields["reason"]).strip()
    if kind == "failed":
        method = fields.get("method") or "authentication"
        return f"invalid user ({method})" if fields.get("invalid") else f"wrong {method}"
    return _REASONS.get(kind, kind.replace("_", " "))


def iter_events(
    lines: Iterable[str], *, tenant_id: str, year: int, tz: tzinfo = UTC,
    counters: ParseCounters | None = None, now: Callable[[], int] | None = None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Yield the AuthEvents of ``lines`` in order; count every line in ``counters``.

    ``year`` is the year of the first traditional-syslog line (see the module doc); ``tz``
    the zone of timestamps without an offset; ``now`` (microseconds) puts a line that
    would lie in the future in the previous year
    (:class:`~authtrail.producers.syslog.SyslogReader`). Never raises on bad lines: they are counted
    as skipped (``unparsable``, ...).
    """
    counters = counters if counters is not None else ParseCounters()
    parser = _Parser(tenant_id, year, tz, counters, now)
    for line in lines:
        yield from parser.parse(line)


_YEAR_HINT = "syslog lines carry no year: give the right one with --year (and the zone with --tz)"


def run_ingest(
    path: str | Path,
    *,
    bootstrap_servers: str,
    topic: str,
    tenant_id: str,
    follow: bool = False,
    year: int | None = None,
    tz: tzinfo = UTC,
    producer_config: dict[str, Any] | None = None,
    poll_interval: float = 1.0,
    stop: Callable[[], bool] | None = None,
    warn: Callable[[str], None] = lambda text: None,
    now: Callable[[], int] = wall_clock,
    sealing: SourceSealing | None = None,
) -> IngestSummary:
    """Parse the auth log at ``path`` (``-``: standard input) and send its events.

    With ``follow`` keep reading new lines (rotation and truncation handled, see
    :func:`authtrail.producers.tail.follow`) until ``stop()`` returns True. Without ``year`` the
    first line's year comes from :func:`guess_start_year` (stdin: this year) and no line
    is put in the future (``now``); a given ``year`` is trusted as it is. ``warn`` gets
    the preflight's warnings (:mod:`authtrail.producers.ingest`) before the events concerned are
    sent.

    Raises :class:`ConfigurationError` (unusable producer settings), ``OSError`` (file
    unreadable) and :class:`DeliveryError` naming events the broker did not acknowledge.
    """
    stdin = str(path) == "-"
    if year is not None:
        start_year, bound = year, None
    else:
        start_year = _current_year(now(), tz) if stdin else guess_start_year(path, tz, now())
        bound = now

    def events(counters: ParseCounters) -> Iterator[dict[str, Any]]:
        with contextlib.ExitStack() as resources:
            if stdin:
                lines: Iterable[str] = sys.stdin
            elif follow:
                lines = tail.follow(path, poll_interval=poll_interval, stop=stop)
            else:
                lines = resources.enter_context(Path(path).open(encoding="utf-8", errors="replace"))
            yield from iter_events(
                lines, tenant_id=tenant_id, year=start_year, tz=tz, counters=counters, now=bound
            )

    return deliver(
        events, IngestSummary(str(path), ParseCounters()),
        bootstrap_servers=bootstrap_servers, topic=topic, prescan=not (stdin or follow),
        warn=warn, producer_config=producer_config, hints={"absurd_timestamp": _YEAR_HINT},
        now=now, sealing=sealing,
    )  # fmt: skip


def _current_year(now_micros: int, tz: tzinfo) -> int:
    return datetime.fromtimestamp(now_micros / 1_000_000, tz=tz).year
