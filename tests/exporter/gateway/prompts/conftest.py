"""A migrated database and a prompt layer on it, driven directly (no proxy): apply, finish, sync."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from singularity_ops.config import load_config
from singularity_ops.exporter.gateway.endpoints import INFERENCE
from singularity_ops.exporter.gateway.prompts.layer import PromptLayer
from singularity_ops.store import Database

CHAT = INFERENCE["/api/chat"]
AT = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)  # recent: retention prunes older ones


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def migrated(database_url: str, tmp_path: Path) -> str:
    config = load_config(environ={"SINGULARITY_DATABASE_URL": database_url, "SINGULARITY_HOME": str(tmp_path)})
    Database.open_migrated(config.database, config.home).close()
    return database_url


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def make_layer(migrated: str, loop: asyncio.AbstractEventLoop) -> Iterator[Callable[..., PromptLayer]]:
    made: list[PromptLayer] = []

    def make(connect: Callable[[], psycopg.Connection] | None = None, **settings: Any) -> PromptLayer:
        config = load_config(flags={f"prompt_optimizer.{k}": v for k, v in settings.items()}, environ={})
        layer = PromptLayer(config.prompt_optimizer, CollectorRegistry(),
                            connect or (lambda: psycopg.connect(migrated, autocommit=True)), clock=Clock())
        loop.run_until_complete(layer.start())
        loop.run_until_complete(layer.sync_once())
        made.append(layer)
        return layer

    yield make
    for layer in made:
        loop.run_until_complete(layer.close())


def chat(system: str | None, *users: str, model: str = "llama3.2:3b") -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system is not None else []
    for index, text in enumerate(users):
        if index:
            messages.append({"role": "assistant", "content": f"answer {index}"})
        messages.append({"role": "user", "content": text})
    return {"model": model, "messages": messages}


def apply(layer: PromptLayer, payload: dict[str, Any], client: str, model: str, at: datetime) -> tuple[Any, bytes]:
    """``layer.apply`` as the proxy calls it, on the payload's JSON; (tracked, the new body, or b"" if unchanged)."""
    body = json.dumps(payload).encode()
    tracked, sent = layer.apply(CHAT, payload, body, client, model, at)
    return tracked, (sent if sent != body else b"")


def rows(url: str, query: str, *params: Any) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture
def stack(database_url: str, make_gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ollama) -> Iterator:
    """The gateway with its database and prompt layer, and the `prompts` command beside it (support.Stack). The
    database is asked for first, so that it is dropped after the gateway stops."""
    from tests.exporter.gateway.prompts.support import make_stack

    made = make_stack(make_gateway, database_url, tmp_path, monkeypatch, ollama)
    yield made
    made.http.close()
