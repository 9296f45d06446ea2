"""Who may do what in authtrail's ClickHouse database: four roles, their users, the SQL.

* ``writer`` (the sink): INSERT and SELECT on the tables (it reads back its resume
  points), SHOW TABLES to find what exists; no ALTER, DELETE, UPDATE, DROP, TRUNCATE,
  CREATE or OPTIMIZE, so the credential the sink holds cannot change a stored row.
* ``analyst``: SELECT on the whole database, tables and views.
* ``auditor`` (``authtrail verify``): SELECT on the tables verify reads and SHOW TABLES,
  so verify can compare each view's definition with authtrail's.
* ``retention`` (``authtrail retain --all --every``, docs/PRIVACY.md "Retention"): what
  the auditor may, and ``ALTER DELETE`` on ``events`` and ``rejected`` alone (a tenant's
  pruned records, a rejection log's pruned rejections) — the one right that removes
  rows, so that the long-running retention service holds neither the administrator's
  credential nor a right to change a row, a checkpoint or a tile. A deletion it makes
  without a signed statement in the log is what ``verify`` reports as damage.

Tables and views are made by ``authtrail init-db`` with an administrator's credential;
the sink only creates what is missing (sinks/schema_setup.py), which the writer cannot.
Pure: statements as text, known-answer tested. The embedded store's HTTP front enforces
the same rights itself (:func:`front_grant`), since chdb has no access control.
"""

from __future__ import annotations

import hashlib

from authtrail.sinks.clickhouse_sql import quote_identifier, quote_string_literal
from authtrail.sinks.query_policy import ANYTHING, Grant
from authtrail.sinks.tables import CHECKPOINTS_TABLE, EVENTS_TABLE, REJECTED_TABLE, TILES_TABLE

WRITER, ANALYST, AUDITOR, RETENTION = "writer", "analyst", "auditor", "retention"
#: The tables retention deletes from, under signed statements (docs/PRIVACY.md).
PRUNED_TABLES = (EVENTS_TABLE, REJECTED_TABLE)
USERS = (WRITER, ANALYST, AUDITOR, RETENTION)
ROLES = {WRITER: "authtrail_writer", ANALYST: "authtrail_analyst", AUDITOR: "authtrail_auditor",
         RETENTION: "authtrail_retention"}  # fmt: skip
#: What the sink writes and verify reads: every table, no view.
TABLES = (EVENTS_TABLE, CHECKPOINTS_TABLE, REJECTED_TABLE, TILES_TABLE)


def front_grant(user: str) -> Grant:
    """The rights of front user ``user`` (writer, analyst or auditor: the embedded store
    deletes only inside ``authtrail up``, never through its front); KeyError for others."""
    tables = frozenset(TABLES)
    return {
        WRITER: Grant(readable=tables, insertable=tables),
        ANALYST: ANYTHING,
        AUDITOR: Grant(readable=tables, insertable=frozenset()),
    }[user]


def role_statements(database: str) -> list[str]:
    """Create the four roles and give each exactly its rights in ``database``.

    Each role's grants are revoked first, so running it again after a change converges.
    """
    db = quote_identifier(database)
    statements = []
    for user in USERS:
        role = ROLES[user]
        statements += [f"CREATE ROLE IF NOT EXISTS {role}", f"REVOKE ALL ON *.* FROM {role}"]
        if user == ANALYST:
            statements.append(f"GRANT SELECT ON {db}.* TO {role}")
            continue
        rights = "SELECT, INSERT" if user == WRITER else "SELECT"
        statements += [
            f"GRANT {rights} ON {db}.{quote_identifier(table)} TO {role}" for table in TABLES
        ]
        statements.append(f"GRANT SHOW TABLES ON {db}.* TO {role}")
        if user == RETENTION:
            statements += [
                f"GRANT ALTER DELETE ON {db}.{quote_identifier(table)} TO {role}"
                for table in PRUNED_TABLES
            ]
    return statements


def password_hash(password: str, salt: str) -> str:
    """What ClickHouse's ``sha256_hash … SALT`` stores: hex SHA-256 of password + salt."""
    return hashlib.sha256((password + salt).encode()).hexdigest()


def user_statements(user: str, password: str, database: str, salt: str) -> list[str]:
    """Create (or re-key) ``user`` with its role. Only the salted hash is sent, so the
    password appears in no query text or log. Requires a non-empty password."""
    if not password:
        raise ValueError("a user needs a password")
    name, role = quote_identifier(user), ROLES[user]
    identified = (
        f"IDENTIFIED WITH sha256_hash BY {quote_string_literal(password_hash(password, salt))} "
        f"SALT {quote_string_literal(salt)}"
    )
    return [
        f"CREATE USER IF NOT EXISTS {name} {identified} DEFAULT DATABASE "
        f"{quote_identifier(database)}",
        f"ALTER USER {name} {identified}",
        f"GRANT {role} TO {name}",
        f"ALTER USER {name} DEFAULT ROLE {role}",
    ]
