"""The half every ``authtrail ingest`` shares: counting, a preflight, and sending to Kafka.

A source (``authtrail.producers.sshd``, ``authtrail.producers.idp_files``) turns input into
AuthEvents and counts what it parsed and skipped in :class:`ParseCounters`; :func:`deliver` sends
them with an :class:`~authtrail.producers.sdk.producer.AuditProducer` and fills an
:class:`IngestSummary`.

**Preflight.** The worker refuses some events that encode fine
(``authtrail.stream.worker.admission``): a timestamp before 2000 or more than a day after the record
was produced, an oversized record, an empty or overlong id, an identity reserved to authtrail. Those
land in the ``rejected`` table, not in a chain, which a user finds out only by looking there.
:class:`Preflight` applies the same checks with the same default limits, taking *now* as
the record time (the producer stamps records when it sends them), so ``ingest`` can warn
on stderr. With ``prescan`` (a regular file read once) :func:`deliver` parses the input
a first time only to count them, so the warnings come before anything is sent; otherwise
(stdin, ``--follow``) it warns at the first event of each kind, before sending it. The
events are sent either way: a refusal is evidence too, and lands in ``rejected``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from authtrail import schemas
from authtrail.producers.sdk.envelope import DEFAULT_ENVELOPE_BYTES
from authtrail.producers.syslog import wall_clock
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.stream.worker.admission import Limits, RejectedEvent, check_event

if TYPE_CHECKING:  # needs cryptography, only when sealing
    from authtrail.producers.sdk.sealing import SourceSealing

__all__ = ["IngestSummary", "ParseCounters", "Preflight", "deliver"]


@dataclass
class ParseCounters:
    """What happened to each input item (a line, a JSON record): ``parsed`` by kind,
    ``skipped`` by reason."""

    lines: int = 0
    events: int = 0
    parsed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class IngestSummary:
    """What an ingest did: items and events parsed, skipped (``first_errors`` says why, for
    reasons with a message), sent, acknowledged, and how many events the worker will
    refuse (``refused``, by :mod:`authtrail.stream.worker.admission` kind)."""

    path: str
    counters: ParseCounters
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    first_errors: dict[str, str] = field(default_factory=dict)  # skip reason -> first cause

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "lines": self.counters.lines,
            "events": self.counters.events,
            "parsed": dict(self.counters.parsed),
            "skipped": dict(self.counters.skipped),
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "refused": dict(self.refused),
            "first_errors": self.first_errors,
        }


class Preflight:
    """Counts the events the worker's admission checks would refuse (module doc).

    ``now`` gives microseconds since the epoch; ``limits`` must be the worker's (the
    worker runs with the defaults).
    """

    def __init__(self, limits: Limits | None = None, now: Callable[[], int] = wall_clock) -> None:
        self.limits, self.now = limits or Limits(), now
        self.refused: Counter[str] = Counter()
        self.first: dict[str, str] = {}
        self._codec = SingleObjectCodec(schemas.load_schema(schemas.AUTH_EVENT))

    def refusal(self, event: Mapping[str, Any]) -> RejectedEvent | None:
        """The refusal ``event`` will meet, else None; counts nothing (thread-safe).
        Raises what the codec raises for an event that does not fit the schema."""
        value = self._codec.encode(event)
        try:
            check_event(
                event, record_bytes=len(value), record_timestamp_micros=self.now(),
                limits=self.limits,
            )  # fmt: skip
        except RejectedEvent as refused:
            return refused
        return None

    def check(self, event: Mapping[str, Any]) -> str | None:
        """The kind of refusal ``event`` will meet, else None; counted, with the first
        reason of each kind in :attr:`first`. Raises as :meth:`refusal`."""
        refused = self.refusal(event)
        if refused is None:
            return None
        self.refused[refused.kind] += 1
        self.first.setdefault(refused.kind, f"{event.get('event_id')}: {refused}")
        return refused.kind


def _warning(kind: str, count: int, total: int | None, first: str, hint: str | None) -> str:
    share = f"{count} of {total} events" if total is not None else "events"
    text = f"warning: {share} will be refused by the worker as {kind} (first: {first})"
    return text + (f"; {hint}" if hint else "")


def deliver(
    events: Callable[[ParseCounters], Iterable[dict[str, Any]]],
    summary: IngestSummary,
    *,
    bootstrap_servers: str,
    topic: str,
    prescan: bool,
    warn: Callable[[str], None],
    producer_config: dict[str, Any] | None = None,
    hints: Mapping[str, str] | None = None,
    now: Callable[[], int] = wall_clock,
    sealing: SourceSealing | None = None,
) -> IngestSummary:
    """Send ``events(summary.counters)`` and fill ``summary``; warn before sending events
    the worker will refuse (module doc). ``events`` must yield the same events each call
    (it is called twice with ``prescan``, the first time with throwaway counters).
    ``hints`` adds advice to the warning of a refusal kind. ``sealing`` seals the tenant's
    policy fields before they leave the process (docs/PRIVACY.md).

    Raises what :class:`~authtrail.producers.sdk.producer.AuditProducer` raises:
    ``ConfigurationError``, ``InvalidArgumentError``, and ``DeliveryError`` naming events not
    acknowledged.
    """
    from authtrail.producers.sdk import AuditProducer  # Kafka only where it is used

    hints = hints or {}
    if prescan:
        preview = Preflight(now=now)
        total = sum(1 for event in events(ParseCounters()) if preview.check(event) or True)
        for kind, count in sorted(preview.refused.items()):  # before anything is sent
            warn(_warning(kind, count, total, preview.first[kind], hints.get(kind)))
    preflight = Preflight(now=now)
    # Envelopes: a file is bulk, and the worker pays per message (docs/PIPELINE.md).
    producer = AuditProducer(
        bootstrap_servers, topic, config=producer_config,
        envelope_bytes=DEFAULT_ENVELOPE_BYTES, sealing=sealing,
    )  # fmt: skip
    try:
        for event in events(summary.counters):
            refusal = preflight.check(event)
            if refusal is not None and not prescan and preflight.refused[refusal] == 1:
                warn(_warning(refusal, 1, None, preflight.first[refusal], hints.get(refusal)))
            producer.send(event)
            summary.sent += 1
    finally:
        summary.refused = preflight.refused
        try:
            producer.close()  # raises DeliveryError for anything not acknowledged
        finally:
            summary.acknowledged, summary.failed = producer.acknowledged, producer.failed
    return summary
