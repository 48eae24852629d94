"""Fresh PostgreSQL databases for tests.

``TRIOGRAPH_TEST_POSTGRES`` names a database on a server the tests may create databases on
(``postgresql://postgres@127.0.0.1:5433/postgres``; ``.ci/run`` starts one and sets it). Each
:func:`fresh_database` is a new empty database on that server, dropped by
:func:`drop_database`. Both block: call them through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import os
import uuid

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: the admin database, or None when the Postgres tests are skipped
ADMIN_DSN = os.environ.get("TRIOGRAPH_TEST_POSTGRES")


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    assert ADMIN_DSN is not None, "TRIOGRAPH_TEST_POSTGRES is not set"
    return psycopg.connect(ADMIN_DSN, autocommit=True)


def fresh_database(template: str | None = None) -> str:
    """Create a database, empty or a copy of the database named ``template``; returns its
    ``postgresql://`` URL."""
    name = f"triograph_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    assert ADMIN_DSN is not None
    return make_conninfo_url(ADMIN_DSN, dbname=name)


def drop_database(url: str) -> None:
    """Drop a database :func:`fresh_database` made, closing whatever still uses it."""
    name = conninfo_to_dict(url)["dbname"]
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_conninfo_url(dsn: str, **changes: str) -> str:
    """``dsn`` (a URL or key=value string) with ``changes``, as a ``postgresql://`` URL."""
    params = {**conninfo_to_dict(dsn), **changes}
    info = make_conninfo("", **params)  # normalised key=value form
    params = conninfo_to_dict(info)
    user = params.pop("user", "")
    password = params.pop("password", "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = params.pop("dbname", "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    where = f"{host}:{port}" if port else host
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"postgresql://{auth}{where}/{dbname}" + (f"?{query}" if query else "")


def has_extension(name: str) -> bool:
    """The server can ``CREATE EXTENSION name`` (pgvector is ``vector``)."""
    with _admin() as conn:
        found = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (name,))
        return found.fetchone() is not None
