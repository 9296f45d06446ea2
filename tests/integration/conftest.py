"""ClickHouse fixtures for integration tests: a fresh embedded store, and the server path.

No mocks: ``embedded_backend`` is chdb on a new directory; ``server_backend`` is
clickhouse-connect over real HTTP, talking to :class:`~authtrail.sinks.http_front.HttpFront` in
front of that same store (the path ``authtrail sql`` / ``verify`` take against a running
embedded mode). Set ``AUTHTRAIL_TEST_CLICKHOUSE_URL=http://user:pass@host:8123`` to point
``server_backend`` at a real ClickHouse server instead: each test then gets a fresh,
randomly named database that is dropped afterwards.

chdb holds one data directory per process, so a test must not keep an embedded backend
open past its end: use these fixtures (they close what they open), or close your own.

Fixtures:

* ``chdb_dir`` — path of a not-yet-created data directory under ``tmp_path``.
* ``embedded_backend`` — :class:`~authtrail.sinks.embedded.EmbeddedBackend` on ``chdb_dir``.
* ``http_front`` — a started :class:`~authtrail.sinks.http_front.HttpFront` over
  ``embedded_backend``,
  with a writer: ``front.analyst_url`` reads, ``front.writer_url`` may also write.
* ``server_backend`` — :class:`~authtrail.sinks.server.ServerBackend` on ``http_front`` as its
  writer
  (or the real server named by the environment).
* ``clickhouse_backend`` — parametrised: each test using it runs once per backend kind
  (ids ``embedded`` and ``server``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from authtrail.sinks.clickhouse import ClickHouseBackend, EmbeddedBackend, ServerBackend
from authtrail.sinks.http_front import HttpFront

SERVER_URL_VARIABLE = "AUTHTRAIL_TEST_CLICKHOUSE_URL"


@pytest.fixture
def chdb_dir(tmp_path: Path) -> Path:
    """A fresh path for an embedded store; EmbeddedBackend creates the directory."""
    return tmp_path / "clickhouse"


@pytest.fixture
def embedded_backend(chdb_dir: Path) -> Iterator[EmbeddedBackend]:
    """chdb on ``chdb_dir``, closed after the test (freeing the process's one directory)."""
    backend = EmbeddedBackend(chdb_dir)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def http_front(embedded_backend: EmbeddedBackend) -> Iterator[HttpFront]:
    """ClickHouse's HTTP protocol on a free loopback port, serving ``embedded_backend``."""
    with HttpFront(
        embedded_backend, writer_token=secrets.token_urlsafe(16),
        admin_token=secrets.token_urlsafe(16),
    ) as front:  # fmt: skip
        yield front


@pytest.fixture
def server_backend(request: pytest.FixtureRequest) -> Iterator[ServerBackend]:
    """clickhouse-connect over HTTP: to ``http_front``, or to the server in the environment."""
    real_server = os.environ.get(SERVER_URL_VARIABLE)
    if not real_server:
        front: HttpFront = request.getfixturevalue("http_front")
        # A server's administrator, as the tests against a real server log in.
        with ServerBackend(front.admin_url, connect_timeout=5) as backend:
            yield backend
        return
    database = f"authtrail_test_{secrets.token_hex(4)}"
    with ServerBackend(real_server, connect_timeout=5) as admin:
        admin.command(f"CREATE DATABASE {database}")
        try:
            parts = urlsplit(real_server)
            url = urlunsplit(parts._replace(path=f"/{database}"))
            with ServerBackend(url, connect_timeout=5) as backend:
                yield backend
        finally:
            admin.command(f"DROP DATABASE IF EXISTS {database}")


@pytest.fixture(params=["embedded", "server"])
def clickhouse_backend(request: pytest.FixtureRequest) -> ClickHouseBackend:
    """Each test using this runs against both backends; they must behave the same."""
    name = "embedded_backend" if request.param == "embedded" else "server_backend"
    backend: ClickHouseBackend = request.getfixturevalue(name)
    return backend
