"""Shared by the warmer's tests: a config with the cache on, request history written as the gateway writes it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.types.json import Jsonb

from singularity_ops.cache_key import chat_material, request_keys
from singularity_ops.config import Config, load_config

MONDAY = datetime(2026, 3, 2, 8, 50, tzinfo=UTC)  # a Monday, ten minutes before the morning rush
MODEL = "llama3.2:3b"


def cache_config(tmp_path: Path, ollama_host: str, database_url: str, **sections: Any) -> Config:
    tree: dict[str, Any] = {"cache": {"enabled": True, "warmer": {"timezone": "UTC", **sections.pop("warmer", {})},
                                      **sections.pop("cache", {})}}
    tree.update(sections)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load_config(config_file=path, environ={"OLLAMA_HOST": ollama_host, "SINGULARITY_DATABASE_URL": database_url,
                                                  "SINGULARITY_HOME": str(tmp_path / "home")})


def asked(database_url: str, prompt: str, *moments: datetime, model: str = MODEL, tenant: str = "") -> str:
    """Rows of the request record, as the gateway writes them, for a plain chat client's question; its key."""
    material = chat_material(model, prompt)
    key, _ = request_keys(material, tenant)
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany("INSERT INTO cache_requests (at, model, key, tenant, material, result) "
                           "VALUES (%s, %s, %s, %s, %s, 'miss')",
                           [(moment, material["model"], key, tenant, Jsonb(material)) for moment in moments])
    return key


def warms(database_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        cursor = conn.execute("SELECT model, key, prompt, reason, expected_requests, planned, status, outcome, tokens "
                              "FROM cache_warms ORDER BY id")
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
