"""The three roles on the embedded store's HTTP front, against a store the real worker built.

chdb has no users, so the front enforces what ``authtrail init-db`` grants on a server
(sinks/access.py): each role does its job there — the auditor verifies, the analyst
reads the views, the writer finds the schema made and inserts — and is refused the rest.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from authtrail.cli import main as cli
from authtrail.errors import ConfigurationError, InvalidArgumentError, StoreError
from authtrail.sinks.clickhouse_sql import ACCESS_DENIED, READONLY
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.http_front import HttpFront
from authtrail.sinks.schema_setup import ensure_schema, missing_statements
from authtrail.sinks.server import ServerBackend
from tests.integration.views_store import build_store

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "authtrail.json"
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("roles") / "data"
    build_store(directory)
    return directory


@pytest.fixture  # one chdb directory per process: each test opens (and closes) it
def front(data_dir: Path) -> Iterator[HttpFront]:
    owner = EmbeddedBackend(data_dir / "clickhouse")
    tokens = [secrets.token_urlsafe(16) for _ in range(3)]
    try:
        with HttpFront(owner, token=tokens[0], auditor_token=tokens[1],
                       writer_token=tokens[2]) as served:  # fmt: skip
            yield served
    finally:
        owner.close()


def _cli(*arguments: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(list(arguments))
    return code, out.getvalue()


def _refused(url: str, sql: str, *, read_only: bool = False) -> int:
    with ServerBackend(url, read_only=read_only) as backend, pytest.raises(StoreError) as refusal:
        backend.query_arrow(sql) if sql.startswith("SELECT") else backend.command(sql)
    return refusal.value.code


def test_the_auditor_verifies_and_reads_nothing_else(data_dir: Path, front: HttpFront) -> None:
    key = str(data_dir / "keys" / "authtrail.pub")
    code, out = _cli("verify", "--clickhouse-url", front.auditor_url, "--key", key, "--json")
    report = json.loads(out)
    assert code == 0 and report["store_damage"] == [], report
    assert {tenant["tenant_id"] for tenant in report["tenants"]} == {
        "acme", "globex", "authtrail-rejected-0",
    }  # fmt: skip
    # status reads the tables too (the chain_status view's SELECT, not the view).
    code, out = _cli("status", "--json", "--clickhouse-url", front.auditor_url)
    assert code == 0 and [t["tenant_id"] for t in json.loads(out)["tenants"]] == [
        "acme", "authtrail-rejected-0", "globex",
    ]  # fmt: skip
    for view in ("chain_status", "lockouts", "failed_logins_hourly"):
        assert _refused(front.auditor_url, f"SELECT count() FROM {view}") == ACCESS_DENIED
    for sql in ("INSERT INTO events (tenant_id) SELECT 'x'", "DROP TABLE events",
                "ALTER TABLE events DELETE WHERE 1"):  # fmt: skip
        assert _refused(front.auditor_url, sql) == READONLY


def test_the_analyst_reads_views_and_writes_nothing(front: HttpFront) -> None:
    with ServerBackend(front.analyst_url, read_only=True) as analyst:
        found = analyst.query_arrow("SELECT tenant_id FROM chain_status ORDER BY 1").to_pylist()
    assert [row["tenant_id"] for row in found] == ["acme", "authtrail-rejected-0", "globex"]
    for sql in ("INSERT INTO events (tenant_id) SELECT 'x'", "DROP TABLE events",
                "CREATE OR REPLACE VIEW chain_status AS SELECT 1"):  # fmt: skip
        assert _refused(front.analyst_url, sql) == READONLY


def test_the_writer_finds_the_schema_made_and_may_not_change_it(front: HttpFront) -> None:
    with ServerBackend(front.writer_url) as writer:
        assert missing_statements(writer) == []  # it sees every table and view by name
        assert ensure_schema(writer) == []  # so the sink sends no DDL
        stored = writer.query_arrow("SELECT count() AS n FROM events").to_pylist()
        assert stored == [{"n": 25 + 2}]  # acme and globex
    for sql in ("ALTER TABLE events DELETE WHERE tenant_id = 'acme'",
                "ALTER TABLE events UPDATE user_name = 'x' WHERE 1", "DROP TABLE checkpoints",
                "TRUNCATE TABLE rejected", "RENAME TABLE tiles TO t2",
                "CREATE OR REPLACE VIEW chain_status AS SELECT 1",
                "INSERT INTO events (tenant_id) SELECT tenant_id FROM chain_status",
                "SELECT count() FROM lockouts"):  # fmt: skip
        assert _refused(front.writer_url, sql) == ACCESS_DENIED, sql
    with ServerBackend(front.analyst_url, read_only=True) as analyst:
        assert analyst.query_arrow("SELECT count() AS n FROM events").to_pylist() == [{"n": 27}]


def test_a_writer_cannot_make_the_schema_init_db_makes_it(tmp_path: Path) -> None:
    with (
        EmbeddedBackend(tmp_path / "clickhouse") as owner,
        HttpFront(owner, writer_token=secrets.token_urlsafe(16)) as fresh,
        ServerBackend(fresh.writer_url) as writer,
    ):
        with pytest.raises(ConfigurationError, match="run `authtrail init-db`"):
            ensure_schema(writer)
        assert len(ensure_schema(owner)) == 12  # what init-db does on the embedded store
        assert ensure_schema(writer) == []
    code, out = _cli("--data-dir", str(tmp_path), "init-db")  # again: nothing to create
    assert code == 0 and "0 tables, views or columns created" in out


def test_the_dashboards_queries_run_as_the_analyst(front: HttpFront) -> None:
    """Grafana reads ClickHouse as the analyst (deploy/grafana): every panel's SQL runs."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        target["rawSql"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
        if target["datasource"]["type"] == "grafana-clickhouse-datasource"
    ]
    assert len(queries) >= 4
    with ServerBackend(front.analyst_url, read_only=True) as analyst:
        answers = [analyst.query_arrow(sql).to_pylist() for sql in queries]
    chains = {row["tenant_id"]: row["unsigned_tail"] for row in answers[0]}
    assert chains == {"acme": 2, "globex": 0, "authtrail-rejected-0": 0}
    lockouts = next(rows for sql, rows in zip(queries, answers, strict=True) if "lockouts" in sql)
    assert {row["event_type"] for row in lockouts} == {
        "ACCOUNT_LOCKED", "ACCOUNT_UNLOCKED", "BRUTE_FORCE_SUSPECTED",
    }  # fmt: skip


def test_each_user_logs_in_with_its_own_token_only(front: HttpFront) -> None:
    urls = {"analyst": front.analyst_url, "auditor": front.auditor_url,
            "writer": front.writer_url}  # fmt: skip
    tokens = {user: url.split(":")[2].split("@")[0] for user, url in urls.items()}
    for user in urls:
        for other, token in tokens.items():
            if other == user:
                continue
            crossed = urls[user].replace(tokens[user], token)
            with pytest.raises(ConfigurationError):
                ServerBackend(crossed, connect_timeout=2)
    with pytest.raises(InvalidArgumentError, match="token of its own"):
        HttpFront(front.backend, token="same", auditor_token="same")
    with pytest.raises(InvalidArgumentError, match="no admin"):
        front.admin_url  # noqa: B018  # none configured: nobody may change the schema
