"""ClickHouse in-process: chdb sessions on a data directory (the embedded mode's store).

Facts about chdb 4.4 this adapter is built on (measured, see tests/integration):

* One process can hold one chdb data directory, and a directory one process. A second
  process reaches it through the owner's HTTP front (:mod:`authtrail.sinks.http_front`).
* A second connection on the same directory opened with ``readonly=2`` cannot write and
  cannot lift its own ``readonly``; it still accepts per-query settings. Read-only
  statements run there.
* A query-level ``SETTINGS readonly=1`` can be undone by a later ``SETTINGS readonly=0`` in
  the same text, and ``SET readonly=1`` can never be undone on a shared session, so neither
  is used. chdb has no users or grants either.
* chdb runs every statement of a ``;``-separated text, so each text is classified first by
  the engine's own parser (``classify_query``): one statement only, and in read-only mode
  it must be READ_ONLY (which also refuses ``INTO OUTFILE`` and ``INSERT INTO FUNCTION``).
* chdb is clickhouse-local inside: ``file()``, ``url()``, ``Python()``… and the ``default``
  database itself (``SELECT * FROM '/etc/passwd'``) reach anything this process can, and
  ``user_files_path`` is ignored. Read-only calls, and whatever the HTTP front runs, are
  therefore *confined*: checked on the engine's syntax tree (:mod:`authtrail.sinks.embedded_guard`).
* Inserts hand Arrow IPC (or the HTTP client's format) to the engine's own input-format
  reader, strict where the ``Python()`` table function silently coerces ('one' into
  UInt64 became 0, an over-long FixedString became zero bytes) and the same reader a
  server uses, so both backends accept and refuse the same data. Concurrent ``Python()``
  queries from two threads also deadlocked chdb.
* The data goes through a file and ``INSERT … SELECT * FROM file(…)``, not the streaming
  ``send_insert``: on a full disk ``send_insert`` reported every row written and stored
  none (``tests/integration/test_store_write_errors.py``), while a plain INSERT raises
  NOT_ENOUGH_SPACE. The file takes the table's structure (ClickHouse's
  ``use_structure_from_insertion_table_in_table_functions``), so it refuses what the
  streaming insert refused; it costs 1-6 µs more CPU per row (docs/RELIABILITY.md).
* Each connection serves one call at a time (settings are SET on it for the call and
  reset after); the writing connection and the read-only ones run side by side. Two
  read-only connections on one directory in one process run queries in parallel (chdb
  releases the GIL), which ``authtrail prove`` uses to read the event row while it reads
  the checkpoint and the tile entries (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import chdb.session
import pyarrow as pa

from authtrail.errors import ConfigurationError, StoreError
from authtrail.sinks.clickhouse_sql import (
    READONLY,
    UNKNOWN_SETTING,
    arrow_stream_bytes,
    check_parameters,
    error_code,
    format_parameter,
    insert_settings,
    is_identifier,
    quote_identifier,
    quote_table_name,
    setting_literal,
    settings_clause,
)
from authtrail.sinks.embedded_guard import (
    GuardState,
    check_request_settings,
    check_statement,
    note_writing_statement,
)
from authtrail.sinks.embedded_writes import (
    InsertTarget,
    failure_reason,
    insert_files_directory,
    insert_through_file,
    one_line,
)
from authtrail.sinks.query_policy import ANYTHING, Grant

DEFAULT_DATABASE = "default"
#: Read-only connections per backend: two callers read at once (more would only queue
#: for the two cores these machines have).
READ_CONNECTIONS = 2

_STATUS_PID = re.compile(r"PID:\s*(\d+)")


class _Session(Protocol):
    """The part of ``chdb.session.Session`` used here (chdb ships it untyped)."""

    def query(
        self, sql: str, fmt: str = ..., udf_path: str = ..., params: dict[str, str] | None = ...
    ) -> Any: ...

    def close(self) -> None: ...


class _Connection:
    """One chdb connection and the lock that lends it to one caller at a time.

    Per-call settings are applied to the connection with SET and reset afterwards, so
    a caller needs it to itself; the two connections do not wait for each other, and a
    long read-only query (``authtrail sql`` through the front) does not stall the sink.
    """

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.lock = threading.Lock()
        self.closed = False


@dataclass(frozen=True)
class QueryOutcome:
    """What a statement returned: ``body`` in ``output_format`` plus ClickHouse's counters."""

    body: bytes
    output_format: str
    summary: dict[str, int] = field(default_factory=dict)


