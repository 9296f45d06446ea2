"""ClickHouse's HTTP interface, served from an embedded (chdb) store, read-only for analysts.

chdb is ClickHouse without a server, and one process owns a chdb directory. While
``authtrail up`` owns it, ``authtrail sql`` and ``authtrail verify`` in another terminal
reach it through this front with the ordinary :class:`~authtrail.sinks.server.ServerBackend`; tests
use it to exercise the clickhouse-connect code path without a ClickHouse server.

chdb is clickhouse-local inside: left alone, a query could read any file this process can
(the signing key included), write files, call URLs and read the process's Python objects.
So the front admits three users and nobody else, each with the rights of its role on a
ClickHouse server (sinks/access.py), enforced here since chdb has no access control:

* ``analyst`` with :attr:`HttpFront.token` (generated when not given): every request runs
  on the store's read-only connection (``readonly=2``: the engine refuses writes) and is
  *confined* (:mod:`authtrail.sinks.embedded_guard`): checked on the engine's own syntax tree so it
  names only the store's tables and allowed table functions, no ``file()``, ``url()``,
  ``Python()``, files by name, or settings that name files.
* ``auditor`` with ``auditor_token``, off unless configured: as the analyst, but reads
  only the tables ``authtrail verify`` needs (and the system catalogs), no view.
* ``writer`` with ``writer_token``, off unless configured (tests, a sink in another
  process): reads those tables and INSERTs into them, equally confined; no CREATE,
  ALTER, DROP, TRUNCATE, RENAME, OPTIMIZE or mutation. A GET stays read-only, as on a
  server. The owner of the store makes the schema (``authtrail init-db``, or ``up``).
* ``admin`` with ``admin_token``, off unless configured (tests that need a server's
  administrator): may also create, alter and drop, equally confined. ``up`` has none.

Credentials come as basic auth, ``X-ClickHouse-User``/``-Key`` headers or ``user`` /
``password`` URL parameters (what clickhouse-connect sends); wrong ones get 403 with code
516. ``/ping`` needs none. Against a web page in the operator's browser (CSRF, DNS
rebinding), a request is refused (403) when its ``Host`` is not this front's address or
in ``allowed_hosts``, or when it carries an ``Origin`` or ``Sec-Fetch-Site: cross-site`` /
``same-site`` whose origin is not in ``allowed_hosts``; clickhouse-connect sends neither.

It is test and embedded-mode infrastructure, not a server replacement: it listens on
loopback by default, speaks the subset of the protocol clickhouse-connect uses with
``compress=False`` and runs one statement at a time. What it understands:

* the query in the ``query`` URL parameter, the body, or both (concatenated);
* inserts as ``INSERT INTO t (cols) FORMAT Native`` (or Arrow…) + newline + binary data,
  streamed into the engine without a text round trip;
* settings as URL parameters, ``param_<name>`` query parameters, ``database``,
  ``default_format``, ``query_id``;
* replies with ``X-ClickHouse-Format`` / ``-Summary`` / ``-Query-Id`` / ``-Timezone``,
  errors as HTTP 500 (403 for access) with ``X-ClickHouse-Exception-Code`` and
  ClickHouse's message.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import secrets
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

from authtrail.background_http import BackgroundHttpServer
from authtrail.errors import AuthtrailError, InvalidArgumentError, StoreError
from authtrail.sinks.access import TABLES, front_grant
from authtrail.sinks.clickhouse_sql import (
    ACCESS_DENIED,
    AUTHENTICATION_FAILED,
    NOT_IMPLEMENTED,
    READONLY,
)
from authtrail.sinks.embedded import EmbeddedBackend, QueryOutcome
from authtrail.sinks.query_policy import Grant

logger = logging.getLogger(__name__)

_BAD_ARGUMENTS = 36
_CANNOT_PARSE_INPUT = 27
_STD_EXCEPTION = 1001

# URL parameters that steer the HTTP layer rather than name an engine setting.
_HTTP_PARAMETERS = frozenset(
    {
        "query", "database", "default_format", "query_id", "session_id", "session_timeout",
        "session_check", "user", "password", "quota_key", "compress", "decompress",
        "buffer_size", "wait_end_of_query", "client_protocol_version", "role", "stacktrace",
        "enable_http_compression", "http_zlib_compression_level", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
        "http_native_compression_disable_checksumming_on_decompress",
    }
)  # fmt: skip
_INSERT_WITH_DATA = re.compile(
    rb"\A\s*(INSERT\s+INTO\s.+?)\s+FORMAT\s+([A-Za-z0-9_]+)[ \t]*(?:\r?\n|\Z)", re.S | re.I
)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*\Z", re.I)
_INSERT_HEAD_LIMIT = 1 << 16  # the statement before an insert's data is never larger
_BINARY_FORMATS = ("Native", "Arrow", "ArrowStream", "Parquet", "RowBinary", "ORC")

Role = Literal["analyst", "auditor", "writer", "admin"]
ADMIN: Role = "admin"
ANALYST: Role = "analyst"
AUDITOR: Role = "auditor"
WRITER: Role = "writer"


class HttpFront(BackgroundHttpServer):
    """Serve ``backend`` over ClickHouse's HTTP protocol on ``host``:``port``.

    ``port=0`` picks a free port (read :attr:`port` after :meth:`start`). Analysts log in
    as user ``analyst`` with ``token`` (None: a fresh ``secrets.token_urlsafe(32)``, read
    :attr:`token`); user ``auditor`` with ``auditor_token`` reads verify's tables; user
    ``writer`` with ``writer_token`` reads and inserts into ``writer_tables`` (default:
    authtrail's tables); user ``admin`` with ``admin_token`` may also change the schema.
    Those three exist only when their token is given. ``allowed_hosts``
    adds ``host:port`` names (and origins) requests may use besides this front's own
    address. The backend stays owned by the caller: :meth:`stop` does not close it.
    Raises InvalidArgumentError for an empty token, or one token for two users.
    """

    def __init__(
        self,
        backend: EmbeddedBackend,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        writer_token: str | None = None,
        allowed_hosts: Iterable[str] = (),
        auditor_token: str | None = None,
        writer_tables: Iterable[str] = TABLES,
        admin_token: str | None = None,
    ) -> None:
        if "" in (token, writer_token, auditor_token, admin_token):
            raise InvalidArgumentError("an HttpFront token cannot be empty")
        given = [t for t in (token, writer_token, auditor_token, admin_token) if t is not None]
        if len(set(given)) != len(given):
            raise InvalidArgumentError("each HttpFront user needs a token of its own")
        super().__init__(host, port)
        self.backend = backend
        self.token = token if token is not None else secrets.token_urlsafe(32)
        self._tokens: dict[Role, str | None] = {
            ANALYST: self.token, AUDITOR: auditor_token, WRITER: writer_token,
            ADMIN: admin_token,
        }  # fmt: skip
        tables = frozenset(writer_tables)
        self._grants = {
            ANALYST: front_grant(ANALYST), AUDITOR: front_grant(AUDITOR),
            WRITER: Grant(readable=tables, insertable=tables), ADMIN: Grant(ddl=True),
        }  # fmt: skip
        self._allowed_hosts = frozenset(name.lower() for name in allowed_hosts)
        self.timezone = "UTC"

    @property
    def url(self) -> str:
        """``http://host:port/``, without credentials. Requires :meth:`start`."""
        return f"http://{self.url_host}:{self.port}/"

    @property
    def analyst_url(self) -> str:
        """``http://analyst:TOKEN@host:port/`` for
        :class:`~authtrail.sinks.server.ServerBackend`."""
        return self._url_for(ANALYST, self.token)

    @property
    def writer_url(self) -> str:
        """``http://writer:TOKEN@host:port/``; raises InvalidArgumentError without a writer."""
        return self._url_of(WRITER)

    @property
    def auditor_url(self) -> str:
        """``http://auditor:TOKEN@host:port/``; raises InvalidArgumentError without one."""
        return self._url_of(AUDITOR)

    @property
    def admin_url(self) -> str:
        """``http://admin:TOKEN@host:port/``; raises InvalidArgumentError without one."""
        return self._url_of(ADMIN)

    def _url_of(self, role: Role) -> str:
        token = self._tokens[role]
        if token is None:
            raise InvalidArgumentError(f"this HttpFront has no {role} ({role}_token not set)")
        return self._url_for(role, token)

    def grant_of(self, role: Role) -> Grant:
        """What ``role`` may touch (sinks/access.py)."""
        return self._grants[role]

    def _url_for(self, user: str, token: str) -> str:
        return f"http://{user}:{quote(token, safe='')}@{self.url_host}:{self.port}/"

    def start(self) -> HttpFront:
        """Bind and serve in a background thread; returns self. Raises OSError if bind fails."""
        if self._server is not None:
            return self
        outcome = self.backend.execute("SELECT timezone()", output_format="TabSeparated")
        self.timezone = outcome.body.decode().strip() or "UTC"
        self._serve(type("BoundHandler", (_Handler,), {"front": self}), "clickhouse-http-front")
        logger.info("ClickHouse HTTP front listening on %s", self.url)
        return self

    def role_of(self, user: str | None, password: str | None) -> Role | None:
        """The role whose user and token ``user``/``password`` match, else None."""
        # Compare every pair, always, in constant time: timing must not tell which part of
        # which credential was wrong. A user without a token gets one nobody knows.
        given_user, given_password = (user or "").encode(), (password or "").encode()
        found: Role | None = None
        for role, token in self._tokens.items():
            expected = (token or secrets.token_urlsafe(32)).encode()
            match = hmac.compare_digest(given_user, role.encode()) & hmac.compare_digest(
                given_password, expected
            )
            if match and token is not None:
                found = role
        return found

    def refusal_for_browser(self, host: str | None, origin: str | None, fetch_site: str) -> str:
        """Why a request with these headers may come from a web page, or "" if it cannot.

        ``Host`` must name this front (its bound address, 127.0.0.1, localhost or [::1]
        with the port) or an ``allowed_hosts`` entry: a DNS-rebinding page sends its own
        name. An ``Origin``, or ``Sec-Fetch-Site`` cross-site / same-site, is a browser
        sending for a page: refused unless that origin is in ``allowed_hosts``.
        """
        port = self.port
        own = {f"{self.url_host.lower()}:{port}", f"127.0.0.1:{port}", f"localhost:{port}"}
        own.add(f"[::1]:{port}")
        given_host = (host or "").strip().lower()
        if given_host not in own | self._allowed_hosts:
            return f"Host {given_host or '(none)'!r} is not this front's address"
        origin_allowed = origin is not None and (
            origin.strip().lower() in self._allowed_hosts
            or urlsplit(origin.strip().lower()).netloc in self._allowed_hosts
        )
        if origin is not None and not origin_allowed:
            return f"requests from web pages (Origin {origin.strip()!r}) are refused"
        if fetch_site.strip().lower() in ("cross-site", "same-site") and not origin_allowed:
            return f"requests from web pages (Sec-Fetch-Site {fetch_site.strip()}) are refused"
        return ""


class _Handler(BaseHTTPRequestHandler):
    front: HttpFront  # set on the subclass HttpFront.start builds
    protocol_version = "HTTP/1.1"  # keep-alive: clickhouse-connect pools connections
    # Headers and body leave in two writes; with Nagle's algorithm the body then waits for
    # the client's delayed ACK: ~40 ms on every request (measured 48 ms vs 5 ms a query).
    disable_nagle_algorithm = True
    server_version = "authtrail-clickhouse-front"

    def do_GET(self) -> None:
        self._handle(read_only=True)  # as ClickHouse: a GET can only read

    def do_POST(self) -> None:
        self._handle(read_only=False)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line may carry a password URL parameter: log the path only.
        line, path = format % args, getattr(self, "path", "")
        if path:
            line = line.replace(path, urlsplit(path).path)
        logger.debug("%s %s", self.address_string(), line)

    def _handle(self, *, read_only: bool) -> None:
        if self.server is not self.front._server:
            # A keep-alive connection outliving stop(): drop it unanswered, as a stopped
            # server would, instead of serving from a front that is supposed to be down.
            self.close_connection = True
            return
        query_id = ""
        try:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            query_id = params.get("query_id") or str(uuid.uuid4())
            refusal = self.front.refusal_for_browser(
                self.headers.get("Host"),
                self.headers.get("Origin"),
                self.headers.get("Sec-Fetch-Site", ""),
            )
            if refusal:
                self._fail(ACCESS_DENIED, f"{refusal} (CSRF / DNS rebinding protection)",
                           query_id, status=403)  # fmt: skip
                return
            body = self._read_body()
            if url.path.rstrip("/") in ("/ping", "") and "query" not in params and not body:
                # As on a server: the liveness answer needs no credentials.
                self._reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
                return
            role = self._authenticate(params)
            if role is None:
                self._fail(AUTHENTICATION_FAILED, "Authentication failed: wrong user or token",
                           query_id, status=403)  # fmt: skip
                return
            if "1" in (params.get("compress"), params.get("decompress")):
                message = "compressed transfers are not supported here; use compress=False"
                raise StoreError(message, NOT_IMPLEMENTED)
            # Readers only ever reach the read-only connection; the writer's GETs read.
            outcome = self._run(
                params, body, read_only=read_only or role not in (WRITER, ADMIN),
                grant=self.front.grant_of(role),
            )  # fmt: skip
            self._succeed(outcome, query_id)
        except StoreError as exc:
            self._fail(exc.code, str(exc), query_id)
        except InvalidArgumentError as exc:
            self._fail(_BAD_ARGUMENTS, str(exc), query_id)
        except AuthtrailError as exc:
            self._fail(_STD_EXCEPTION, str(exc), query_id)
        except Exception as exc:  # the client must get an answer, not a dropped socket
            logger.exception("HTTP front failed on a request")
            self._fail(_STD_EXCEPTION, f"{type(exc).__name__}: {exc}", query_id)

    def _run(
        self, params: dict[str, str], body: bytes, *, read_only: bool, grant: Grant
    ) -> QueryOutcome:
        """Run the request's statement, confined (see the module docstring)."""
        backend = self.front.backend
        settings = {k: v for k, v in params.items() if k not in _HTTP_PARAMETERS}
        settings = {k: v for k, v in settings.items() if not k.startswith("param_")}
        if read_only:
            settings["readonly"] = "1"
        database = params.get("database") or None
        query = params.get("query", "")
        # ClickHouse reads the query parameter and the body as one text.
        text = query.encode() + (b"\n" + body if query and body else body)
        insert = _INSERT_WITH_DATA.match(text[:_INSERT_HEAD_LIMIT])
        if insert is not None:
            if read_only:
                raise StoreError("read-only mode refuses INSERT (log in as the writer)", READONLY)
            return backend.insert_formatted(
                insert.group(1).decode(),
                insert.group(2).decode(),
                text[insert.end() :],
                settings=settings,
                database=database,
                confined=True,
                grant=grant,
            )
        try:
            sql = text.decode()
        except UnicodeDecodeError as exc:
            raise StoreError(f"query is not UTF-8: {exc}", _CANNOT_PARSE_INPUT) from exc
        named_format = _TRAILING_FORMAT.search(sql)
        output_format = named_format.group(1) if named_format else None
        parameters = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
        return backend.execute(
            sql,
            output_format=output_format or params.get("default_format") or "TabSeparated",
            settings=settings,
            parameters=parameters,
            database=database,
            read_only=read_only,
            confined=True,
            grant=grant,
        )

    def _read_body(self) -> bytes:
        encoding = self.headers.get("Content-Encoding", "identity").lower()
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self._read_chunked()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if encoding not in ("", "identity"):
            raise StoreError(f"Content-Encoding {encoding} is not supported here", NOT_IMPLEMENTED)
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF closing the chunk

    def _authenticate(self, params: dict[str, str]) -> Role | None:
        user = self.headers.get("X-ClickHouse-User") or params.get("user")
        password = self.headers.get("X-ClickHouse-Key") or params.get("password")
        authorization = self.headers.get("Authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return None
            user, _, password = decoded.partition(":")
        return self.front.role_of(user, password)

    def _succeed(self, outcome: QueryOutcome, query_id: str) -> None:
        summary = {
            "read_rows": "0",
            "read_bytes": "0",
            "written_rows": "0",
            "written_bytes": "0",
            "total_rows_to_read": "0",
            "result_rows": "0",
            "result_bytes": str(len(outcome.body)),
            "elapsed_ns": "0",
        }
        summary.update({k: str(v) for k, v in outcome.summary.items()})
        binary = outcome.output_format in _BINARY_FORMATS
        headers = {
            "Content-Type": "application/octet-stream" if binary else "text/plain; charset=UTF-8",
            "X-ClickHouse-Format": outcome.output_format,
            "X-ClickHouse-Summary": json.dumps(summary),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.front.timezone,
        }
        self._reply(200, outcome.body, headers)

    def _fail(self, code: int, message: str, query_id: str, *, status: int = 500) -> None:
        text = message if message.startswith("Code:") else f"Code: {code}. DB::Exception: {message}"
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(code),
            "X-ClickHouse-Query-Id": query_id,
        }
        # The request body may be partly unread: do not reuse this connection.
        self.close_connection = True
        headers["Connection"] = "close"
        self._reply(status, (text.rstrip() + "\n").encode(), headers)

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
