"""``authtrail ingest-http``: auth events and provider webhooks over HTTP, into Kafka.

The adapter around :mod:`authtrail.producers.http_ingest` (tokens, bodies, limits):

* ``POST /v1/ingest/events``: auth events as JSON (``schemas/auth_event.schema.json``);
  ``POST /v1/ingest/{keycloak,okta,auth0,cloudtrail}``: that provider's JSON (a Keycloak
  HTTP event listener, an Okta event hook, an Auth0 log stream, a CloudTrail file).
* ``GET /v1/ingest/okta`` with ``X-Okta-Verification-Challenge``: Okta's one-time
  verification, answered ``{"verification": <the header's value>}``.
* ``GET /openapi.json``: the OpenAPI 3.1 description (:mod:`authtrail.ingest_openapi`).

``authtrail up`` serves it too when a token file exists (:func:`serve_for_up`).

Every request needs ``Authorization: Bearer <token>`` of the token file (401 without,
403 for a path or tenant the token does not grant). Answers: **202** only once Kafka
acknowledged every event of the request (or, with ``--spool-dir``, once the durable spool
holds them); 400 with the reason, nothing sent; 411 / 413 (body or batch too large); 429
with ``Retry-After`` (rate, or the producer's queue or spool is full); 503 when the
broker did not acknowledge in time: events may still arrive, and a retry repeats their
ids, which the sequencer records once. Requests are sent one at a time (a lock around
send and flush), so an acknowledgement is never another request's.

Plain HTTP, bound to 127.0.0.1 by default: put a TLS proxy in front of a public address.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from authtrail.background_http import BackgroundHttpServer
from authtrail.errors import (
    ConfigurationError,
    DeliveryError,
    InvalidArgumentError,
    ProducerQueueFullError,
)
from authtrail.producers.http_ingest import (
    PATHS,
    BadRequest,
    RateLimiter,
    TokenGrant,
    TokenTable,
    events_of_body,
    json_reply,
    new_token_line,
)
from authtrail.producers.ingest import Preflight
from authtrail.settings import Settings

__all__ = [
    "DEFAULT_LISTEN",
    "IngestHttpServer",
    "IngestService",
    "run_ingest_http",
    "run_ingest_token",
    "serve_for_up",
]

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:7381"
PREFIX = "/v1/ingest/"
OKTA_CHALLENGE = "X-Okta-Verification-Challenge"
_Answer = tuple[int, bytes, dict[str, str]]


class IngestService:
    """What the handler calls: authenticate, parse, limit, send. Thread-safe.

    ``producer`` is an :class:`~authtrail.producers.sdk.producer.AuditProducer` (with a spool when
    ``spooled``); ``ack_timeout`` bounds the wait for Kafka's acknowledgement. ``sealing``
    (a :class:`~authtrail.producers.sdk.sealing.SourceSealing`) seals a request's events,
    all of them before any is sent, so a key store failure sends nothing.
    """

    def __init__(
        self, tokens: TokenTable, producer: Any, *, spooled: bool = False,
        max_body_bytes: int = 1 << 20, limiter: RateLimiter | None = None,
        ack_timeout: float = 10.0, sealing: Any = None,
    ) -> None:  # fmt: skip
        self.tokens, self.producer, self.spooled = tokens, producer, spooled
        self.sealing = sealing
        self.max_body_bytes, self.ack_timeout = max_body_bytes, ack_timeout
        self.limiter = limiter or RateLimiter(1000.0, 5000, time.monotonic)
        self.preflight = Preflight()
        self._send_lock = threading.Lock()

    def authenticate(self, authorization: str | None) -> TokenGrant | _Answer:
        scheme, _, token = (authorization or "").partition(" ")
        grant = self.tokens.grant_for(token.strip()) if scheme.lower() == "bearer" else None
        if grant is None:
            header = {"WWW-Authenticate": 'Bearer realm="authtrail-ingest"'}
            return 401, json_reply({"error": "missing or unknown bearer token"}), header
        return grant

    def post(self, name: str, grant: TokenGrant, body: bytes) -> _Answer:
        if not grant.allows(name):
            return _error(403, f"token {grant.name!r} may not use {PREFIX}{name}")
        try:
            events, counters = events_of_body(name, body, grant.tenant_id, self.preflight)
        except BadRequest as refused:
            return _error(refused.status, str(refused))
        wait = self.limiter.take(grant.name, len(events))
        if math.isinf(wait):
            return _error(413, f"{len(events)} events exceed the burst of {self.limiter.burst}")
        if wait > 0:
            return _error(429, f"rate limit of {self.limiter.rate:g} events/s", wait)
        if self.sealing is not None:
            try:
                events = [dict(self.sealing.seal(event)) for event in events]
            except InvalidArgumentError as refused:
                return _error(400, str(refused))
            except (ConfigurationError, OSError) as exc:
                logger.error("ingest-http cannot seal: %s", exc)
                return _error(503, "the key store failed: see the server log", 5.0)
        with self._send_lock:
            answer = self._send(events)
        if answer is not None:
            return answer
        return 202, json_reply({
            "accepted": len(events), "event_ids": [event["event_id"] for event in events],
            "skipped": dict(counters.skipped), "held_by": "spool" if self.spooled else "kafka",
        }), {}  # fmt: skip

    def _send(self, events: list[dict[str, Any]]) -> _Answer | None:
        sent = 0
        try:
            for event in events:
                self.producer.send(event)
                sent += 1
        except ProducerQueueFullError:
            if sent == 0:
                return _error(429, "the producer's queue is full", 1.0)
            # Some are queued: wait for them below, then ask for the rest again.
        except DeliveryError as exc:
            logger.error("ingest-http cannot send: %s", exc)
            return _error(503, "the producer stopped: see the server log", 5.0)
        if self.spooled and sent == len(events):
            return None
        remaining = self.producer.flush(self.ack_timeout)
        failures = self.producer.take_failures()
        if remaining or failures or sent < len(events):
            unacknowledged = remaining + len(failures) + len(events) - sent
            return _error(503, f"{unacknowledged} of {len(events)} events not acknowledged "
                          "by Kafka; retry (ids repeat, stored once)", 1.0)  # fmt: skip
        return None


def _error(status: int, reason: str, retry_after: float | None = None) -> _Answer:
    headers = {} if retry_after is None else {"Retry-After": str(max(1, math.ceil(retry_after)))}
    return status, json_reply({"error": reason}), headers


class _Handler(BaseHTTPRequestHandler):
    service: IngestService
    openapi: bytes
    protocol_version = "HTTP/1.1"
    server_version = "authtrail-ingest"

    def do_POST(self) -> None:
        name = self._route()
        if name is None:
            return
        grant = self.service.authenticate(self.headers.get("Authorization"))
        if not isinstance(grant, TokenGrant):
            self._reply(*grant)
            return
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._reply(*_error(411, "Content-Length required"))
            return
        if int(length_text) > self.service.max_body_bytes:
            self.close_connection = True  # the unread body would be taken for a request
            self._reply(*_error(413, f"body larger than {self.service.max_body_bytes} bytes"))
            return
        self._reply(*self.service.post(name, grant, self.rfile.read(int(length_text))))

    def do_GET(self) -> None:
        if self.path != "/openapi.json" and self._route() is None:
            return
        grant = self.service.authenticate(self.headers.get("Authorization"))
        if not isinstance(grant, TokenGrant):
            self._reply(*grant)
        elif self.path == "/openapi.json":
            self._reply(200, self.openapi, {})
        elif (
            self.path == f"{PREFIX}okta" and grant.allows("okta") and OKTA_CHALLENGE in self.headers
        ):
            # Okta's one-time verification of a new event hook: echo the challenge.
            self._reply(200, json_reply({"verification": self.headers[OKTA_CHALLENGE]}), {})
        else:
            self._reply(*_error(405, "use POST"), extra={"Allow": "POST"})

    def _route(self) -> str | None:
        name = self.path.removeprefix(PREFIX) if self.path.startswith(PREFIX) else None
        if name not in PATHS:
            self._reply(*_error(404, f"no such path; POST to {PREFIX}{{{','.join(PATHS)}}}"))
            return None
        return name

    def _reply(
        self, status: int, data: bytes, headers: Mapping[str, str],
        extra: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in {**headers, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class IngestHttpServer(BackgroundHttpServer):
    """Serves an :class:`IngestService` on ``host:port`` (port 0: any free port)."""

    def __init__(self, service: IngestService, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.service = service

    @property
    def url(self) -> str:
        """``http://host:port``. Requires :meth:`start`."""
        return f"http://{self.url_host}:{self.port}"

    def start(self) -> IngestHttpServer:
        """Bind and serve in a background thread; returns self. Raises OSError on bind."""
        from authtrail.ingest_openapi import openapi_document

        if self._server is None:
            document = json.dumps(openapi_document(), indent=2).encode("utf-8")
            handler = type("BoundIngestHandler", (_Handler,), {
                "service": self.service, "openapi": document})  # fmt: skip
            self._serve(handler, "authtrail-ingest-http")
        return self


