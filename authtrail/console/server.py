"""The web console: search, events with their proofs, live lockouts, charts, integrity.

Served by ``authtrail up`` (beside the store's HTTP front) and by ``authtrail console``
against a ClickHouse server. It is a reader and nothing else:

* it queries only through a ClickHouse URL (the front's or a server's) with
  ``readonly=2``, the analyst's credential, never the writer's, and never opens a chdb
  directory itself;
* it answers GET (and HEAD) only; every other method gets 405;
* every request needs HTTP basic auth with the user and password of that same URL: the
  console is behind the credential of the store it shows, not one of its own;
* a request whose ``Host`` is not the console's own address is refused (a page that
  rebinds its DNS name to 127.0.0.1 sends its own name);
* pages carry a Content-Security-Policy without inline script, and every value is
  escaped (:mod:`authtrail.console.pages`); queries are constant text with parameters
  (:mod:`authtrail.sinks.console_queries`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import logging
import os
import re
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from authtrail.background_http import BackgroundHttpServer, own_host_names
from authtrail.console.charts import bar_chart, line_chart
from authtrail.console.lag import LagSampler
from authtrail.console.pages import (
    SCRIPT,
    STYLESHEET,
    dashboard_page,
    error_page,
    event_page,
    integrity_page,
    lockout_page,
    lockouts_page,
    parse_position,
    parse_search,
    search_page,
    with_evidence,
)
from authtrail.errors import (
    AuthtrailError,
    ConfigurationError,
    InvalidArgumentError,
    VerificationError,
)
from authtrail.settings import Settings
from authtrail.sinks import console_queries as queries
from authtrail.sinks.clickhouse import ClickHouseBackend
from authtrail.sinks.proofs import ProofUnavailableError, prove_inclusion
from authtrail.sinks.server import ServerBackend, parse_server_url
from authtrail.verify_report import REPORT_FILE, read_report

_LOG = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:8125"
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class Console(BackgroundHttpServer):
    """Serve the console on ``host``:``port`` (0: any free port) from ``backend``.

    ``backend`` must be read-only (a :class:`ServerBackend` with ``read_only=True``);
    requests must log in as ``user``/``password``. The backend stays the caller's: stop()
    does not close it. Raises InvalidArgumentError for an empty password or a backend
    that may write.
    """

    def __init__(
        self,
        backend: ClickHouseBackend,
        *,
        user: str,
        password: str,
        log_origin: str,
        report_path: Path,
        lag: LagSampler | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not password:
            raise InvalidArgumentError("the console needs a password to guard it")
        if not getattr(backend, "read_only", False):
            raise InvalidArgumentError("the console reads through a read-only backend only")
        super().__init__(host, port)
        self.backend = backend
        self.log_origin = log_origin
        self.report_path = report_path
        self.lag = lag
        self._credential = (user.encode(), password.encode())
        self.store_lock = threading.Lock()  # one query at a time on the shared client
        self._own_hosts: frozenset[str] = frozenset()

    @property
    def url(self) -> str:
        return f"http://{self.url_host}:{self.port}/"

    def start(self) -> Console:
        self._serve(type("BoundHandler", (_Handler,), {"console": self}), "web-console")
        port = self.port
        self._own_hosts = frozenset(
            {f"{self.url_host.lower()}:{port}", f"127.0.0.1:{port}", f"localhost:{port}",
             f"[::1]:{port}", *(name.lower() for name in own_host_names(self.host, port))}
        )  # fmt: skip
        return self

    def admits(self, authorization: str) -> bool:
        """Whether an ``Authorization`` header carries this console's basic credential."""
        if not authorization.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, _, password = decoded.partition(b":")
        # Both compared, always, in constant time: timing must not tell which was wrong.
        same_user = hmac.compare_digest(user, self._credential[0])
        return same_user & hmac.compare_digest(password, self._credential[1])

    def own_host(self, host: str | None) -> bool:
        """Whether a ``Host`` header names this console (its address, loopback, or this
        machine's names when bound to every interface)."""
        return (host or "").strip().lower() in self._own_hosts

    def query(self, ask: Callable[[ClickHouseBackend], Any]) -> Any:
        with self.store_lock:
            return ask(self.backend)


