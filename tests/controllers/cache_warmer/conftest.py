from tests.exporter.gateway.cache.conftest import vector_database_url

__all__ = ["vector_database_url"]
