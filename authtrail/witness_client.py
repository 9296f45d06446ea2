"""Ask witnesses to cosign checkpoints (the client side of c2sp.org/tlog-witness).

* :func:`submit_checkpoint` sends one ``add-checkpoint`` request and returns the
  cosignature lines, or the witness's size when it answered 409 ``text/x.tlog.size``
  (the client's idea of the witness's size was wrong: retry with a proof from there).
* :func:`cosign_checkpoint` does that retry once, given a function that produces the
  consistency proof from any older size.
* :class:`WitnessSubmitter` is what a publisher calls for every new checkpoint: it
  remembers each witness's size per origin, collects the cosignatures of every witness,
  keeps only those that verify under the witness's configured key, and returns the note
  with them appended (:func:`authtrail.stream.core.cosignature.append_cosignatures`).

Refusals come back as the exceptions the witness raised
(:mod:`authtrail.stream.core.witness_state`), reconstructed from the status: 400
:class:`MalformedRequestError` (also a rollback), 403
:class:`LogSignatureError`, 404 :class:`UnknownOriginError`, 409 without a size
:class:`ForkError`, 422 :class:`ConsistencyProofError`. An unreachable witness or any
other status raises :class:`WitnessUnavailableError`.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from authtrail.errors import AuthtrailError, ConfigurationError, InvalidArgumentError
from authtrail.stream.core.cosignature import WitnessKey, append_cosignatures, check_witness_reply
from authtrail.stream.core.merkle import consistency_proof_from_leaf_hashes
from authtrail.stream.core.note import SIGNATURE_PREFIX
from authtrail.stream.core.witness_state import (
    AddCheckpointRequest,
    ConsistencyProofError,
    ForkError,
    LogSignatureError,
    MalformedRequestError,
    SizeConflictError,
    UnknownOriginError,
    WitnessRefusal,
)

logger = logging.getLogger(__name__)

SIZE_CONTENT_TYPE = "text/x.tlog.size"
_MAX_REPLY_BYTES = 64 * 1024
_REFUSAL_OF_STATUS: dict[int, type[WitnessRefusal]] = {
    400: MalformedRequestError,
    403: LogSignatureError,
    404: UnknownOriginError,
    409: ForkError,
    422: ConsistencyProofError,
}

ProofSource = Callable[[int], Sequence[bytes]]
"""``proof_for(old_size)``: the RFC 6962 consistency proof from ``old_size`` to the
checkpoint's size (empty for 0); raises :class:`InvalidArgumentError` if impossible."""


def proof_source_from_leaf_hashes(leaf_hashes: Sequence[bytes], new_size: int) -> ProofSource:
    """Return a :data:`ProofSource` for the checkpoint of ``new_size`` over ``leaf_hashes``.

    ``leaf_hashes`` are the tenant's stored ``leaf_hash`` values in ``seq`` order (at least
    ``new_size`` of them; later ones are ignored). The proof costs O(``new_size``) hashing.
    Raises :class:`InvalidArgumentError` now if there are fewer than ``new_size``, and
    from the source when asked for an old size above ``new_size``.
    """
    if len(leaf_hashes) < new_size:
        raise InvalidArgumentError(f"{len(leaf_hashes)} leaf hashes, need {new_size}")
    prefix = leaf_hashes[:new_size]
    return lambda old_size: consistency_proof_from_leaf_hashes(prefix, old_size)


class WitnessUnavailableError(AuthtrailError):
    """A witness could not be reached or answered outside the protocol (``url``, ``reason``)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"witness {url}: {reason}")


class WitnessRestingError(WitnessUnavailableError):
    """The witness was not asked: it could not be reached lately and rests until its next try."""


@dataclass(frozen=True)
class WitnessReply:
    """A witness's answer: cosignature lines (200), or its size (409 size conflict)."""

    cosignature_lines: tuple[str, ...] = ()
    witness_size: int | None = None


