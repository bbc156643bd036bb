"""Shared fixtures: a real PostgreSQL (embedded pgserver, or SINGULARITY_TEST_DATABASE_URL), fresh per test."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[1]

# Fixtures that start a whole live set-up (Prometheus scraping an exporter under traffic, the alert stack): a test
# that uses one is slow however quick its own body is.
SLOW_FIXTURES = {"live"}


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """A test that runs a command in-process (``main([...])``) sets up logging as the command does: root level and
    handlers. Put them back, so that a later test's caplog still sees warnings."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Admin URL of a real PostgreSQL server for the whole session."""
    external = os.environ.get("SINGULARITY_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    server = pgserver.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A new, empty database on the session's server, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    conninfo = psycopg.conninfo.conninfo_to_dict(postgres_server_url)
    conninfo["dbname"] = name
    yield psycopg.conninfo.make_conninfo(**conninfo)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration leaks in from the developer's or CI's environment."""
    from singularity_ops.config import ENVIRONMENT

    for variable in [*ENVIRONMENT, "SINGULARITY_CONFIG"]:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def fresh_tls(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """singularity_ops.tls's shared context built afresh, from the system's CAs unless the test sets SSL_CERT_FILE."""
    from singularity_ops import tls

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    tls.client_context.cache_clear()
    yield
    tls.client_context.cache_clear()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Installed models of the default stand-in: two small ones that fit anywhere and the seed's phi4.
DEFAULT_MODELS = ("llama3.2:3b", "qwen2.5-coder:1.5b", "phi4:14b")


@pytest.fixture
def ollama() -> Iterator:
    """A running Ollama stand-in with real model shapes installed and nothing loaded."""
    from tests.standins.models import REAL_MODELS
    from tests.standins.ollama import OllamaStandIn

    with OllamaStandIn(models=[REAL_MODELS[name] for name in DEFAULT_MODELS]) as standin:
        yield standin