class EmbeddedBackend:
    """ClickHouse (chdb) on the data directory ``path``; thread-safe; one per process.

    ``read_only=True`` opens only the read-only connection (the directory must exist)
    and makes every call read-only. Raises ConfigurationError when the directory cannot be
    opened: another process owns it, or this process already holds another directory.
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = Path(path).resolve()
        self.read_only = read_only
        if "?" in str(self.path):
            # chdb reads "?..." in a connection string as engine arguments.
            raise ConfigurationError(f"ClickHouse data directory path must not contain '?': {path}")
        self._writer: _Connection | None = None
        self._readers: list[_Connection] = []
        self._insert_files = self.path
        # Read-only: only a writing statement elsewhere in this process changes the
        # catalog (no other process can open the directory), and the guard watches for it.
        self._guard = GuardState(catalog_fixed=read_only)
        if read_only:
            if not self.path.is_dir():
                raise ConfigurationError(f"no ClickHouse data directory at {self.path}")
        else:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                reason = failure_reason(os_errno=exc.errno) or exc.strerror
                raise ConfigurationError(
                    f"cannot create ClickHouse data directory {self.path}: {reason}"
                ) from exc
            self._writer = self._open(str(self.path))
            self._insert_files = insert_files_directory(self.path)
        try:
            for _ in range(READ_CONNECTIONS):
                self._readers.append(self._open(f"file:{self.path}?readonly=2"))
        except ConfigurationError:
            self.close()
            raise

    # -- the backend interface -------------------------------------------------------
    @property
    def sole_writer(self) -> bool:
        """True: chdb's lock on the directory keeps every other process out of it."""
        return True

    def command(self, sql: str, settings: Mapping[str, str | int] | None = None) -> None:
        """Run one statement that returns nothing useful (DDL, INSERT … SELECT, OPTIMIZE).

        A non-zero ``readonly`` setting makes this call read-only. Raises StoreError when
        the engine refuses the statement (including read-only refusals, code 164).
        """
        self.execute(sql, output_format="TabSeparated", settings=settings)

    def insert_arrow(self, table: str, data: pa.Table, *, dedup_token: str | None = None) -> None:
        """Insert ``data`` (columns matched by name) into ``table`` (``name`` or ``db.name``).

        With ``dedup_token`` a replayed insert adds no rows, provided the table sets
        ``non_replicated_deduplication_window``. Raises StoreError (read-only mode, type or
        schema mismatch) and InvalidArgumentError (bad table name).
        """
        if data.num_rows == 0:
            quote_table_name(table)
            return
        what = f"insert of {data.num_rows} rows into {table}"
        payload = arrow_stream_bytes(data)
        self._insert(table, data.column_names, payload, "ArrowStream", dedup_token, what)

    def insert_data(
        self, table: str, columns: Sequence[str], data: bytes, input_format: str, *,
        dedup_token: str | None = None,
    ) -> None:  # fmt: skip
        """Insert ``data``, rows in ``input_format`` (Avro, ArrowStream…), into ``columns``.

        As :meth:`insert_arrow` otherwise.
        """
        what = f"insert of {input_format} data ({len(data)} bytes) into {table}"
        self._insert(table, columns, data, input_format, dedup_token, what)

    def _insert(
        self, table: str, columns: Sequence[str], data: bytes, input_format: str,
        dedup_token: str | None, what: str,
    ) -> None:  # fmt: skip
        if self.read_only:
            raise StoreError(f"read-only mode refuses INSERT into {table}", READONLY)
        names = ", ".join(quote_identifier(name) for name in columns)
        options = settings_clause(insert_settings(dedup_token))
        statement = f"INSERT INTO {quote_table_name(table)} ({names}) {options}"
        with self._connection(read_only=False) as session:
            insert_through_file(session, statement, input_format, data, self._target(what))

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query and return its result as a pyarrow Table (chdb's Arrow output).

        ``parameters`` bind ``{name:Type}`` placeholders (values str, int, bytes or None).
        String columns come back as Arrow ``string``: keep binary data in FixedString.
        Raises StoreError for engine errors, InvalidArgumentError for bad parameters.
        """
        bound = {
            name: format_parameter(value) for name, value in check_parameters(parameters).items()
        }
        with self._connection(read_only=self.read_only) as session:
            check_statement(
                session, sql, read_only=self.read_only, parameters=bound, state=self._guard
            )
            try:
                # "Arrow" (IPC bytes), not "ArrowTable": chdb builds the latter through
                # pandas, an import of ~0.3 CPU-s in every CLI command that queries.
                result = session.query(sql, "Arrow", params=bound)
            except RuntimeError as exc:
                raise _store_error(exc) from exc
        try:
            return pa.ipc.open_file(pa.py_buffer(result.bytes())).read_all()
        except (pa.ArrowInvalid, AttributeError) as exc:
            raise StoreError(f"unreadable Arrow result from chdb: {exc}") from exc

    def close(self) -> None:
        """Close both connections (idempotent); the directory is free for another process."""
        for connection in (self._writer, *self._readers):
            if connection is not None:
                with connection.lock:  # waits for the call in flight
                    if not connection.closed:
                        connection.session.close()
                    connection.closed = True

    def __enter__(self) -> EmbeddedBackend:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- wider surface, for the HTTP front --------------------------------------------
    def execute(
        self,
        sql: str,
        *,
        output_format: str,
        settings: Mapping[str, str | int] | None = None,
        parameters: Mapping[str, str] | None = None,
        database: str | None = None,
        read_only: bool = False,
        confined: bool = False,
        grant: Grant = ANYTHING,
    ) -> QueryOutcome:
        """Run one statement and return its raw output in ``output_format`` (Native, JSON…).

        ``parameters`` are already in ClickHouse's escaped text form (as HTTP ``param_*``
        carries them). The call is read-only if ``read_only``, this backend is, or
        ``settings`` has a non-zero ``readonly``; a read-only or ``confined`` call reaches
        nothing outside the store (:mod:`authtrail.sinks.embedded_guard`) and only the tables
        ``grant`` gives. Raises StoreError.
        """
        read_only = self.read_only or read_only or _readonly_requested(settings)
        with self._connection(read_only=read_only) as session:
            if read_only or confined:
                check_request_settings(settings or {}, writer=not read_only)
            check_statement(
                session, sql, read_only=read_only, confined=confined,
                parameters=parameters, database=database, state=self._guard, grant=grant,
            )  # fmt: skip
            try:
                with _session_state(session, settings, database):
                    try:
                        result = session.query(sql, output_format, params=dict(parameters or {}))
                    except RuntimeError as exc:
                        raise _store_error(exc) from exc
            finally:
                if not read_only:  # DDL: read-only stores re-read their cached catalog
                    note_writing_statement()
        return QueryOutcome(result.bytes(), output_format, _summary(result))

    def insert_formatted(
        self,
        insert: str,
        input_format: str,
        data: bytes,
        *,
        settings: Mapping[str, str | int] | None = None,
        database: str | None = None,
        confined: bool = False,
        grant: Grant = ANYTHING,
    ) -> QueryOutcome:
        """Stream ``data`` encoded in ``input_format`` into ``insert`` (``INSERT INTO t (cols)``).

        ``insert`` carries no FORMAT clause; ``confined`` and ``grant`` as for
        :meth:`execute`. Raises
        StoreError (read-only, bad data, refused by confinement).
        """
        if self.read_only or _readonly_requested(settings):
            raise StoreError("read-only mode refuses INSERT", READONLY)
        with self._connection(read_only=False) as session:
            if confined:
                check_request_settings(settings or {}, writer=True)
            statement = f"{insert} FORMAT {input_format}" if confined else insert
            check_statement(
                session, statement, read_only=False, confined=confined, database=database,
                state=self._guard, grant=grant,
            )  # fmt: skip
            with _session_state(session, settings, database):
                what = f"insert ({one_line(insert)[:200]})"
                result = insert_through_file(
                    session, insert, input_format, data, self._target(what)
                )
        written = {"written_rows": result.rows_written(), "written_bytes": result.bytes_written()}
        return QueryOutcome(b"", input_format, written)

    # -- internals ---------------------------------------------------------------------
    def _target(self, what: str) -> InsertTarget:
        return InsertTarget(self.path, self._insert_files, what)

    def _open(self, connection: str) -> _Connection:
        try:
            session: _Session = chdb.session.Session(connection)  # type: ignore[no-untyped-call]
            return _Connection(session)
        except RuntimeError as exc:
            message = str(exc)
            # chdb prints the engine's reason (e.g. "errno: 30, … Read-only file system")
            # to stderr and raises a bare "Error initializing EmbeddedServer", so ask the
            # file system directly.
            reason = failure_reason(message) or _unwritable_reason(self.path)
            if reason is not None:
                raise ConfigurationError(
                    f"cannot open ClickHouse data directory {self.path}: {reason}: "
                    f"{one_line(message)}"
                ) from exc
            if "already initialized with path" in message:
                raise ConfigurationError(
                    f"cannot open ClickHouse data directory {self.path}: this process already "
                    f"holds another one, and chdb allows one per process ({message})"
                ) from exc
            owner = _STATUS_PID.search(_read_text(self.path / "status"))
            hint = f" (its status file names PID {owner.group(1)})" if owner else ""
            raise ConfigurationError(
                f"cannot open ClickHouse data directory {self.path}: another process probably "
                f"owns it{hint}; reach it through that process's HTTP front instead"
            ) from exc

    @contextmanager
    def _connection(self, *, read_only: bool) -> Iterator[_Session]:
        """The connection for this call, held by the caller until the block ends: the
        writing one, or a free read-only one (else the first, once it is free)."""
        if not read_only:
            if self._writer is None:
                raise StoreError(f"ClickHouse data directory {self.path} is open read-only here")
            candidates = [self._writer]
        else:
            candidates = self._readers
        connection = next((c for c in candidates if c.lock.acquire(blocking=False)), None)
        if connection is None:
            connection = candidates[0]
            connection.lock.acquire()
        try:
            if connection.closed:
                raise StoreError(f"ClickHouse data directory {self.path} is closed")
            yield connection.session
        finally:
            connection.lock.release()


@contextmanager
def _session_state(
    session: _Session, settings: Mapping[str, str | int] | None, database: str | None
) -> Iterator[None]:
    """Apply per-call settings and database on ``session``, restoring both afterwards.

    Caller holds the backend lock, so nobody else sees the temporary state.
    """
    applied: list[str] = []
    switched = bool(database) and database != DEFAULT_DATABASE
    try:
        for name, value in (settings or {}).items():
            if name == "readonly":
                continue  # decided by the connection the call runs on, never SET (sticky)
            if not is_identifier(name):
                raise StoreError(f"not a setting name: {name!r}", UNKNOWN_SETTING)
            _run_quietly(session, f"SET {name} = {setting_literal(value)}")
            applied.append(name)
        if switched:
            _run_quietly(session, "USE {database:Identifier}", {"database": database or ""})
        yield
    finally:
        if switched:
            session.query(f"USE {DEFAULT_DATABASE}", "TabSeparated")
        for name in applied:
            session.query(f"SET {name} = DEFAULT", "TabSeparated")


def _run_quietly(session: _Session, sql: str, params: Mapping[str, str] | None = None) -> None:
    try:
        session.query(sql, "TabSeparated", params=dict(params or {}))
    except RuntimeError as exc:
        raise _store_error(exc) from exc


def _readonly_requested(settings: Mapping[str, str | int] | None) -> bool:
    return str((settings or {}).get("readonly", "0")).strip() not in ("", "0")


def _store_error(exc: BaseException) -> StoreError:
    message = str(exc).strip()
    return StoreError(message, error_code(message))


def _summary(result: Any) -> dict[str, int]:
    return {
        "read_rows": int(result.rows_read()),
        "read_bytes": int(result.bytes_read()),
        "written_rows": int(result.rows_written()),
        "written_bytes": int(result.bytes_written()),
        "elapsed_ns": int(float(result.elapsed()) * 1e9),
    }


def _unwritable_reason(directory: Path) -> str | None:
    """Why ``directory`` cannot be written ("read-only file system"…), or None if it can."""
    try:
        with open(directory / "status", "ab"):  # chdb's own lock file: touched, not changed
            pass
    except OSError as exc:
        return failure_reason(os_errno=exc.errno) or exc.strerror
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
