"""A ClickHouse server over its HTTP interface, through clickhouse-connect.

Also what a second process uses to reach an embedded store: ``authtrail up`` serves its
chdb directory with :mod:`authtrail.sinks.http_front`, and this backend talks to that front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from authtrail.errors import ConfigurationError, StoreError
from authtrail.sinks.clickhouse_sql import (
    AUTHENTICATION_FAILED,
    READONLY,
    check_parameters,
    insert_settings,
    quote_table_name,
    require_read_only_statement,
)

# Codes meaning "these credentials are not accepted" (a configuration problem): unknown
# user, wrong password, password required, IP address not allowed, authentication failed.
_CREDENTIAL_CODES = frozenset({192, 193, 194, 195, AUTHENTICATION_FAILED})
_UNKNOWN_DATABASE = 81
_DEFAULT_PORTS = {"http": 8123, "https": 8443}


@dataclass(frozen=True)
class ServerAddress:
    """A parsed ``http(s)://user:password@host:port/database`` ClickHouse URL."""

    interface: str
    host: str
    port: int
    username: str
    password: str = ""
    database: str | None = None

    @property
    def redacted(self) -> str:
        """The URL without the password, for messages and logs."""
        database = self.database or ""
        return f"{self.interface}://{self.username}@{self.host}:{self.port}/{database}"


def parse_server_url(url: str) -> ServerAddress:
    """Parse a ClickHouse HTTP URL; user defaults to ``default``, port to 8123 / 8443.

    Raises ConfigurationError naming what is wrong (never echoing the password).
    """
    parts: SplitResult = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname or ''}…"
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigurationError(
            f"ClickHouse URL must look like http(s)://user:pass@host:8123/db, got {shown}"
        )
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ConfigurationError(f"ClickHouse URL has an invalid port: {shown}") from exc
    database = unquote(parts.path.strip("/")) or None
    if database is not None and "/" in database:
        raise ConfigurationError(f"ClickHouse URL path must be one database name: {shown}")
    return ServerAddress(
        interface=parts.scheme,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=database,
    )


