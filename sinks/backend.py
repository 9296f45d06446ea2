"""ClickHouse behind one small interface: embedded chdb, or a server over HTTP.

The sink and ``verify`` use only :class:`ClickHouseBackend`. Both implementations insert
and read Arrow, never text (text inserts are ~100x slower, ENVIRONMENT.md), and
translate their library's errors into authtrail's at this boundary.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.ipc

from authtrail.errors import ConfigurationError, StoreError
from authtrail.settings import redact_url

_READ_ONLY = re.compile(r"\s*(\(\s*)*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.I)


class ClickHouseBackend(Protocol):
    def command(self, sql: str) -> None: ...

    def insert_arrow(
        self, table: str, data: pa.Table, *, dedup_token: str | None = None
    ) -> None: ...

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pa.Table: ...

    def close(self) -> None: ...


def _refuse_writes(sql: str) -> None:
    if not _READ_ONLY.match(sql) or ";" in sql.strip().rstrip(";"):
        raise StoreError("read-only: only one SELECT, WITH, SHOW, DESCRIBE or EXPLAIN statement")


class EmbeddedBackend:
    """ClickHouse in-process (chdb) on ``path``; one process owns a directory at a time.

    chdb has no access control, so ``read_only`` is enforced here by statement kind.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        from chdb import session  # imported here: only the embedded mode needs it

        path.mkdir(parents=True, exist_ok=True)
        try:
            self._session: Any = session.Session(str(path))  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ConfigurationError(f"cannot open embedded ClickHouse at {path}: {exc}") from exc
        self._read_only = read_only
        self._lock = threading.Lock()  # one chdb session is not safe for concurrent queries

    def command(self, sql: str) -> None:
        if self._read_only:
            _refuse_writes(sql)
        self._run(sql, "CSV")

    def insert_arrow(self, table: str, data: pa.Table, *, dedup_token: str | None = None) -> None:
        if self._read_only:
            raise StoreError("read-only: insert refused")
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        settings = ""
        if dedup_token is not None:
            token = dedup_token.replace("\\", "\\\\").replace("'", "\\'")
            settings = f" SETTINGS insert_deduplication_token = '{token}'"
        arrow_data = data  # chdb's Python() resolves this local by name
        sql = f"INSERT INTO `{table}` ({columns}){settings} SELECT * FROM Python(arrow_data)"
        with self._lock:
            try:
                self._session.query(sql, "CSV")
            except Exception as exc:
                raise StoreError(f"insert into {table} failed: {exc}") from exc
        del arrow_data

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pa.Table:
        if self._read_only:
            _refuse_writes(sql)
        result = self._run(sql, "ArrowStream", parameters)
        data = result.bytes()
        if not data:
            return pa.table({})
        return pyarrow.ipc.open_stream(data).read_all()

    def _run(self, sql: str, output: str, parameters: Mapping[str, Any] | None = None) -> Any:
        with self._lock:
            try:
                return self._session.query(sql, output, params=dict(parameters or {}))
            except Exception as exc:
                raise StoreError(f"query failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._session.close()


class ServerBackend:
    """A ClickHouse server over its HTTP interface (clickhouse-connect)."""

    def __init__(self, url: str, *, read_only: bool = False, connect_timeout: float = 10) -> None:
        import clickhouse_connect

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"ClickHouse URL must be http(s)://…: {redact_url(url)}")
        settings = {"readonly": 1} if read_only else {}
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname,
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                username=unquote(parts.username or "default"),
                password=unquote(parts.password or ""),
                database=parts.path.strip("/") or "default",
                secure=parts.scheme == "https",
                connect_timeout=connect_timeout,
                compress=False,
                settings=settings,
            )
        except Exception as exc:
            raise ConfigurationError(
                f"cannot connect to ClickHouse at {redact_url(url)}: {type(exc).__name__}"
            ) from None

    def command(self, sql: str) -> None:
        try:
            self._client.command(sql)
        except Exception as exc:
            raise StoreError(f"command failed: {exc}") from exc

    def insert_arrow(self, table: str, data: pa.Table, *, dedup_token: str | None = None) -> None:
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        try:
            self._client.insert_arrow(table, data, settings=settings)
        except Exception as exc:
            raise StoreError(f"insert into {table} failed: {exc}") from exc

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pa.Table:
        try:
            return self._client.query_arrow(sql, parameters=dict(parameters or {}))
        except Exception as exc:
            raise StoreError(f"query failed: {exc}") from exc

    def close(self) -> None:
        self._client.close()
