"""ClickHouse behind one small interface: embedded chdb, or a server over HTTP.

The sink and ``verify`` use only :class:`ClickHouseBackend`. Both implementations insert
and read Arrow, never text (a text insert is ~100x slower, ENVIRONMENT.md), bind
``{name:Type}`` query parameters the same way, and translate their library's errors at
this boundary: :class:`~authtrail.errors.StoreError` when a statement fails or is refused,
:class:`~authtrail.errors.ConfigurationError` when the store cannot be reached or opened.

* :class:`~authtrail.sinks.embedded.EmbeddedBackend` — chdb in this process, on a data directory.
* :class:`~authtrail.sinks.server.ServerBackend` — a ClickHouse server (or this project's HTTP
  front over another process's embedded store) through clickhouse-connect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import pyarrow as pa

from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.server import ServerBackend

__all__ = ["ClickHouseBackend", "EmbeddedBackend", "ServerBackend"]


class ClickHouseBackend(Protocol):
    """What the sink and the verifier need from ClickHouse, and nothing more.

    Implementations are thread-safe. A read-only backend refuses every statement but
    SELECT/WITH/SHOW/DESCRIBE/EXPLAIN/EXISTS with StoreError (code 164).
    """

    def command(self, sql: str, settings: Mapping[str, str | int] | None = None) -> None:
        """Run one statement whose result is not needed (DDL). Raises StoreError."""

    def insert_arrow(self, table: str, data: pa.Table, *, dedup_token: str | None = None) -> None:
        """Insert ``data`` into ``table`` by column name; a repeated ``dedup_token`` adds nothing.

        Raises StoreError, InvalidArgumentError (bad table name).
        """

    def insert_data(
        self, table: str, columns: Sequence[str], data: bytes, input_format: str, *,
        dedup_token: str | None = None,
    ) -> None:  # fmt: skip
        """Insert ``data`` holding rows of ``columns`` in ClickHouse format ``input_format``
        (e.g. an Avro container), sent as is; as :meth:`insert_arrow` otherwise."""

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query binding ``{name:Type}`` from ``parameters`` (str, int, bytes, None).

        Raises StoreError, InvalidArgumentError (bad parameters).
        """

    @property
    def sole_writer(self) -> bool:
        """Whether no other process can write to this store while this one has it open
        (the embedded store's directory lock), so that every insert into it since it was
        opened is this process's own."""

    def close(self) -> None:
        """Release the store (idempotent)."""