# --- CLI ------------------------------------------------------------------------------


def tokens_path(args: argparse.Namespace, settings: Settings) -> Path:
    """``--tokens``, else ``AUTHTRAIL_INGEST_TOKENS``, else ``DATA_DIR/ingest-tokens``."""
    chosen = args.tokens or os.environ.get("AUTHTRAIL_INGEST_TOKENS")
    return Path(chosen) if chosen else settings.data_dir / "ingest-tokens"


def serve_for_up(
    settings: Settings, listen: str | None
) -> tuple[IngestHttpServer, Callable[[], None]] | None:
    """For ``authtrail up``: serve ingest-http on ``listen`` (default ``DEFAULT_LISTEN``)
    if a token file exists (``AUTHTRAIL_INGEST_TOKENS`` or ``DATA_DIR/ingest-tokens``);
    returns the server and its stop function, or None without a token file. Raises
    :class:`ConfigurationError` as :func:`run_ingest_http`."""
    from authtrail.privacy import source_sealing
    from authtrail.producers.sdk import AuditProducer
    from authtrail.witness import parse_listen

    path = tokens_path(argparse.Namespace(tokens=None), settings)
    if not path.exists():
        return None
    tokens = TokenTable.load(path)
    listen = listen or os.environ.get("AUTHTRAIL_INGEST_LISTEN") or DEFAULT_LISTEN
    host, port = parse_listen(listen)
    # up runs the worker beside it: same policy, same key store, so seal at the source.
    sealing = source_sealing(settings) if settings.privacy_policy_file is not None else None
    # Bare messages: a full queue must raise ProducerQueueFullError (429), not wait.
    producer = AuditProducer(
        settings.bootstrap_servers or "", settings.events_topic, envelope_bytes=0
    )
    try:
        service = IngestService(tokens, producer, sealing=sealing)
        server = IngestHttpServer(service, host, port).start()
    except OSError as exc:
        producer.close()
        reason = f"ingest-http cannot listen on {listen}: {exc.strerror} (--ingest-listen)"
        raise ConfigurationError(reason) from None

    def stop() -> None:
        server.stop()
        producer.close()

    return server, stop