class _Handler(BaseHTTPRequestHandler):
    console: Console
    protocol_version = "HTTP/1.1"
    server_version = "authtrail-console"

    def log_message(self, format: str, *args: Any) -> None:
        _LOG.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def _refuse_method(self) -> None:
        self.close_connection = True  # its body stays unread: the connection cannot go on
        if self._admitted():
            self._send(405, "text/plain; charset=utf-8", b"read-only: GET only\n",
                       {"Allow": "GET, HEAD"})  # fmt: skip

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def _admitted(self) -> bool:
        """Whether the request may go on; answers it (403 / 401) when not."""
        if not self.console.own_host(self.headers.get("Host")):
            message = b"Host is not this console's address (DNS rebinding protection)\n"
            self._send(403, "text/plain; charset=utf-8", message)
            return False
        if not self.console.admits(self.headers.get("Authorization", "")):
            challenge = {"WWW-Authenticate": 'Basic realm="authtrail console", charset="UTF-8"'}
            message = b"log in: user and token of the store\n"
            self._send(401, "text/plain; charset=utf-8", message, challenge)
            return False
        return True

    def _handle(self, head: bool = False) -> None:
        if not self._admitted():
            return
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        route = _ROUTES.get(url.path)
        try:
            if route is None:
                raise _NotFound(f"no page {url.path}")
            status, content_type, body, extra = route(self.console, query)
        except _NotFound as exc:
            status, content_type, body, extra = _html(404, error_page(404, str(exc)))
        except (InvalidArgumentError, ProofUnavailableError) as exc:
            code = 404 if isinstance(exc, ProofUnavailableError) else 400
            status, content_type, body, extra = _html(code, error_page(code, str(exc)))
        except VerificationError as exc:  # a proof that cannot be built from damaged rows
            status, content_type, body, extra = _html(409, error_page(409, f"damaged: {exc}"))
        except AuthtrailError as exc:
            status, content_type, body, extra = _html(502, error_page(502, f"store: {exc}"))
        except Exception:
            _LOG.exception("console request failed")
            status, content_type, body, extra = _html(500, error_page(500, "internal error"))
        self._send(status, content_type, body, extra, head=head)

    def _send(
        self, status: int, content_type: str, body: bytes,
        extra: dict[str, str] | None = None, head: bool = False,
    ) -> None:  # fmt: skip
        self.send_response(status)
        for name, value in {**_SECURITY_HEADERS, "Content-Type": content_type,
                            **(extra or {})}.items():  # fmt: skip
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)


class _NotFound(Exception):
    pass


Reply = tuple[int, str, bytes, dict[str, str]]


def _html(status: int, markup: str) -> Reply:
    return status, "text/html; charset=utf-8", markup.encode(), {}


def _event_types() -> list[str]:
    from authtrail.schemas import AUTH_EVENT, load_schema

    field = next(f for f in load_schema(AUTH_EVENT)["fields"] if f["name"] == "event_type")
    return [str(symbol) for symbol in field["type"]["symbols"]]


def _dashboard(console: Console, query: dict[str, str]) -> Reply:
    per_hour = console.query(queries.failed_logins_per_hour)
    addresses = console.query(queries.top_attacking_addresses)
    tenants = console.query(queries.events_per_tenant)
    charts = [
        ("Failed logins per hour (UTC)",
         line_chart("failed logins per hour", [h for h, _ in per_hour],
                    {"failed logins": [n for _, n in per_hour]} if per_hour else {}),
         "the 48 hours up to the newest failed login stored (event time)"),
        ("Top attacking addresses", bar_chart("failed logins per address", addresses),
         "failed logins per client address, all tenants"),
        ("Events per tenant", bar_chart("events per tenant", tenants), "stored events"),
        ("Pipeline lag", *_lag_chart(console.lag)),
    ]  # fmt: skip
    return _html(200, dashboard_page(charts))


def _lag_chart(lag: LagSampler | None) -> tuple[str, str]:
    if lag is None:
        return line_chart("pipeline lag", [], {}), "not sampled"
    samples = lag.samples()
    times = [datetime.fromtimestamp(s.at, UTC).strftime("%H:%M:%S") for s in samples]
    names = {"produced": "produced (events topic)", "sequenced": "sequenced (chained topic)",
             "stored": "stored (events + rejected)"}  # fmt: skip
    series = {
        name: [float(getattr(s, attribute) or 0) for s in samples]
        for attribute, name in names.items()
        if attribute == "stored" or lag.kafka
    }
    newest = samples[-1] if samples else None
    note = (
        f"now: produced {newest.produced}, sequenced {newest.sequenced}, stored "
        f"{newest.stored} (UTC, sampled every few seconds while the console runs)"
        if newest else "no sample yet"
    )  # fmt: skip
    if not lag.kafka:
        note += "; no Kafka configured: stored only"
    if lag.last_error:
        note += f"; last sample failed: {lag.last_error}"
    return line_chart("produced vs sequenced vs stored", times, series), note


def _search(console: Console, query: dict[str, str]) -> Reply:
    tenants = console.query(queries.tenant_ids)
    if not any(query.values()):
        return _html(200, search_page(query, tenants, _event_types(), None))
    try:
        filters = parse_search(query)
    except InvalidArgumentError as exc:
        return _html(400, search_page(query, tenants, _event_types(), None, str(exc)))
    result = console.query(lambda backend: queries.search_events(backend, filters))
    return _html(200, search_page(query, tenants, _event_types(), result))


