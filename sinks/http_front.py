"""ClickHouse's HTTP interface, served from an embedded (chdb) store.

chdb is ClickHouse without a server, and one process owns a chdb directory. While
``authtrail up`` owns it, ``authtrail sql`` and ``authtrail verify`` in another terminal
reach it through this front with the ordinary :class:`~sinks.server.ServerBackend`; tests
use it to exercise the clickhouse-connect code path without a ClickHouse server.

It is test and embedded-mode infrastructure, not a server replacement: it listens on
loopback by default, speaks the subset of the protocol clickhouse-connect uses with
``compress=False``, runs one statement at a time (the store is serialised anyway), and
has one optional user. What it understands:

* the query in the ``query`` URL parameter, the body, or both (concatenated);
* inserts as ``INSERT INTO t (cols) FORMAT Native`` (or Arrow…) + newline + binary data,
  streamed into the engine without a text round trip;
* settings as URL parameters, ``readonly`` (and every GET) making the request read-only,
  ``param_<name>`` query parameters, ``database``, ``default_format``, ``query_id``;
* replies with ``X-ClickHouse-Format`` / ``-Summary`` / ``-Query-Id`` / ``-Timezone``,
  errors as HTTP 500 with ``X-ClickHouse-Exception-Code`` and ClickHouse's message.

Anything sent to it can read every table, and ``file()`` can read files this process can:
keep it on loopback, and set a password when the machine is shared.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from authtrail.errors import AuthtrailError, InvalidArgumentError, StoreError
from sinks.clickhouse_sql import AUTHENTICATION_FAILED, NOT_IMPLEMENTED
from sinks.embedded import EmbeddedBackend, QueryOutcome

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


class HttpFront:
    """Serve ``backend`` over ClickHouse's HTTP protocol on ``host``:``port``.

    ``port=0`` picks a free port (read :attr:`port` after :meth:`start`). With
    ``username`` set, requests must authenticate as that user (basic auth, the
    ``X-ClickHouse-User``/``-Key`` headers, or ``user``/``password`` parameters).
    The backend stays owned by the caller: :meth:`stop` does not close it.
    """

    def __init__(
        self,
        backend: EmbeddedBackend,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        username: str | None = None,
        password: str = "",
    ) -> None:
        self.backend = backend
        self.host = host
        self._requested_port = port
        self._credentials = (username, password) if username is not None else None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.timezone = "UTC"

    @property
    def port(self) -> int:
        """The listening port. Requires :meth:`start`; raises InvalidArgumentError before."""
        if self._server is None:
            raise InvalidArgumentError("HttpFront.port is known only after start()")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port/`` for :class:`~sinks.server.ServerBackend` (no credentials)."""
        return f"http://{self.host}:{self.port}/"

    def start(self) -> HttpFront:
        """Bind and serve in a background thread; returns self. Raises OSError if bind fails."""
        if self._server is not None:
            return self
        outcome = self.backend.execute("SELECT timezone()", output_format="TabSeparated")
        self.timezone = outcome.body.decode().strip() or "UTC"
        handler = type("BoundHandler", (_Handler,), {"front": self})
        self._server = ThreadingHTTPServer((self.host, self._requested_port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name=f"clickhouse-http-front:{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("ClickHouse HTTP front listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent); in-flight requests finish first."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> HttpFront:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def authenticated(self, user: str | None, password: str | None) -> bool:
        """True if no user is configured, or ``user``/``password`` match it."""
        if self._credentials is None:
            return True
        expected_user, expected_password = self._credentials
        # Compare both, always, so timing does not tell which one was wrong.
        user_ok = hmac.compare_digest((user or "default").encode(), expected_user.encode())
        password_ok = hmac.compare_digest((password or "").encode(), expected_password.encode())
        return user_ok and password_ok


class _Handler(BaseHTTPRequestHandler):
    front: HttpFront  # set on the subclass HttpFront.start builds
    protocol_version = "HTTP/1.1"  # keep-alive: clickhouse-connect pools connections
    server_version = "authtrail-clickhouse-front"

    def do_GET(self) -> None:
        self._handle(read_only=True)  # as ClickHouse: a GET can only read

    def do_POST(self) -> None:
        self._handle(read_only=False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

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
            body = self._read_body()
            if url.path.rstrip("/") in ("/ping", "") and "query" not in params and not body:
                # As on a server: the liveness answer needs no credentials.
                self._reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
                return
            if not self._authenticate(params):
                self._fail(AUTHENTICATION_FAILED, "Authentication failed", query_id, status=403)
                return
            if "1" in (params.get("compress"), params.get("decompress")):
                message = "compressed transfers are not supported here; use compress=False"
                raise StoreError(message, NOT_IMPLEMENTED)
            outcome = self._run(params, body, read_only=read_only)
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

    def _run(self, params: dict[str, str], body: bytes, *, read_only: bool) -> QueryOutcome:
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
            return backend.insert_formatted(
                insert.group(1).decode(),
                insert.group(2).decode(),
                text[insert.end() :],
                settings=settings,
                database=database,
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

    def _authenticate(self, params: dict[str, str]) -> bool:
        user = self.headers.get("X-ClickHouse-User") or params.get("user")
        password = self.headers.get("X-ClickHouse-Key") or params.get("password")
        authorization = self.headers.get("Authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode()
            except (ValueError, UnicodeDecodeError):
                return False
            user, _, password = decoded.partition(":")
        return self.front.authenticated(user, password)

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