def submit_checkpoint(
    witness_url: str,
    old_size: int,
    proof: Sequence[bytes],
    note: bytes,
    *,
    timeout: float = 10.0,
) -> WitnessReply:
    """POST ``note`` with ``old_size`` and ``proof`` to ``witness_url/add-checkpoint``.

    ``witness_url`` is the witness's submission prefix (``http://host:port``). Returns
    the cosignature lines (each ending in ``\\n``) or, on a 409 with a size body, the
    witness's size. Raises :class:`InvalidArgumentError` for an impossible request (see
    :class:`AddCheckpointRequest`), a :class:`WitnessRefusal` subclass for a refusal,
    :class:`WitnessUnavailableError` when unreachable or answering out of protocol.
    """
    body = AddCheckpointRequest(old_size, tuple(proof), note).encode()
    url = witness_url.rstrip("/") + "/add-checkpoint"
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "text/plain; charset=utf-8")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return WitnessReply(cosignature_lines=_cosignature_lines(url, response.read()))
    except urllib.error.HTTPError as error:
        with error:
            text = error.read(_MAX_REPLY_BYTES).decode("utf-8", "replace")
            content_type = (error.headers.get("Content-Type") or "").split(";")[0].strip()
        if error.code == 409 and content_type == SIZE_CONTENT_TYPE:
            return WitnessReply(witness_size=_size(url, text))
        refusal = _REFUSAL_OF_STATUS.get(error.code)
        if refusal is None:
            raise WitnessUnavailableError(url, f"HTTP {error.code}: {text.strip()[:200]}") from None
        raise refusal(f"witness {url} refused (HTTP {error.code}): {text.strip()[:300]}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise WitnessUnavailableError(url, f"unreachable: {reason}") from None


def _cosignature_lines(url: str, data: bytes) -> tuple[str, ...]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessUnavailableError(url, "reply is not UTF-8") from None
    lines = tuple(text.splitlines(keepends=True))
    if not lines or not all(
        line.startswith(SIGNATURE_PREFIX) and line.endswith("\n") for line in lines
    ):
        raise WitnessUnavailableError(url, "reply is not a list of signature lines")
    return lines


def _size(url: str, text: str) -> int:
    size_text = text.removesuffix("\n")
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise WitnessUnavailableError(url, f"409 body is not a tree size: {text[:40]!r}")
    return int(size_text)


def cosign_checkpoint(
    witness_url: str,
    note: bytes,
    old_size: int,
    proof_for: ProofSource,
    *,
    timeout: float = 10.0,
) -> tuple[tuple[str, ...], int]:
    """Get ``witness_url``'s cosignature of ``note``; return ``(lines, witness size before)``.

    Starts from ``old_size`` (what the caller believes the witness holds; 0 if unknown)
    and, if the witness answers with another size, retries once from that size.
    Raises :class:`SizeConflictError` if it still conflicts, or if the witness already
    holds a larger size than ``note`` (it will never cosign this one), plus whatever
    :func:`submit_checkpoint` raises.
    """
    origin = note.split(b"\n", 1)[0].decode("utf-8", "replace")
    size = old_size
    for _attempt in range(2):
        try:
            proof = proof_for(size)
        except InvalidArgumentError:
            raise SizeConflictError(origin, old_size, size) from None
        reply = submit_checkpoint(witness_url, size, proof, note, timeout=timeout)
        if reply.witness_size is None:
            return reply.cosignature_lines, size
        logger.info("witness %s holds %s at size %d, not %d", witness_url, origin,
                    reply.witness_size, size)  # fmt: skip
        size = reply.witness_size
    raise SizeConflictError(origin, old_size, size)


class WitnessSubmitter:
    """Collects cosignatures of each new checkpoint from a fixed set of witnesses.

    Remembers, per witness and origin, the size it last cosigned, so the next request
    carries the right old size and proof (a restart costs one 409 round trip per origin).
    With ``keys`` (witness URL → its :class:`~authtrail.stream.core.cosignature.WitnessKey`), only
    reply lines that are that witness's valid cosignatures are kept (anything else is a
    failure). With ``retry_after`` > 0, a witness that could not be reached is skipped
    for that many seconds, so a witness that hangs costs one ``timeout`` per
    ``retry_after``, not one per checkpoint. Not thread-safe: one publisher thread calls
    :meth:`cosign`.
    """

    def __init__(
        self,
        witness_urls: Sequence[str],
        *,
        keys: Mapping[str, WitnessKey] | None = None,
        timeout: float = 10.0,
        retry_after: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not witness_urls:
            raise InvalidArgumentError("WitnessSubmitter needs at least one witness URL")
        self.witness_urls = tuple(witness_urls)
        self._keys = dict(keys or {})
        self._timeout = timeout
        self._retry_after = retry_after
        self._monotonic = monotonic
        self._sizes: dict[tuple[str, str], int] = {}
        self._resting: dict[str, float] = {}  # url -> monotonic time of its next try

    def cosign(
        self, note: bytes, size: int, proof_for: ProofSource, urls: Iterable[str] | None = None
    ) -> tuple[bytes, dict[str, AuthtrailError]]:
        """Ask every witness (or those of ``urls``) to cosign ``note`` (a checkpoint of
        ``size``).

        Returns the note with every cosignature obtained appended, and the failures by
        witness URL (a refusal, an unreachable or resting witness, a reply that is not
        its key's valid cosignature, or what ``proof_for`` raised); the caller decides
        whether the cosignatures it got are enough
        (:func:`authtrail.stream.core.cosignature.verify_cosignatures` with ``required``). Never
        raises for one witness's failure.
        """
        origin = note.split(b"\n", 1)[0].decode("utf-8", "replace")
        body = note[: note.rfind(b"\n\n") + 1]
        failures: dict[str, AuthtrailError] = {}
        asked = self.witness_urls if urls is None else [u for u in self.witness_urls if u in urls]
        for url in asked:
            known = self._sizes.get((url, origin), 0)
            try:
                self._check_awake(url)
                lines, _ = cosign_checkpoint(url, note, known, proof_for, timeout=self._timeout)
                self._sizes[(url, origin)] = size  # it answered 200: it holds this size now
                key = self._keys.get(url)
                if key is not None:
                    lines = tuple(check_witness_reply(body, lines, key))
            except AuthtrailError as exc:
                # The caller gets the failures and decides how loud they are.
                logger.debug("witness %s did not cosign %s size %d: %s", url, origin, size, exc)
                failures[url] = exc
                if isinstance(exc, SizeConflictError):
                    self._sizes[(url, origin)] = exc.current_size
                if isinstance(exc, WitnessUnavailableError) and url not in self._resting:
                    self._resting[url] = self._monotonic() + self._retry_after
                continue
            note = append_cosignatures(note, lines)
        return note, failures

    def witness_key(self, url: str) -> WitnessKey | None:
        """The vkey configured for the witness at ``url`` (None: none configured)."""
        return self._keys.get(url)

    def _check_awake(self, url: str) -> None:
        """Raise :class:`WitnessUnavailableError` while ``url`` rests after a failure."""
        next_try = self._resting.get(url)
        if next_try is None:
            return
        wait = next_try - self._monotonic()
        if wait > 0:
            raise WitnessRestingError(url, f"skipped: unreachable, next try in {wait:.0f} s")
        del self._resting[url]


def parse_cosigning_witness(text: str) -> tuple[str, Path]:
    """Split a ``URL=KEYFILE`` setting (``AUTHTRAIL_COSIGNING_WITNESSES`` item).

    ``URL`` is the witness's submission prefix, ``http://`` or ``https://`` with a host
    and no query; ``KEYFILE`` holds its C2SP vkey. Raises :class:`ConfigurationError`
    naming the item when it is not of that form.
    """
    url, equals, key_file = text.strip().partition("=")
    parts = urllib.parse.urlsplit(url)
    if (
        not equals
        or not key_file
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
    ):
        raise ConfigurationError(
            f"cosigning witness {text!r}: expected URL=KEYFILE, URL http(s)://host[:port][/path] "
            "(the witness's submission prefix), KEYFILE its verifier key"
        )
    return url, Path(key_file)
