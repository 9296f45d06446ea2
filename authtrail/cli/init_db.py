"""``authtrail init-db``: the database, tables, views, roles and users, made once by an
administrator, so that the services run with credentials that cannot change the past.

On a ClickHouse server (``--clickhouse-url`` with an administrator's credential): creates
the database, every missing table and view, the roles ``authtrail_writer``,
``authtrail_analyst``, ``authtrail_auditor``, ``authtrail_retention`` with exactly their
grants (sinks/access.py), and the users ``writer``, ``analyst``, ``auditor``,
``retention`` whose password is set (``AUTHTRAIL_WRITER_PASSWORD``
…). Running it again converges: grants are reset, passwords re-set. On the embedded
store (no URL) it creates the tables and views; chdb has no users (the HTTP front of
``authtrail up`` enforces the same roles itself). ``--print-sql`` prints the statements
for a server and connects to nothing.
"""

from __future__ import annotations

import argparse
import secrets
from urllib.parse import urlsplit, urlunsplit

from authtrail.settings import Settings
from authtrail.sinks.access import USERS, role_statements, user_statements
from authtrail.sinks.clickhouse_sql import quote_identifier

DEFAULT_DATABASE = "authtrail"


def _passwords(settings: Settings) -> dict[str, str]:
    given = {
        "writer": settings.writer_password,
        "analyst": settings.analyst_password,
        "auditor": settings.auditor_password,
        "retention": settings.retention_password,
    }
    return {user: password for user, password in given.items() if password}


def server_statements(settings: Settings, database: str) -> list[str]:
    """Roles, grants and the users with a password, for ``database`` (fresh salts)."""
    statements = role_statements(database)
    for user, password in _passwords(settings).items():
        statements += user_statements(user, password, database, secrets.token_hex(16))
    return statements


def _database_of(url: str) -> str:
    from authtrail.sinks.server import parse_server_url

    return parse_server_url(url).database or "default"


def _server_url_without_database(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/"))


def run_init_db(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.sinks.schema_setup import ensure_schema
    from authtrail.sinks.service import open_backend
    from authtrail.sinks.tables import (
        MERGE_TREE_TABLES,
        create_statements,
        part_settings_statement,
    )

    url = settings.clickhouse_url
    database = _database_of(url) if url else DEFAULT_DATABASE
    if args.print_sql:
        print(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)};")
        print(f"USE {quote_identifier(database)};")
        # The ALTERs give an older store's tables today's part settings (no-ops otherwise).
        settings_of_older = [part_settings_statement(table) for table in MERGE_TREE_TABLES]
        statements = (*create_statements(), *settings_of_older,
                      *server_statements(settings, database))  # fmt: skip
        for statement in statements:
            print(statement + ";")
        return 0
    if not url:
        backend = open_backend(settings)
        try:
            made = ensure_schema(backend)
        finally:
            backend.close()
        print(f"embedded store {settings.data_dir / 'clickhouse'}: {len(made)} tables, views or "
              "columns created; users and roles exist only on a ClickHouse server "
              "(`authtrail up`'s HTTP front enforces the same roles)")  # fmt: skip
        return 0
    from authtrail.sinks.server import ServerBackend

    with ServerBackend(_server_url_without_database(url)) as admin:
        admin.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
    with ServerBackend(url) as backend:
        made = ensure_schema(backend)
        for statement in server_statements(settings, database):
            backend.command(statement)
    print(f"database {database}: {len(made)} tables, views or columns created; roles "
          "authtrail_writer, authtrail_analyst, authtrail_auditor, authtrail_retention "
          "granted")  # fmt: skip
    passwords = _passwords(settings)
    for user in USERS:
        if user in passwords:
            print(f"user {user}: ready (role authtrail_{user})")
        else:
            print(f"user {user}: not created or changed (set AUTHTRAIL_{user.upper()}_PASSWORD)")
    return 0