class ServerBackend:
    """ClickHouse server at ``url`` (``http(s)://user:password@host:port/database``).

    ``read_only=True`` sends ``readonly=2`` with every request: the server refuses writes
    and any attempt to lift ``readonly``, while per-query settings (which clickhouse-connect
    sends, e.g. for Arrow strings) stay allowed; ``readonly=1`` would refuse those too.
    ``compress=False`` is needed for the HTTP front, which does not implement compression.
    Raises ConfigurationError when the server cannot be reached or rejects the credentials.
    """

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        connect_timeout: float = 10,
        query_timeout: float = 300,
        compress: bool = False,
    ) -> None:
        self.address = parse_server_url(url)
        self.read_only = read_only
        try:
            self._client = clickhouse_connect.get_client(
                interface=self.address.interface,
                host=self.address.host,
                port=self.address.port,
                username=self.address.username,
                password=self.address.password,
                database=self.address.database,
                compress=compress,
                connect_timeout=connect_timeout,
                send_receive_timeout=query_timeout,
                settings={"readonly": "2"} if read_only else None,
                # Server sessions serialise their queries and refuse concurrent use; the
                # sink and the CLI need neither (settings travel with each request).
                autogenerate_session_id=False,
            )
        except ClickHouseError as exc:
            if getattr(exc, "code", None) == _UNKNOWN_DATABASE:
                raise ConfigurationError(
                    f"ClickHouse at {self.address.redacted} has no database "
                    f"{self.address.database!r}"
                ) from None
            raise self._translate(exc) from None

    @property
    def sole_writer(self) -> bool:
        """False: other sinks (a consumer group) and clients may write to the server."""
        return False

    def command(self, sql: str, settings: Mapping[str, str | int] | None = None) -> None:
        """Run one statement that returns nothing useful (DDL, INSERT … SELECT).

        Raises StoreError when the server refuses it, ConfigurationError when unreachable.
        """
        if self.read_only:
            require_read_only_statement(sql)
        try:
            self._client.command(sql, settings=dict(settings or {}))
        except ClickHouseError as exc:
            raise self._translate(exc) from None

    def insert_arrow(self, table: str, data: pa.Table, *, dedup_token: str | None = None) -> None:
        """Insert ``data`` (columns by name) into ``table``, sent as Arrow over HTTP.

        With ``dedup_token`` a replayed insert adds no rows (the table needs
        ``non_replicated_deduplication_window``, or replication). Raises StoreError,
        InvalidArgumentError (bad table name), ConfigurationError (unreachable).
        """
        quote_table_name(table)  # the same strict check as the embedded backend
        if self.read_only:
            raise StoreError(f"read-only mode refuses INSERT into {table}", READONLY)
        if data.num_rows == 0:
            return
        try:
            self._client.insert_arrow(table, data, settings=insert_settings(dedup_token))
        except ClickHouseError as exc:
            raise self._translate(exc) from None

    def insert_data(
        self, table: str, columns: Sequence[str], data: bytes, input_format: str, *,
        dedup_token: str | None = None,
    ) -> None:  # fmt: skip
        """Insert ``data``, rows in ``input_format`` (Avro, ArrowStream…), into ``columns``,
        sent as they are. As :meth:`insert_arrow` otherwise."""
        quote_table_name(table)
        if self.read_only:
            raise StoreError(f"read-only mode refuses INSERT into {table}", READONLY)
        try:
            self._client.raw_insert(
                table, list(columns), data, settings=insert_settings(dedup_token),
                fmt=input_format,
            )  # fmt: skip
        except ClickHouseError as exc:
            raise self._translate(exc) from None

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query, the result read as Arrow; ``{name:Type}`` bound from ``parameters``.

        Values may be str, int, bytes or None; String columns come back as Arrow ``string``.
        Raises StoreError, InvalidArgumentError (bad parameters), ConfigurationError.
        """
        bound = check_parameters(parameters)
        if self.read_only:
            require_read_only_statement(sql)
        try:
            table = self._client.query_arrow(sql, parameters=bound or None, use_strings=True)
        except ClickHouseError as exc:
            raise self._translate(exc) from None
        if not isinstance(table, pa.Table):
            raise StoreError(f"expected an Arrow table, got {type(table).__name__}")
        return table

    def close(self) -> None:
        """Release the HTTP connections (idempotent)."""
        self._client.close()

    def __enter__(self) -> ServerBackend:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _translate(self, exc: ClickHouseError) -> ConfigurationError | StoreError:
        """One authtrail error for a clickhouse-connect one; never carries the password."""
        code = getattr(exc, "code", None)
        where = self.address.redacted
        if code in _CREDENTIAL_CODES:
            return ConfigurationError(
                f"ClickHouse at {where} rejected user {self.address.username!r} (code {code})"
            )
        if isinstance(exc, OperationalError) and code is None:
            return ConfigurationError(f"cannot reach ClickHouse at {where}: {_reason(exc)}")
        return StoreError(_scrub(_server_message(exc), self.address.password), code or 0)


def _reason(exc: BaseException) -> str:
    """A short cause for a failed connection, read from urllib3's message."""
    text = str(exc)
    for marker, reason in (
        ("Connection refused", "connection refused"),
        ("resolve", "host name does not resolve"),
        ("timed out", "timed out"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
        ("SSL", "TLS handshake failed"),
    ):
        if marker in text:
            return reason
    return "connection failed"


def _server_message(exc: BaseException) -> str:
    """The server's own message, without clickhouse-connect's preamble and URL suffix."""
    text = str(exc)
    _, marker, response = text.partition("server response: ")
    message = response if marker else text
    return message.split(" (for url ")[0].strip()


def _scrub(message: str, password: str) -> str:
    return message.replace(password, "***") if password else message
