"""The decisions of the HTTP ingest endpoint, without HTTP or Kafka: tokens, bodies, limits.

``authtrail ingest-http`` (:mod:`authtrail.ingest_http`) is the adapter; this module
says who may write, what a request body means, and when to slow a client down.

* **Tokens** (:class:`TokenTable`): one line per source, ``NAME TENANT SOURCES SHA256``:
  the token's name, the one tenant it writes to, the paths it may use (``events``,
  ``keycloak``, ``okta``, ``auth0``, ``cloudtrail``, comma-separated, or ``*``), and the
  SHA-256 of the token in hex. The file never holds a token, so reading it does not give
  one away; a presented token is hashed and compared in constant time.
* **Bodies** (:func:`events_of_body`): ``events`` takes auth events as JSON with the Avro
  schema's field names (one object, an array, or JSON lines; ``schemas/auth_event.schema.json``);
  a provider path takes that provider's JSON (:mod:`authtrail.producers.idp_files`). A body is
  accepted whole or refused whole (:class:`BadRequest`): any record that is not JSON, that
  the mapper refuses, that breaks the SDK's checks or that the worker would refuse
  (:class:`authtrail.producers.ingest.Preflight`), names the reason and nothing is sent. Records a
  provider sends that are not authentication events (a CloudTrail record of another
  service) are skipped and counted, not refused.
* **Rate** (:class:`RateLimiter`): a token bucket of events per token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.producers.idp_files import SOURCES, RecordReader, json_values
from authtrail.producers.ingest import ParseCounters, Preflight
from authtrail.producers.sdk.events import TENANT_ID_PATTERN, validate_event

__all__ = [
    "EVENTS_PATH",
    "PATHS",
    "BadRequest",
    "RateLimiter",
    "TokenGrant",
    "TokenTable",
    "events_of_body",
    "new_token_line",
]

EVENTS_PATH = "events"
PATHS = (EVENTS_PATH, *SOURCES)
# Skip reasons that mean "not an authentication event", not "bad input".
_NOT_AUTHENTICATION = frozenset({"not_identity", "cloudtrail_digest", "not_an_event"})


class BadRequest(Exception):
    """A body refused as a whole; ``status`` is the HTTP status, the message the reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class TokenGrant:
    """What one token may do: write ``tenant_id``'s events through ``sources`` paths."""

    name: str
    tenant_id: str
    sources: frozenset[str]
    digest: bytes = field(repr=False)

    def allows(self, path: str) -> bool:
        return path in self.sources


class TokenTable:
    """The grants of a token file (module doc). Raises :class:`ConfigurationError` for a
    malformed line, naming its number."""

    def __init__(self, grants: list[TokenGrant]) -> None:
        self.grants = grants

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read token file {path}: {exc.strerror}") from None
        grants = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            grants.append(_grant(line, f"{path}:{number}"))
        if not grants:
            raise ConfigurationError(
                f"token file {path} grants nothing: add one with `authtrail ingest-token`"
            )
        return cls(grants)

    def grant_for(self, token: str) -> TokenGrant | None:
        """The grant of ``token``, or None. Every grant is compared, in constant time."""
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found = None
        for grant in self.grants:
            if hmac.compare_digest(grant.digest, digest):
                found = grant
        return found


def _grant(line: str, where: str) -> TokenGrant:
    parts = line.split()
    if len(parts) != 4:
        raise ConfigurationError(f"{where}: expected NAME TENANT SOURCES SHA256, got {line!r}")
    name, tenant_id, sources_text, digest_hex = parts
    if not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise ConfigurationError(f"{where}: {tenant_id!r} is not a valid tenant id")
    sources = frozenset(PATHS) if sources_text == "*" else frozenset(sources_text.split(","))
    unknown = sources - set(PATHS)
    if unknown:
        raise ConfigurationError(f"{where}: unknown sources {sorted(unknown)}; known: {PATHS}")
    try:
        digest = bytes.fromhex(digest_hex)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ConfigurationError(f"{where}: the last field must be 64 hex digits (SHA-256)")
    return TokenGrant(name, tenant_id, sources, digest)