def run_ingest_token(args: argparse.Namespace, settings: Settings) -> int:
    """Append a new token's line to the token file (mode 0600) and print the token once."""
    path = tokens_path(args, settings)
    token, line = new_token_line(args.name, args.tenant, args.sources)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    print(token)
    return 0


def run_ingest_http(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM. Raises :class:`ConfigurationError` for a missing or
    malformed token file, an address it cannot listen on, or unusable producer settings."""
    from authtrail.privacy import source_sealing
    from authtrail.producers.sdk import AuditProducer
    from authtrail.witness import parse_listen

    tokens = TokenTable.load(tokens_path(args, settings))
    sealing = source_sealing(settings) if args.seal else None
    listen = args.listen or os.environ.get("AUTHTRAIL_INGEST_LISTEN") or DEFAULT_LISTEN
    host, port = parse_listen(listen)
    if args.max_body_bytes < 1 or args.rate <= 0 or args.burst < 1:
        raise ConfigurationError("--max-body-bytes, --rate and --burst must be positive")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Bare messages: a full queue must raise ProducerQueueFullError (429), not wait.
    producer = AuditProducer(
        settings.bootstrap_servers or "", settings.events_topic, spool_dir=args.spool_dir,
        envelope_bytes=0,
    )  # fmt: skip
    try:
        service = IngestService(
            tokens, producer, spooled=args.spool_dir is not None,
            max_body_bytes=args.max_body_bytes,
            limiter=RateLimiter(args.rate, args.burst, time.monotonic),
            sealing=sealing,
        )  # fmt: skip
        try:
            server = IngestHttpServer(service, host, port).start()
        except OSError as exc:
            raise ConfigurationError(
                f"ingest-http cannot listen on {listen}: {exc.strerror}"
            ) from None
        try:
            print(f"ingest-http listening on {server.url}{PREFIX}{{{','.join(PATHS)}}}", flush=True)
            stop.wait()
        finally:
            server.stop()
    finally:
        producer.close()
    return 0