def _event(console: Console, query: dict[str, str]) -> Reply:
    tenant_id, seq = parse_position(query)
    detail = console.query(lambda backend: queries.event_detail(backend, tenant_id, seq))
    return _html(200 if detail else 404, event_page(tenant_id, seq, detail))


def _proof(console: Console, query: dict[str, str]) -> Reply:
    from authtrail.stream.core.bundle import bundle_json

    tenant_id, seq = parse_position(query)
    bundle = console.query(
        lambda backend: prove_inclusion(backend, console.log_origin, tenant_id, seq)
    )
    name = _SAFE_NAME.sub("_", f"authtrail-proof-{tenant_id}-{seq}.json")
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return 200, "application/json", bundle_json(bundle), headers


def _lockouts(console: Console, query: dict[str, str]) -> Reply:
    return _html(200, lockouts_page(console.query(queries.recent_lockouts)))


def _lockouts_json(console: Console, query: dict[str, str]) -> Reply:
    decisions = [with_evidence(row) for row in console.query(queries.recent_lockouts)]
    return 200, "application/json", json.dumps(decisions, default=str).encode(), {}


def _lockout(console: Console, query: dict[str, str]) -> Reply:
    tenant_id, seq = parse_position(query)
    failures = console.query(lambda backend: queries.lockout_evidence(backend, tenant_id, seq))
    return _html(200 if failures else 404, lockout_page(tenant_id, seq, failures))


def _integrity(console: Console, query: dict[str, str]) -> Reply:
    try:
        report, problem = read_report(console.report_path), ""
    except ConfigurationError as exc:
        report, problem = None, str(exc)
    chains = console.query(queries.chain_status)
    return _html(200, integrity_page(report, str(console.report_path), problem, chains))


def _static(content_type: str, text: str) -> Callable[[Console, dict[str, str]], Reply]:
    return lambda console, query: (200, content_type, text.encode(), {})


_ROUTES: dict[str, Callable[[Console, dict[str, str]], Reply]] = {
    "/": _dashboard,
    "/search": _search,
    "/event": _event,
    "/proof": _proof,
    "/lockouts": _lockouts,
    "/lockout": _lockout,
    "/api/lockouts": _lockouts_json,
    "/integrity": _integrity,
    "/static/console.css": _static("text/css; charset=utf-8", STYLESHEET),
    "/static/console.js": _static("text/javascript; charset=utf-8", SCRIPT),
}


# --- Starting it ---------------------------------------------------------------------


def open_console(
    settings: Settings, store_url: str, listen: str, report_path: Path | None = None
) -> tuple[Console, Callable[[], None]]:
    """Start a console on ``listen`` (HOST:PORT) reading ``store_url`` read-only, behind
    that URL's credential, with the lag sampler; returns it and its stop function. The
    verify report is read from ``report_path`` (default ``DATA_DIR/verify-report.json``).

    Raises ConfigurationError when the URL has no password or the address is taken.
    """
    from authtrail.witness import parse_listen

    address = parse_server_url(store_url)
    if not address.password:
        raise ConfigurationError(
            f"the console logs users in with the store's credential, and {address.redacted} "
            "has none: give a URL with the read-only user's password"
        )
    host, port = parse_listen(listen)
    backend = ServerBackend(store_url, read_only=True)
    try:
        console = Console(
            backend, user=address.username, password=address.password,
            log_origin=settings.log_origin,
            report_path=report_path or settings.data_dir / REPORT_FILE, host=host, port=port,
        ).start()  # fmt: skip
    except OSError as exc:
        backend.close()
        raise ConfigurationError(f"the console cannot listen on {listen}: {exc.strerror}") from None
    console.lag = LagSampler(
        settings.bootstrap_servers, settings.events_topic, settings.chained_topic,
        lambda: int(console.query(queries.stored_count)),
    ).start()  # fmt: skip

    def stop() -> None:
        if console.lag is not None:
            console.lag.stop()
        console.stop()
        backend.close()

    return console, stop


def run_console(args: argparse.Namespace, settings: Settings) -> int:
    """``authtrail console``: serve until SIGINT/SIGTERM."""
    from authtrail.sinks.service import running_broker, running_endpoint

    store_url = settings.clickhouse_url or running_endpoint(settings)
    if not store_url:
        raise ConfigurationError(
            "console needs --clickhouse-url (a read-only user of a ClickHouse server) or a "
            f"running `authtrail up` on {settings.data_dir}"
        )
    if not settings.bootstrap_servers and (servers := running_broker(settings)):
        settings = settings.with_overrides({"bootstrap_servers": servers})
    listen = args.listen or os.environ.get("AUTHTRAIL_CONSOLE_LISTEN") or DEFAULT_LISTEN
    console, stop_console = open_console(settings, store_url, listen, args.verify_report)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        user = parse_server_url(store_url).username
        print(f"web console: {console.url} (log in as {user} with the store's password)",
              flush=True)  # fmt: skip
        stop.wait()
    finally:
        stop_console()
    return 0