def new_token_line(name: str, tenant_id: str, sources: str = "*") -> tuple[str, str]:
    """A fresh random token and its token-file line. Raises :class:`ConfigurationError`
    for a name with spaces, a bad tenant id or unknown sources."""
    if not name or any(character.isspace() for character in name):
        raise ConfigurationError(f"token name {name!r} must be one word")
    token = secrets.token_urlsafe(32)
    line = f"{name} {tenant_id} {sources} {hashlib.sha256(token.encode()).hexdigest()}"
    _grant(line, "new token")
    return token, line


def events_of_body(
    path: str, body: bytes, tenant_id: str, preflight: Preflight
) -> tuple[list[dict[str, Any]], ParseCounters]:
    """The events a request ``body`` for ``path`` carries, checked as the module doc says.

    Raises :class:`BadRequest` (400; 403 for an event of another tenant) with the reason.
    """

    counters = ParseCounters()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8: {exc}") from None
    values = list(json_values(text, counters))
    if counters.skipped:
        raise BadRequest("body is not JSON (a JSON value, an array, or JSON lines)")
    if not values:
        raise BadRequest("body holds no JSON value")
    if path == EVENTS_PATH:
        events = _plain_events(values, tenant_id, counters)
    else:
        reader = RecordReader(path, tenant_id, counters)
        events = list(reader.events(values))
        bad = {reason: count for reason, count in counters.skipped.items()
               if reason not in _NOT_AUTHENTICATION}  # fmt: skip
        if bad:
            cause = reader.first_errors.get("format_error", "")
            raise BadRequest(
                f"{path} record refused ({', '.join(sorted(bad))}): {cause}".rstrip(": ")
            )
    for index, event in enumerate(events):
        try:
            validate_event(event)
        except InvalidArgumentError as exc:
            raise BadRequest(f"event {index}: {exc}") from None
        try:
            refused = preflight.refusal(event)
        except InvalidArgumentError as exc:  # the schema's own check, on encoding
            raise BadRequest(f"event {index}: {exc}") from None
        if refused is not None:
            raise BadRequest(f"event {index} would be refused ({refused.kind}): {refused}")
    return events, counters


def _plain_events(
    values: list[Any], tenant_id: str, counters: ParseCounters
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            counters.lines += 1
            if not isinstance(item, Mapping):
                raise BadRequest(f"event {len(events)} is not a JSON object")
            event = dict(item)
            claimed = event.setdefault("tenant_id", tenant_id)
            if claimed != tenant_id:
                raise BadRequest(
                    f"event {len(events)} is for tenant {claimed!r}; this token writes "
                    f"{tenant_id!r} only",
                    403,
                )
            events.append(event)
            counters.events += 1
            counters.parsed[str(event.get("event_type"))] += 1
    return events


class RateLimiter:
    """A token bucket per key: ``rate`` events a second, up to ``burst`` at once.

    ``clock`` gives seconds (monotonic). :meth:`take` returns 0 when ``count`` events may
    go now (and takes them), else the seconds to wait before they could.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise InvalidArgumentError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, count: int) -> float:
        with self._lock:
            return self._take(key, count)

    def _take(self, key: str, count: int) -> float:
        now = self.clock()
        level, then = self._buckets.get(key, (float(self.burst), now))
        level = min(float(self.burst), level + (now - then) * self.rate)
        if count > self.burst:
            return float("inf")  # never fits: the caller answers 413
        if count <= level:
            self._buckets[key] = (level - count, now)
            return 0.0
        self._buckets[key] = (level, now)
        return (count - level) / self.rate


def json_reply(payload: Mapping[str, Any]) -> bytes:
    return (json.dumps(payload, sort_keys=True) + "\n").encode("utf-8")
