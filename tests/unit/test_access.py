"""The roles and users `authtrail init-db` creates on a ClickHouse server (sinks/access.py).

No ClickHouse server can run here (chdb refuses CREATE USER), so the exact statements
are pinned as known answers; the same rights, enforced by the embedded store's HTTP
front, are exercised for real in tests/integration/test_front_roles.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from authtrail.cli.init_db import run_init_db
from authtrail.settings import Settings
from authtrail.sinks.access import (
    ROLES,
    TABLES,
    front_grant,
    password_hash,
    role_statements,
    user_statements,
)
from authtrail.sinks.query_policy import ANYTHING


def test_roles_and_their_grants_known_answer() -> None:
    assert role_statements("audit") == [
        "CREATE ROLE IF NOT EXISTS authtrail_writer",
        "REVOKE ALL ON *.* FROM authtrail_writer",
        "GRANT SELECT, INSERT ON `audit`.`events` TO authtrail_writer",
        "GRANT SELECT, INSERT ON `audit`.`checkpoints` TO authtrail_writer",
        "GRANT SELECT, INSERT ON `audit`.`rejected` TO authtrail_writer",
        "GRANT SELECT, INSERT ON `audit`.`tiles` TO authtrail_writer",
        "GRANT SHOW TABLES ON `audit`.* TO authtrail_writer",
        "CREATE ROLE IF NOT EXISTS authtrail_analyst",
        "REVOKE ALL ON *.* FROM authtrail_analyst",
        "GRANT SELECT ON `audit`.* TO authtrail_analyst",
        "CREATE ROLE IF NOT EXISTS authtrail_auditor",
        "REVOKE ALL ON *.* FROM authtrail_auditor",
        "GRANT SELECT ON `audit`.`events` TO authtrail_auditor",
        "GRANT SELECT ON `audit`.`checkpoints` TO authtrail_auditor",
        "GRANT SELECT ON `audit`.`rejected` TO authtrail_auditor",
        "GRANT SELECT ON `audit`.`tiles` TO authtrail_auditor",
        "GRANT SHOW TABLES ON `audit`.* TO authtrail_auditor",
        "CREATE ROLE IF NOT EXISTS authtrail_retention",
        "REVOKE ALL ON *.* FROM authtrail_retention",
        "GRANT SELECT ON `audit`.`events` TO authtrail_retention",
        "GRANT SELECT ON `audit`.`checkpoints` TO authtrail_retention",
        "GRANT SELECT ON `audit`.`rejected` TO authtrail_retention",
        "GRANT SELECT ON `audit`.`tiles` TO authtrail_retention",
        "GRANT SHOW TABLES ON `audit`.* TO authtrail_retention",
        "GRANT ALTER DELETE ON `audit`.`events` TO authtrail_retention",
        "GRANT ALTER DELETE ON `audit`.`rejected` TO authtrail_retention",
    ]


def test_no_role_may_change_or_remove_rows_or_tables() -> None:
    """Except the retention role's one right: deleting rows of events and rejected (which
    verify reports as damage unless a signed retention statement in the log covers them)."""
    deletions = [
        "GRANT ALTER DELETE ON `db`.`events` TO authtrail_retention",
        "GRANT ALTER DELETE ON `db`.`rejected` TO authtrail_retention",
    ]
    statements = role_statements("db")
    assert [line for line in statements if "ALTER" in line.upper()] == deletions
    granted = " ".join(line for line in statements if line not in deletions).upper()
    for right in ("ALTER", "DELETE", "UPDATE", "DROP", "TRUNCATE", "CREATE TABLE", "OPTIMIZE",
                  "ALL ON", "INSERT ON `DB`.*"):  # fmt: skip
        assert f"GRANT {right}" not in granted and f", {right}" not in granted


def test_user_statements_send_only_a_salted_hash() -> None:
    statements = user_statements("writer", "correct horse", "audit", "0123456789abcdef")
    digest = "4f2727c8b2794211367a9ad01fe7190e2df5f25ce127fdbd33fcca2a9b6eda6e"
    identified = f"IDENTIFIED WITH sha256_hash BY '{digest}' SALT '0123456789abcdef'"
    assert statements == [
        f"CREATE USER IF NOT EXISTS `writer` {identified} DEFAULT DATABASE `audit`",
        f"ALTER USER `writer` {identified}",
        "GRANT authtrail_writer TO `writer`",
        "ALTER USER `writer` DEFAULT ROLE authtrail_writer",
    ]
    assert password_hash("correct horse", "0123456789abcdef") == digest
    assert not any("correct horse" in statement for statement in statements)
    with pytest.raises(ValueError):
        user_statements("writer", "", "audit", "salt")
    with pytest.raises(KeyError):
        user_statements("admin", "pw", "audit", "salt")


def test_front_grants_mirror_the_roles() -> None:
    assert front_grant("analyst") == ANYTHING
    assert front_grant("auditor").readable == frozenset(TABLES)
    assert front_grant("auditor").insertable == frozenset()
    assert front_grant("writer").readable == front_grant("writer").insertable == frozenset(TABLES)
    assert set(ROLES) == {"writer", "analyst", "auditor", "retention"}
    with pytest.raises(KeyError):
        front_grant("retention")  # the embedded store deletes only inside `authtrail up`


def test_print_sql_creates_the_users_with_passwords_and_connects_nowhere() -> None:
    settings = Settings(
        clickhouse_url="http://admin:secret@nowhere.invalid:8123/audit",
        writer_password="w-pass", auditor_password="a-pass",
    )  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_init_db(argparse.Namespace(print_sql=True), settings) == 0
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["CREATE DATABASE IF NOT EXISTS `audit`;", "USE `audit`;"]
    assert "CREATE TABLE IF NOT EXISTS events (" in lines
    assert (
        "ALTER TABLE events MODIFY SETTING min_bytes_for_wide_part = 134217728, "
        "merge_selector_base = 20;"
    ) in lines
    users = [line.split()[5] for line in lines if line.startswith("CREATE USER")]
    assert users == ["`writer`", "`auditor`"]  # no analyst password: no analyst user
    assert "w-pass" not in out.getvalue() and "a-pass" not in out.getvalue()
    assert "secret" not in out.getvalue()
    assert "w-pass" not in repr(settings)
