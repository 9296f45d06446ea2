"""Count what a fault did to the stored log: lost, duplicated, forked (pure; no I/O).

The inputs are what the producer side knows (the event ids the broker acknowledged, and
where each acknowledged bad message landed) and what the store holds (``events`` and
``rejected`` rows). The checks are the suite's definition of correct:

* every acknowledged event id is stored exactly once — an acknowledged id missing from
  ``events`` is **lost**, each copy beyond the first is **duplicated**;
* every tenant's ``seq`` runs 1..n with one hash per seq — a seq stored with two different
  hashes, or a seq missing below the tenant's highest, is a **fork**;
* every acknowledged bad message is in ``rejected`` exactly once (by its source partition
  and offset), and nothing else is.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

# (partition, offset) of one message in the events topic.
Position = tuple[int, int]


@dataclass(frozen=True)
class StoredRecord:
    """One ``events`` row, reduced to what the checks compare.

    ``derived``: an event the pipeline made itself (a lockout decision), which no producer
    acknowledged; it must still be stored once and fit its tenant's 1..n line.
    """

    tenant_id: str
    seq: int
    hash: bytes
    event_id: str
    derived: bool = False


@dataclass(frozen=True)
class Tally:
    """What one scenario left in the store, compared with what the producer was told.

    ``events``: acknowledged good events. ``lost``: acknowledged, not stored.
    ``duplicated``: stored copies beyond the first of an id. ``forked_seqs``: (tenant, seq)
    stored with more than one hash. ``gaps``: seqs missing below a tenant's highest.
    ``derived``: distinct ids of events the pipeline made itself (``duplicated_derived``:
    the part of ``duplicated`` that is copies of those). ``unacknowledged_stored``:
    other stored ids the producer was not told about (allowed: an acknowledgement can be
    lost after the write). ``bad``: acknowledged bad messages;
    ``bad_lost`` / ``bad_duplicated``: of those, not in ``rejected`` / there more than
    once; ``wrongly_rejected``: ``rejected`` rows for messages that were not bad.
    ``either`` / ``either_rejected``: acknowledged events that may be chained or rejected
    (counted in ``events``), and how many of them were rejected.
    """

    events: int
    stored: int
    lost: int
    duplicated: int
    forked_seqs: int
    gaps: int
    derived: int
    unacknowledged_stored: int
    duplicated_derived: int = 0
    either: int = 0
    either_rejected: int = 0
    bad: int = 0
    bad_lost: int = 0
    bad_duplicated: int = 0
    wrongly_rejected: int = 0

    @property
    def forks(self) -> int:
        """Seqs with two hashes plus seqs missing: any break of a tenant's 1..n line."""
        return self.forked_seqs + self.gaps

    @property
    def clean(self) -> bool:
        """Nothing lost, duplicated or forked; every bad message rejected exactly once."""
        return not (
            self.lost
            or self.duplicated
            or self.forks
            or self.bad_lost
            or self.bad_duplicated
            or self.wrongly_rejected
        )

    def problems(self) -> list[str]:
        """Human-readable findings, empty when :attr:`clean`."""
        made = (
            f" ({self.duplicated_derived} made by the pipeline)" if self.duplicated_derived else ""
        )
        found = {
            "lost": self.lost,
            f"duplicated{made}": self.duplicated,
            "seqs with two hashes": self.forked_seqs,
            "seq gaps": self.gaps,
            "bad messages not rejected": self.bad_lost,
            "bad messages rejected twice": self.bad_duplicated,
            "good messages rejected": self.wrongly_rejected,
        }
        return [f"{count} {what}" for what, count in found.items() if count]


def tally(
    acknowledged_ids: Iterable[str],
    stored: Iterable[StoredRecord],
    *,
    acknowledged_bad: Iterable[Position] = (),
    rejected: Iterable[Position] = (),
    acknowledged_either: Iterable[tuple[str, Position]] = (),
) -> Tally:
    """Compare the store with the producer's acknowledgements (see the module docs).

    ``acknowledged_either``: acknowledged events the pipeline may either chain or reject
    (valid events sent with a wrong Kafka key): each must be in ``events`` or in
    ``rejected`` — once, and not in both. ``acknowledged_ids`` and the ids in
    ``acknowledged_either`` must not repeat; raises ValueError if they do, since a repeat
    would hide a duplicate.
    """
    either = dict(acknowledged_either)
    acknowledged = [*acknowledged_ids, *either]
    acknowledged_set = set(acknowledged)
    if len(acknowledged_set) != len(acknowledged):
        raise ValueError("an acknowledged id repeats; the harness sends each id once")
    records = list(stored)
    copies = Counter(record.event_id for record in records)
    derived = {record.event_id for record in records if record.derived}
    hashes: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    for record in records:
        hashes[(record.tenant_id, record.seq)].add(record.hash)
    bad = set(acknowledged_bad)
    rejected_copies = Counter(rejected)
    either_positions = set(either.values())
    either_rejected = {
        event_id for event_id, position in either.items() if position in rejected_copies
    }
    return Tally(
        events=len(acknowledged),
        stored=len(records),
        lost=sum(
            1
            for event_id in acknowledged
            if event_id not in copies and event_id not in either_rejected
        ),
        duplicated=sum(count - 1 for count in copies.values())
        + sum(
            rejected_copies[either[event_id]] - (event_id not in copies)
            for event_id in either_rejected
        ),
        forked_seqs=sum(1 for found in hashes.values() if len(found) > 1),
        gaps=_gaps(hashes),
        derived=len(derived),
        duplicated_derived=sum(copies[event_id] - 1 for event_id in derived),
        either=len(either),
        either_rejected=len(either_rejected),
        unacknowledged_stored=sum(
            1 for event_id in copies if event_id not in acknowledged_set and event_id not in derived
        ),
        bad=len(bad),
        bad_lost=sum(1 for position in bad if position not in rejected_copies),
        bad_duplicated=sum(
            count - 1 for position, count in rejected_copies.items() if position in bad
        ),
        wrongly_rejected=sum(
            count
            for position, count in rejected_copies.items()
            if position not in bad and position not in either_positions
        ),
    )


def _gaps(seqs: Iterable[tuple[str, int]]) -> int:
    """Seqs missing from 1..highest, summed over tenants (``seqs`` are distinct pairs)."""
    highest: dict[str, int] = defaultdict(int)
    present: dict[str, int] = defaultdict(int)
    for tenant_id, seq in seqs:
        if seq < 1:  # seqs start at 1; a stray 0 cannot fill a gap
            continue
        highest[tenant_id] = max(highest[tenant_id], seq)
        present[tenant_id] += 1
    return sum(highest[tenant_id] - present[tenant_id] for tenant_id in highest)
