"""The views and every query of docs/QUERIES.md, against a store the real worker built.

The store (tests/integration/views_store.py) holds a known story: a brute-forced account
locked and unlocked, a spraying address, tokens, MFA failures, a rejected input and an
unsigned tail. Each cookbook query must return exactly the answer worked out from that
story below, on the embedded store and through the HTTP front as the analyst.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authtrail.cli import main as cli
from authtrail.cli.output import rows
from authtrail.errors import StoreError
from authtrail.sinks.clickhouse import ClickHouseBackend
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.http_front import HttpFront
from authtrail.sinks.server import ServerBackend
from authtrail.sinks.views import VIEWS
from tests.integration.views_store import build_store

COOKBOOK = Path(__file__).resolve().parents[2] / "docs" / "QUERIES.md"
_BLOCK = re.compile(r"```sql\n-- query: ([a-z-]+)\n(.*?)```", re.DOTALL)


def _at(clock: str) -> str:
    return f"2026-01-01 {clock}+00:00"


ALICE_FAILURES = [2, 3, 4]  # seqs: the three failures that locked alice (the 4th came later)
EXPECTED: dict[str, list[dict[str, Any]]] = {
    "failed-logins-by-user": [
        {"user_name": "alice", "failures": 4, "addresses": 1},
        {"user_name": "bob", "failures": 1, "addresses": 1},
        {"user_name": "carol", "failures": 1, "addresses": 1},
        {"user_name": "dave", "failures": 1, "addresses": 1},
        {"user_name": "grace", "failures": 1, "addresses": 1},
    ],
    "failed-logins-by-address": [
        {"client_ip": "203.0.113.9", "failures": 4, "accounts": 1, "tenants": ["acme"]},
        {"client_ip": "198.51.100.66", "failures": 3, "accounts": 3, "tenants": ["acme"]},
        {"client_ip": "192.0.2.30", "failures": 1, "accounts": 1, "tenants": ["acme"]},
        {"client_ip": "198.51.100.7", "failures": 1, "accounts": 1, "tenants": ["globex"]},
    ],
    "failed-logins-by-service-per-hour": [
        {"hour": _at("09:00:00"), "service": "sso", "failures": 4},
        {"hour": _at("09:00:00"), "service": "vpn", "failures": 3},
        {"hour": _at("10:00:00"), "service": "sshd", "failures": 1},
    ],
    "lockouts-with-their-failures": [
        {
            "decision": "ACCOUNT_LOCKED",
            "reason": "max_login_failures",
            "user_name": "alice",
            "decided_at": _at("09:01:30"),
            "locked_until": _at("09:02:30"),
            "failure_count": 3,
            "failure_seqs": ALICE_FAILURES,
            "addresses": ["203.0.113.9"],
        },
        {
            "decision": "ACCOUNT_UNLOCKED",
            "reason": "lock_expired",
            "user_name": "alice",
            "decided_at": _at("09:02:30"),
            "locked_until": _at("09:02:30"),
            "failure_count": 3,
            "failure_seqs": ALICE_FAILURES,
            "addresses": ["203.0.113.9"],
        },
    ],
    "failures-that-locked-an-account": [
        {
            "failure_seq": seq,
            "failed_at": _at(f"09:01:{seq - 1}0"),
            "failure_client_ip": "203.0.113.9",
            "failure_service": "sso",
            "failure_reason": "invalid_credentials",
        }
        for seq in ALICE_FAILURES
    ],
    "locked-at-a-moment": [{"tenant_id": "acme", "user_name": "alice", "until": _at("09:02:30")}],
    "spraying-sources": [
        {
            "tenant_id": "acme",
            "client_ip": "198.51.100.66",
            "alerts": 1,
            "most_accounts": 3,
            "failures": 3,
            "first_seen": _at("09:05:00"),
            "last_seen": _at("09:05:20"),
            "sample_user_names": ["bob", "carol", "dave"],
        },
    ],
    "token-activity-per-client": [
        {"client_id": "billing-api", "issued": 1, "refreshed": 0, "revoked": 0, "failed": 0},
        {"client_id": "portal", "issued": 2, "refreshed": 1, "revoked": 1, "failed": 1},
    ],
    "mfa-failures-by-user": [
        {"user_name": "erin", "mfa_factor": "totp", "failures": 2, "last_failure": _at("09:08:30")},
        {
            "user_name": "frank",
            "mfa_factor": "push",
            "failures": 1,
            "last_failure": _at("09:08:50"),
        },
    ],
    # acme: 25 records; outcome FAILURE: 8 failed logins, a failed refresh, 3 MFA failures.
    "volume-per-tenant": [
        {
            "tenant_id": "acme",
            "events": 25,
            "failures": 12,
            "failed_logins": 8,
            "lockout_decisions": 3,
        },
        {
            "tenant_id": "globex",
            "events": 2,
            "failures": 1,
            "failed_logins": 1,
            "lockout_decisions": 0,
        },
    ],
    "chain-status": [
        {
            "tenant_id": "acme",
            "stored_in": "events",
            "records": 25,
            "last_seq": 25,
            "checkpoints": 6,
            "signed_size": 23,
            "newest_checkpoint": _at("13:00:00"),
            "unsigned_tail": 2,
        },
        {
            "tenant_id": "authtrail-rejected-0",
            "stored_in": "rejected",
            "records": 1,
            "last_seq": 1,
            "checkpoints": 1,
            "signed_size": 1,
            "newest_checkpoint": _at("13:00:00"),
            "unsigned_tail": 0,
        },
        {
            "tenant_id": "globex",
            "stored_in": "events",
            "records": 2,
            "last_seq": 2,
            "checkpoints": 1,
            "signed_size": 2,
            "newest_checkpoint": _at("13:00:00"),
            "unsigned_tail": 0,
        },
    ],
    "unsigned-tails": [{"tenant_id": "acme", "unsigned_tail": 2, "has_unsigned": True}],
    "rejected-by-kind": [
        {"chain_tenant_id": "authtrail-rejected-0", "error_kind": "undecodable", "rejected": 1}
    ],
}


def cookbook() -> dict[str, str]:
    queries: dict[str, str] = {}
    for name, sql in _BLOCK.findall(COOKBOOK.read_text()):
        assert name not in queries, f"two cookbook queries are called {name}"
        queries[name] = sql
    return queries


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("views") / "data"
    build_store(directory)
    return directory


@pytest.fixture(params=["embedded", "front"])
def store(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[ClickHouseBackend]:
    """The store as the embedded engine, or as the analyst through the HTTP front."""
    embedded = EmbeddedBackend(data_dir / "clickhouse")
    try:
        if request.param == "embedded":
            yield embedded
            return
        with (
            HttpFront(embedded) as front,
            ServerBackend(front.analyst_url, read_only=True) as analyst,
        ):
            yield analyst
    finally:
        embedded.close()


def test_every_cookbook_query_has_a_known_answer() -> None:
    assert set(cookbook()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cookbook_query_answers(store: ClickHouseBackend, name: str) -> None:
    assert _normalised(rows(store.query_arrow(cookbook()[name]))) == EXPECTED[name]


def _normalised(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Bool columns arrive as 0/1 from some paths; the expected answers say True/False.
    return [{k: bool(v) if k == "has_unsigned" else v for k, v in row.items()} for row in found]


def test_every_view_is_readable_and_reserved_tenants_stay_out_of_business_views(
    store: ClickHouseBackend,
) -> None:
    for view in VIEWS:
        tenants = {row["tenant_id"] for row in rows(store.query_arrow(f"SELECT * FROM {view}"))}
        if view == "chain_status":
            assert tenants == {"acme", "globex", "authtrail-rejected-0"}
        else:
            assert tenants and not any(t.startswith("authtrail-rejected-") for t in tenants)


def test_the_analyst_cannot_redefine_a_view_through_the_front(data_dir: Path) -> None:
    embedded = EmbeddedBackend(data_dir / "clickhouse")
    try:
        with (
            HttpFront(embedded) as front,
            ServerBackend(front.analyst_url) as analyst,
            pytest.raises(StoreError, match=r"(?i)read.?only"),
        ):
            analyst.command("CREATE OR REPLACE VIEW chain_status AS SELECT 1")
    finally:
        embedded.close()


def test_chain_status_agrees_with_verify(data_dir: Path) -> None:
    """What the view says of each log is what verify found (the tail still fresh)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["--data-dir", str(data_dir), "verify", "--json",
                         "--key", str(data_dir / "keys" / "authtrail.pub")])  # fmt: skip
    report = json.loads(out.getvalue())
    assert code == 0 and report["store_damage"] == [], report
    verified = {r["tenant_id"]: r["signed_size"] for r in report["tenants"]}
    shown = {r["tenant_id"]: r["signed_size"] for r in EXPECTED["chain-status"]}
    assert verified == shown


def test_status_shows_the_chain_status_of_every_log(data_dir: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["--data-dir", str(data_dir), "status", "--json"])
    assert code == 0
    found = [
        (r["tenant_id"], r["records"], r["signed_size"], r["unsigned_tail"],
         r["oldest_unsigned_stored_at"] is not None, r["lockout_decisions"])
        for r in json.loads(out.getvalue())["tenants"]
    ]  # fmt: skip
    assert found == [
        ("acme", 25, 23, 2, True, 3),
        ("authtrail-rejected-0", 1, 1, 0, False, 0),
        ("globex", 2, 2, 0, False, 0),
    ]
