"""``authtrail witness``: an HTTP witness that cosigns checkpoints (c2sp.org/tlog-witness).

Serves ``POST /add-checkpoint`` and nothing else. The decision is
:func:`authtrail.stream.core.witness_state.add_checkpoint`; the cosignature is
:func:`authtrail.stream.core.cosignature.cosign`. This module only translates HTTP and files:

* state: one file per origin in the state directory, ``<sha256(origin) hex>.note``,
  holding the log's signed note the witness last cosigned. Written as temp file + fsync +
  rename + fsync of the directory, so a crash leaves the old or the new note, never a
  torn one. The spec requires persisting before answering; this does.
* a lock per origin makes "read state, check old size, persist" atomic, so two
  concurrent requests for one origin cannot roll its state back (the race the spec
  describes); requests for different origins run in parallel.
* statuses: 200 cosignature line(s); 400 malformed or old size above the checkpoint's
  size; 403 log signature; 404 unknown origin; 409 old-size conflict (body: the
  witness's size, ``text/x.tlog.size``) or fork (same size, another root; plain text);
  411 no ``Content-Length``; 413 request too big; 422 bad consistency proof; 500 the
  witness's own state could not be read or written.

The witness key is an ordinary authtrail signer key (``authtrail keygen --name
<witness name>``); its verifier key for cosignatures (type 0x04) is printed on start.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from authtrail.atomic_file import read_bounded
from authtrail.background_http import BackgroundHttpServer
from authtrail.errors import AuthtrailError, ConfigurationError
from authtrail.keys import load_keyring, load_signer
from authtrail.stream.core.cosignature import WitnessKey, cosign, witness_key_of
from authtrail.stream.core.note import Signer, VerifierKey
from authtrail.stream.core.witness_state import (
    ConsistencyProofError,
    ForkError,
    LogSignatureError,
    LogTrust,
    MalformedRequestError,
    RollbackError,
    SizeConflictError,
    UnknownOriginError,
    WitnessedCheckpoint,
    WitnessRefusal,
    add_checkpoint,
    parse_add_checkpoint_request,
    witnessed_from_note,
)

logger = logging.getLogger(__name__)

ADD_CHECKPOINT_PATH = "/add-checkpoint"
SIZE_CONTENT_TYPE = "text/x.tlog.size"
DEFAULT_LISTEN = "127.0.0.1:7380"
MAX_REQUEST_BYTES = 256 * 1024  # 63 proof lines + a note with 100 signatures fit easily
_MAX_STATE_BYTES = 1024 * 1024

STATUS_OF_REFUSAL: Mapping[type[WitnessRefusal], int] = {
    MalformedRequestError: 400,
    RollbackError: 400,
    LogSignatureError: 403,
    UnknownOriginError: 404,
    SizeConflictError: 409,
    ForkError: 409,
    ConsistencyProofError: 422,
}
"""HTTP status of each refusal, as c2sp.org/tlog-witness assigns them."""


class StateDirectory:
    """The witness's per-origin state files in ``path`` (created with mode 0700)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create witness state dir {self.path}: {exc}"
            ) from None
        if not self.path.is_dir():
            raise ConfigurationError(f"witness state dir {self.path} is not a directory")

    def file_of(self, origin: str) -> Path:
        # A digest, not the origin itself: origins hold '/', may be long, and must never
        # name a path outside this directory.
        return self.path / f"{hashlib.sha256(origin.encode('utf-8')).hexdigest()}.note"

    def load(self, origin: str) -> WitnessedCheckpoint | None:
        """Return the stored checkpoint of ``origin``, ``None`` if never cosigned.

        Raises :class:`ConfigurationError` if the file cannot be read or is damaged:
        the witness must not forget a log's size, so it refuses to go on.
        """
        path = self.file_of(origin)
        data = read_bounded(path, _MAX_STATE_BYTES, "witness state")
        if data is None:
            return None
        try:
            return witnessed_from_note(data, origin)
        except AuthtrailError as exc:
            raise ConfigurationError(f"witness state {path} is damaged: {exc}") from None

    def store(self, checkpoint: WitnessedCheckpoint) -> None:
        """Replace the state of ``checkpoint.origin`` atomically and durably.

        Raises :class:`ConfigurationError` if it cannot be written (then nothing changed).
        """
        path = self.file_of(checkpoint.origin)
        descriptor, temporary = tempfile.mkstemp(dir=self.path, prefix=".tmp-", suffix=".note")
        try:
            try:
                os.write(descriptor, checkpoint.note)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, path)
        except OSError as exc:
            Path(temporary).unlink(missing_ok=True)
            raise ConfigurationError(f"cannot write witness state {path}: {exc.strerror}") from None
        _fsync_directory(self.path)


