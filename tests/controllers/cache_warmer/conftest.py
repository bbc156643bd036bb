import pytest

from tests.exporter.gateway.cache.conftest import with_pgvector


@pytest.fixture
def vector_database_url(database_url: str) -> str:
    return with_pgvector(database_url)
