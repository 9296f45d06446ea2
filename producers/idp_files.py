"""Identity-provider exports to AuthEvents: the input side of ``authtrail ingest keycloak|okta|
auth0|cloudtrail``. The mapping itself is :mod:`authtrail.producers.idp_mapping`.

**Input.** JSON, read as a sequence of JSON values: JSON lines, one array, a pretty-printed
object, or several concatenated; gzip-compressed when the bytes start with gzip's magic
(CloudTrail delivers ``*.json.gz``). A stretch that is not JSON is skipped to the next
line and counted (``not_json``). With ``follow`` (files that grow: a Keycloak JSON log,
an NDJSON export) every line is one JSON value.

**Envelopes** are opened, so a file holds whatever the provider hands out:

* an array: each element (and each element's envelope);
* CloudTrail: a log file's ``{"Records": [...]}``; digest files (``logFiles``) are skipped
  (``cloudtrail_digest``), and so are records of services that are not about identity
  (``not_identity``: only ``signin``, ``sts``, ``iam`` and ``sso`` are read);
* Okta: an event hook delivery (``data.events``) or the System Log API's array;
* Auth0: a log stream batch (array), an EventBridge envelope, or a bare log of the
  Management API (``{"date", "type", ...}``, read as ``{"data": ...}``);
* Keycloak: event JSON (Jackson ``Event``/``AdminEvent``, JSON event listeners) and
  Quarkus JSON log records; log records of loggers other than ``org.keycloak.events``
  are skipped (``not_an_event``). Plain-text log lines carry no date and are not read.

A record the mapper refuses is skipped as ``format_error`` with its reason (the first one
is kept in :attr:`RecordReader.first_errors`). Event ids come from the mapper: the
provider's own id, or a digest of the record, so re-ingesting a file gives the same ids.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authtrail.errors import FormatError, InvalidArgumentError
from authtrail.producers import tail
from authtrail.producers.idp_mapping import (
    map_auth0_event,
    map_cloudtrail_event,
    map_keycloak_event,
    map_okta_event,
)
from authtrail.producers.ingest import IngestSummary, ParseCounters, deliver
from authtrail.producers.syslog import wall_clock

if TYPE_CHECKING:  # needs cryptography, only when sealing
    from authtrail.producers.sdk.sealing import SourceSealing

__all__ = [
    "FOLLOWABLE",
    "SOURCES",
    "RecordReader",
    "json_values",
    "read_json_values",
    "run_idp_ingest",
]

SOURCES: dict[str, Callable[..., dict[str, Any]]] = {
    "keycloak": map_keycloak_event,
    "okta": map_okta_event,
    "auth0": map_auth0_event,
    "cloudtrail": map_cloudtrail_event,
}
# CloudTrail writes whole files (S3 objects), never appends: nothing to follow.
FOLLOWABLE = frozenset({"keycloak", "okta", "auth0"})
_IDENTITY_SERVICES = frozenset(
    {"signin.amazonaws.com", "sts.amazonaws.com", "iam.amazonaws.com", "sso.amazonaws.com"}
)
_KEYCLOAK_EVENTS_LOGGER = "org.keycloak.events"
_GZIP_MAGIC = b"\x1f\x8b"


def read_json_values(data: bytes, counters: ParseCounters) -> Iterator[Any]:
    """The JSON values in ``data`` (gunzipped first if it is gzip), in order; stretches
    that are not JSON are skipped line by line and counted as ``not_json``.

    Raises :class:`FormatError` when gzip data is corrupt.
    """
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise FormatError(f"corrupt gzip data: {exc}") from exc
    yield from json_values(data.decode("utf-8", errors="replace"), counters)


def json_values(text: str, counters: ParseCounters) -> Iterator[Any]:
    """The JSON values of ``text``, one after the other (see :func:`read_json_values`)."""
    decoder = json.JSONDecoder()
    position, end = 0, len(text)
    while True:
        while position < end and text[position] in " \t\r\n\ufeff":
            position += 1
        if position >= end:
            return
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            counters.lines += 1
            counters.skipped["not_json"] += 1
            newline = text.find("\n", position)
            position = end if newline < 0 else newline + 1
            continue
        yield value


class RecordReader:
    """Turns parsed JSON values of one ``source`` into AuthEvents, counting every record.

    Raises :class:`InvalidArgumentError` for an unknown source or a bad tenant id.
    """

    def __init__(self, source: str, tenant_id: str, counters: ParseCounters) -> None:
        if source not in SOURCES:
            raise InvalidArgumentError(f"unknown source {source!r}; known: {sorted(SOURCES)}")
        self.source, self.tenant_id, self.counters = source, tenant_id, counters
        self.first_errors: dict[str, str] = {}
        self._map = SOURCES[source]
        # The mappers check the tenant id first: a bad one fails here, not per record; a
        # good one gets as far as the empty record's FormatError.
        with contextlib.suppress(FormatError):
            self._map({}, tenant_id=tenant_id)

    def events(self, values: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """The AuthEvents of ``values`` (each a parsed JSON value, envelopes opened)."""
        for value in values:
            for record in self._records(value):
                event = self._event(record)
                if event is not None:
                    yield event

    def _records(self, value: Any) -> Iterator[Any]:
        if isinstance(value, list):
            for item in value:
                yield from self._records(item)
        elif isinstance(value, Mapping) and isinstance(value.get("Records"), list):
            yield from self._records(value["Records"])  # a CloudTrail log file
        elif (
            isinstance(value, Mapping)
            and isinstance(value.get("data"), Mapping)
            and isinstance(value["data"].get("events"), list)
        ):
            yield from self._records(value["data"]["events"])  # an Okta event hook delivery
        else:
            yield value

    def _event(self, record: Any) -> dict[str, Any] | None:
        self.counters.lines += 1
        if not isinstance(record, Mapping):
            return self._skip("not_an_object")
        reason = self._not_an_event(record)
        if reason is not None:
            return self._skip(reason)
        if self.source == "auth0" and "data" not in record and "detail" not in record:
            record = {"data": record}  # the Management API's bare log
        try:
            event = self._map(record, tenant_id=self.tenant_id)
        except FormatError as exc:
            self.first_errors.setdefault("format_error", str(exc))
            return self._skip("format_error")
        self.counters.events += 1
        self.counters.parsed[str(event.get("source_event_type") or event["event_type"])] += 1
        return event

    def _not_an_event(self, record: Mapping[str, Any]) -> str | None:
        if self.source == "cloudtrail":
            if "logFiles" in record or "digestStartTime" in record:
                return "cloudtrail_digest"
            if record.get("eventSource") not in _IDENTITY_SERVICES:
                return "not_identity"
        if self.source == "keycloak":
            logger = record.get("loggerName")
            is_event = {"type", "operationType"} & record.keys()
            if isinstance(logger, str) and not is_event and logger != _KEYCLOAK_EVENTS_LOGGER:
                return "not_an_event"
        return None

    def _skip(self, reason: str) -> dict[str, Any] | None:
        self.counters.skipped[reason] += 1
        return None


def run_idp_ingest(
    source: str,
    path: str | Path,
    *,
    bootstrap_servers: str,
    topic: str,
    tenant_id: str,
    follow: bool = False,
    producer_config: dict[str, Any] | None = None,
    poll_interval: float = 1.0,
    stop: Callable[[], bool] | None = None,
    warn: Callable[[str], None] = lambda text: None,
    now: Callable[[], int] = wall_clock,
    sealing: SourceSealing | None = None,
) -> IngestSummary:
    """Read ``source`` records from ``path`` (``-``: standard input) and send their events.

    Without ``follow`` the input is read whole (it must fit in memory), parsed once for the
    preflight's warnings (:mod:`authtrail.producers.ingest`) and again to send. With ``follow`` it
    is read as JSON lines as they are written (a file, rotation handled, until ``stop()``; or
    standard input until it ends). ``summary.first_errors`` gets the first refusal reason.

    Raises :class:`InvalidArgumentError` (unknown source, bad tenant id, ``follow`` for
    CloudTrail), ``OSError`` (unreadable file), :class:`FormatError` (corrupt gzip), and
    what :func:`authtrail.producers.ingest.deliver` raises.
    """
    RecordReader(source, tenant_id, ParseCounters())  # unknown source, bad tenant: now
    if follow and source not in FOLLOWABLE:
        raise InvalidArgumentError(
            f"--follow does not apply to {source}: its files are written whole, not appended"
        )
    stdin = str(path) == "-"
    summary = IngestSummary(str(path), ParseCounters())
    if not follow:
        data = sys.stdin.buffer.read() if stdin else Path(path).read_bytes()

    def events(counters: ParseCounters) -> Iterator[dict[str, Any]]:
        reader = RecordReader(source, tenant_id, counters)
        try:
            if not follow:
                yield from reader.events(read_json_values(data, counters))
                return
            lines: Iterable[str] = (
                sys.stdin if stdin else tail.follow(path, poll_interval=poll_interval, stop=stop)
            )
            for line in lines:
                yield from reader.events(json_values(line, counters))
        finally:
            if counters is summary.counters:
                summary.first_errors.update(reader.first_errors)

    return deliver(
        events, summary, bootstrap_servers=bootstrap_servers, topic=topic,
        prescan=not follow, warn=warn, producer_config=producer_config, now=now,
        sealing=sealing,
    )  # fmt: skip