def _fsync_directory(path: Path) -> None:
    # Makes the rename durable: without it a crash may bring back the old name's target.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Witness:
    """Handles ``add-checkpoint`` bodies: lock the origin, decide, persist, cosign."""

    def __init__(
        self,
        signer: Signer,
        trust: LogTrust,
        state: StateDirectory,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = signer
        self._trust = trust
        self._state = state
        self._clock = clock
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.key: WitnessKey = witness_key_of(signer)

    @contextmanager
    def _origin_lock(self, origin: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(origin, threading.Lock())
        with lock:
            yield

    def add_checkpoint(self, body: bytes) -> str:
        """Process one request body; return the cosignature line(s) to answer with.

        Raises a :class:`~authtrail.stream.core.witness_state.WitnessRefusal` (see
        :data:`STATUS_OF_REFUSAL`) or :class:`ConfigurationError` when the state cannot
        be read or written.
        """
        request = parse_add_checkpoint_request(body)
        with self._origin_lock(request.origin):
            stored = self._state.load(request.origin)
            witnessed = add_checkpoint(request, stored, self._trust)
            self._state.store(witnessed)
        return cosign(witnessed.body, self._signer, int(self._clock()))


class _Handler(BaseHTTPRequestHandler):
    witness: Witness  # set on the subclass WitnessServer.start builds
    protocol_version = "HTTP/1.1"  # the spec asks witnesses to support keep-alive
    disable_nagle_algorithm = True
    server_version = "authtrail-witness"

    def do_POST(self) -> None:
        if self.path != ADD_CHECKPOINT_PATH:
            self._reply(404, "not found\n")
            return
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._reply(411, "Content-Length required\n")
            return
        length = int(length_text)
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True  # the unread body would be taken for a request
            self._reply(413, f"request larger than {MAX_REQUEST_BYTES} bytes\n")
            return
        body = self.rfile.read(length)
        try:
            line = self.witness.add_checkpoint(body)
        except SizeConflictError as exc:
            logger.info("add-checkpoint conflict: %s", exc)
            self._reply(409, f"{exc.current_size}\n", SIZE_CONTENT_TYPE)
        except WitnessRefusal as exc:
            status = STATUS_OF_REFUSAL.get(type(exc), 400)
            # A validly signed fork or bad proof is evidence of a misbehaving log.
            level = (
                logging.WARNING
                if isinstance(exc, ForkError | ConsistencyProofError)
                else logging.INFO
            )
            logger.log(level, "add-checkpoint refused (%d): %s", status, exc)
            self._reply(status, f"{exc}\n")
        except AuthtrailError as exc:
            logger.error("add-checkpoint failed: %s", exc)
            self._reply(500, "witness state unavailable\n")
        else:
            self._reply(200, line)

    def do_GET(self) -> None:
        if self.path == ADD_CHECKPOINT_PATH:
            self._reply(405, "use POST\n", extra={"Allow": "POST"})
        else:
            self._reply(404, "not found\n")

    def _reply(
        self,
        status: int,
        text: str,
        content_type: str = "text/plain; charset=utf-8",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class WitnessServer(BackgroundHttpServer):
    """Serves a :class:`Witness` over HTTP on ``host:port`` (port 0: any free port)."""

    def __init__(self, witness: Witness, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.witness = witness

    @property
    def url(self) -> str:
        """``http://host:port`` (the submission prefix). Requires :meth:`start`."""
        return f"http://{self.url_host}:{self.port}"

    def start(self) -> WitnessServer:
        """Bind and serve in a background thread; returns self. Raises OSError on bind."""
        if self._server is None:
            self._serve(
                type("BoundWitnessHandler", (_Handler,), {"witness": self.witness}),
                "authtrail-witness",
            )
        return self


# --- CLI ------------------------------------------------------------------------------


def parse_log_keys(specs: Sequence[str]) -> LogTrust:
    """Build the witness's :class:`LogTrust` from ``ORIGIN_OR_PREFIX=PUBFILE`` specs.

    ``PUBFILE`` is a verifier key file (several keys allowed, e.g. around a rotation);
    repeated origins merge their keys. Raises :class:`ConfigurationError` for a spec
    without ``=``, an unreadable key file, or no spec at all.
    """
    entries: dict[str, list[VerifierKey]] = {}
    for spec in specs:
        origin, equals, path = spec.partition("=")
        if not equals or not origin or not path:
            raise ConfigurationError(f"--log-key must be ORIGIN_OR_PREFIX=PUBFILE, got {spec!r}")
        entries.setdefault(origin, []).extend(load_keyring([Path(path)]).values())
    if not entries:
        raise ConfigurationError(
            "no log key: give --log-key ORIGIN_OR_PREFIX=PUBFILE (AUTHTRAIL_WITNESS_LOG_KEYS)"
        )
    return LogTrust(entries)


def parse_listen(listen: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT`` (IPv6 in brackets). Raises ConfigurationError."""
    host, colon, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigurationError(f"--listen must be HOST:PORT, got {listen!r}")
    return host, int(port_text)


def run_witness(args: argparse.Namespace) -> int:
    """Run the witness until SIGINT or SIGTERM; print its URL and verifier key first.

    Options absent from ``args`` (``None``) fall back to ``AUTHTRAIL_WITNESS_KEY``,
    ``AUTHTRAIL_WITNESS_STATE_DIR``, ``AUTHTRAIL_WITNESS_LOG_KEYS`` (comma-separated
    specs) and ``AUTHTRAIL_WITNESS_LISTEN``. Raises :class:`ConfigurationError` for
    missing or unusable options, keys or state, or an address it cannot listen on.
    """
    environ = os.environ
    key_path = args.key or environ.get("AUTHTRAIL_WITNESS_KEY")
    state_dir = args.state_dir or environ.get("AUTHTRAIL_WITNESS_STATE_DIR")
    if not key_path or not state_dir:
        raise ConfigurationError(
            "witness needs --key FILE (AUTHTRAIL_WITNESS_KEY) and --state-dir DIR "
            "(AUTHTRAIL_WITNESS_STATE_DIR)"
        )
    specs = args.log_keys or [
        spec.strip()
        for spec in environ.get("AUTHTRAIL_WITNESS_LOG_KEYS", "").split(",")
        if spec.strip()
    ]
    listen = args.listen or environ.get("AUTHTRAIL_WITNESS_LISTEN") or DEFAULT_LISTEN
    witness = Witness(load_signer(key_path), parse_log_keys(specs), StateDirectory(state_dir))
    host, port = parse_listen(listen)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        server = WitnessServer(witness, host, port).start()
    except OSError as exc:
        raise ConfigurationError(f"witness cannot listen on {listen}: {exc.strerror}") from None
    try:
        print(f"witness listening on {server.url}", flush=True)
        print(f"witness verifier key: {witness.key.key_string()}", flush=True)
        stop.wait()
    finally:
        server.stop()
    return 0
