"""The fleet's tests use the ``pg_server`` and ``pg_dsn`` fixtures of ``tests/conftest.py`` (a fresh database each).

Tests that only need *a* database (each registers workspaces of its own, with
new ids, and never counts what others left there) share one per module:
``shared_pg_dsn``, which saves the second or so a ``CREATE DATABASE`` costs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@pytest.fixture(scope="module")
def shared_pg_dsn(pg_server: str) -> Iterator[str]:
    """A new database shared by the tests of one module; dropped afterwards."""
    name = f"codeagent_m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_server)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
