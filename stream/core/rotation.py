"""Signing-key rotation: keyring lines with retirement marks, and who may sign what. Pure.

A tenant's checkpoints change signing key through a **hand-over**: one checkpoint signed
by both the old and the new key (C2SP signed notes carry any number of signatures). The
old key's signature on it links the new key to the history the old one signed, so a
verifier who trusts both can tell a rotation from a key swapped in by someone else.
:class:`KeySuccession` follows a tenant's checkpoints in size order and enforces:

* **continuity**: each checkpoint shares at least one trusted signer with the one before
  it; otherwise the keys changed without a hand-over (:data:`MISSING_HANDOVER`): a new
  key signing before any hand-over, or a hand-over signed by only one of the two keys;
* **forward only**: after a hand-over every checkpoint carries a signature by a key
  that joined at it (the old key alone is :data:`RETIRED_KEY`), and a key that stopped
  signing a tenant's checkpoints (it signed one, not the next) never signs that tenant
  again (:data:`RETIRED_KEY`).

Independently, a keyring may mark a key ``retired`` from a time on (CloudTrail's public
key list gives each key a validity range the same way): a checkpoint stamped at or after
that time (its ``authtrail-time``) that only retired keys signed is :data:`RETIRED_KEY`
too (:func:`check_retirement`). The stamp is signed by the key itself, so a stolen
retired key could backdate one; the hand-over rules above hold whatever the stamp.

Keyring line (one trusted key)::

    <verifier key string>                     trusted, not retired
    <verifier key string> retired <time>      may not sign alone from <time> on

``<time>`` is RFC 3339 in UTC: ``YYYY-MM-DDTHH:MM:SSZ``, optionally with 1-6 fraction
digits. ``#`` starts a comment line; blank lines are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from authtrail.errors import CheckpointError, ConfigurationError, SignatureError
from authtrail.stream.core.note import VerifierKey

RETIRED_KEY = "retired key"
MISSING_HANDOVER = "missing hand-over"
RETIRED_KEYWORD = "retired"

_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?Z")


class RetiredKeyError(SignatureError):
    """A checkpoint was signed only by keys retired before its time stamp."""


class KeySuccessionError(CheckpointError):
    """A tenant's checkpoints change signing key against the rotation rules.

    ``damage`` is :data:`RETIRED_KEY` or :data:`MISSING_HANDOVER`; ``detail`` says which
    keys signed the checkpoint and the one before it.
    """

    def __init__(self, damage: str, detail: str) -> None:
        self.damage, self.detail = damage, detail
        super().__init__(f"{damage}: {detail}")


def parse_time(text: str) -> int:
    """Unix microseconds of an RFC 3339 UTC time ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``.

    Raises :class:`ConfigurationError` for any other spelling or an impossible date.
    """
    match = _TIME.fullmatch(text)
    if match is None:
        raise ConfigurationError(f"time {text[:40]!r} is not YYYY-MM-DDTHH:MM:SS[.ffffff]Z")
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError as exc:
        raise ConfigurationError(f"time {text!r}: {exc}") from None
    seconds = int(moment.timestamp())
    return seconds * 1_000_000 + int((fraction or "0").ljust(6, "0"))


def format_time(micros: int) -> str:
    """The RFC 3339 UTC spelling of ``micros`` (fraction only when not whole seconds)."""
    seconds, fraction = divmod(micros, 1_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{fraction:06d}".rstrip("0") if fraction else "") + "Z"


def parse_keyring_line(line: str) -> VerifierKey:
    """Parse one keyring line: a verifier key string, optionally ``retired <time>``.

    Raises :class:`ConfigurationError` for a malformed key, an unknown annotation or a
    malformed time.
    """
    key_text, *annotation = line.split()
    key = VerifierKey.parse(key_text)
    if not annotation:
        return key
    if len(annotation) != 2 or annotation[0] != RETIRED_KEYWORD:
        raise ConfigurationError(
            f"after the key only 'retired <time>' may follow, got {' '.join(annotation)[:60]!r}"
        )
    return replace(key, retired_micros=parse_time(annotation[1]))


def keyring_line(key: VerifierKey) -> str:
    """The keyring line of ``key`` (inverse of :func:`parse_keyring_line`)."""
    if key.retired_micros is None:
        return key.key_string()
    return f"{key.key_string()} {RETIRED_KEYWORD} {format_time(key.retired_micros)}"


def check_retirement(time_micros: int, signers: Sequence[VerifierKey]) -> None:
    """Check that a checkpoint stamped ``time_micros`` has a signer not retired by then.

    Requires ``signers`` non-empty (the trusted keys whose signatures verified). Raises
    :class:`RetiredKeyError` if every one is retired at or before ``time_micros``.
    """
    active = [
        key for key in signers if key.retired_micros is None or time_micros < key.retired_micros
    ]
    if not active:
        retired = ", ".join(
            f"{key.label} (retired {format_time(key.retired_micros or 0)})" for key in signers
        )
        raise RetiredKeyError(
            f"checkpoint stamped {format_time(time_micros)} is signed only by retired keys: "
            f"{retired}"
        )


@dataclass(frozen=True)
class SignedRange:
    """Consecutive checkpoints of a tenant signed by the same keys: seq ``first_seq`` to
    ``last_seq``. ``hand_over``: a key joined here (its first checkpoint signed by both)."""

    first_seq: int
    last_seq: int
    signed_by: tuple[str, ...]
    checkpoints: int
    hand_over: bool = False

    def report(self) -> dict[str, object]:
        """JSON-ready values."""
        return {
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "signed_by": list(self.signed_by),
            "checkpoints": self.checkpoints,
            "hand_over": self.hand_over,
        }

    def describe(self) -> str:
        """``A & B (seq 1-20, hand-over)``, for text reports."""
        where = f"seq {self.first_seq}-{self.last_seq}" + (", hand-over" if self.hand_over else "")
        return f"{' & '.join(self.signed_by)} ({where})"


class KeySuccession:
    """Follows one tenant's checkpoints in size order and checks the key rules above."""

    def __init__(self) -> None:
        self._previous: frozenset[str] | None = None
        self._newest: frozenset[str] = frozenset()  # the keys that joined last
        self._handed_over_at = 0  # seq of the newest hand-over's checkpoint (0: none)
        self._left: set[str] = set()  # keys that signed a checkpoint and not the next
        self._ranges: list[SignedRange] = []

    def add(self, first_seq: int, size: int, signed_by: Iterable[str]) -> None:
        """Take the next checkpoint (batch ``first_seq..size``), signed by the key labels
        ``signed_by`` (non-empty: its trusted signers whose signatures verified).

        Raises :class:`KeySuccessionError`: a key that had stopped signing signs again,
        or none of the keys the log was last handed over to signs (:data:`RETIRED_KEY`);
        the signers share no key with the previous checkpoint's (:data:`MISSING_HANDOVER`).
        """
        signers = frozenset(signed_by)
        previous = self._previous
        returning = signers & self._left
        if returning:
            raise KeySuccessionError(
                RETIRED_KEY,
                f"{_shown(returning)} signed again after it stopped signing this log "
                f"(signed by {_shown(signers)})",
            )
        if previous is not None and not signers & previous:
            raise KeySuccessionError(
                MISSING_HANDOVER,
                f"signed by {_shown(signers)}, the previous checkpoint by {_shown(previous)}: "
                "no checkpoint signed by both hands the log over",
            )
        joined = signers - previous if previous is not None else signers
        if previous is not None and not joined and not signers & self._newest:
            raise KeySuccessionError(
                RETIRED_KEY,
                f"signed only by {_shown(signers)}, which handed this log over to "
                f"{_shown(self._newest)} at seq {self._handed_over_at}",
            )
        if joined:
            self._newest = joined
            self._handed_over_at = size if previous is not None else 0
        if previous is not None:
            self._left |= previous - signers
        hand_over = previous is not None and bool(joined)
        self._extend_ranges(first_seq, size, signers, hand_over=hand_over)
        self._previous = signers

    def _extend_ranges(
        self, first_seq: int, size: int, signers: frozenset[str], *, hand_over: bool
    ) -> None:
        labels = tuple(sorted(signers))
        last = self._ranges[-1] if self._ranges else None
        if last is not None and last.signed_by == labels and not hand_over:
            self._ranges[-1] = replace(last, last_seq=size, checkpoints=last.checkpoints + 1)
        else:
            self._ranges.append(SignedRange(first_seq, size, labels, 1, hand_over=hand_over))

    def ranges(self) -> tuple[SignedRange, ...]:
        """The signed ranges so far, in seq order."""
        return tuple(self._ranges)


def _shown(labels: Iterable[str]) -> str:
    return " & ".join(sorted(labels))
