"""Validation results for the live stack: a real validation run against the stand-in, stored in a real PostgreSQL,
read by the exporter's validation collector, so the dashboard's validation panel has real series to show."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg

from singularity_ops.config import load_config
from singularity_ops.controllers.validator.runner import ValidationRun
from singularity_ops.exporter.collectors.validation import ValidationCollector
from singularity_ops.store import Database
from tests.controllers.validator.helpers import AnswerBook, smoke
from tests.standins.ollama import OllamaStandIn


def validated(postgres_server_url: str, ollama: OllamaStandIn, home: Path) -> ValidationCollector:
    """One run over two models, one of which is demoted; the collector reads its database."""
    name = f"grafana_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(**{**psycopg.conninfo.conninfo_to_dict(postgres_server_url), "dbname": name})
    config = load_config(environ={"OLLAMA_HOST": ollama.url, "SINGULARITY_DATABASE_URL": url,
                                  "SINGULARITY_HOME": str(home)})
    database = Database.open_migrated(config.database, config.home)
    ollama.answer = AnswerBook({"qwen2.5-coder:1.5b": 5, "llama3.2:3b": 2})
    try:
        report = ValidationRun(config, database, smoke()).run(["qwen2.5-coder:1.5b", "llama3.2:3b"])
    finally:
        ollama.answer = None
        database.close()
    assert [m.status for m in report.models] == ["ok", "demoted"], report.as_json()
    return ValidationCollector(lambda: psycopg.connect(url))
