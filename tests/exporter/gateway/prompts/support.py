"""End-to-end helpers: a gateway with its history database and the prompt layer syncing fast, the `prompts`
command run as a user runs it, chat requests from distinct clients (X-Forwarded-For from a trusted proxy), and
waiting for what the layer writes."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from singularity_ops.cli.main import main
from singularity_ops.prompt_ab import prompt_id
from tests.helpers import wait_for

SYSTEM = "You are the support assistant of Example Ltd. Answer briefly."
PID = prompt_id(SYSTEM)
MODEL = "llama3.2:3b"
OPTIMIZER = "qwen2.5-coder:1.5b"
SETTINGS = {"sync_seconds": 0.05, "model": OPTIMIZER, "examples": 3, "worst_examples": 1, "candidates": 2,
            "schedule": None, "test": {"min_outcomes": 30}}


class Stack:
    """The gateway under test, the `prompts` command on the same database and config, and SQL for checking."""

    def __init__(self, gateway: Any, database_url: str, config_file: Path) -> None:
        self.gateway = gateway
        self.url = gateway.gateway_url
        self.database_url = database_url
        self.config_file = config_file
        self.http = httpx.Client(timeout=30)  # one kept-alive client: a new one per request costs more than the hop

    @property
    def layer(self) -> Any:
        return self.gateway.exporter.gateway.gateway.prompts

    def cli(self, *args: str) -> tuple[int, Any]:
        out = io.StringIO()
        with redirect_stdout(out):
            code = main(["prompts", *args, "--config", str(self.config_file)])
        text = out.getvalue()
        return code, json.loads(text) if "--json" in args and code == 0 else text

    def chat(self, client: str, *users: str, system: str | None = SYSTEM) -> httpx.Response:
        messages = [{"role": "system", "content": system}] if system is not None else []
        for index, text in enumerate(users):
            if index:
                messages.append({"role": "assistant", "content": "earlier answer"})
            messages.append({"role": "user", "content": text})
        return self.http.post(self.url + "/api/chat", json={"model": MODEL, "messages": messages, "stream": False},
                              headers={"X-Forwarded-For": client})

    def feedback(self, client: str, request_id: str, rating: Any) -> httpx.Response:
        return self.http.post(self.url + "/singularity/v1/feedback",
                              json={"request_id": request_id, "rating": rating}, headers={"X-Forwarded-For": client})

    def rows(self, query: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(query, params).fetchall()

    def found(self, query: str, *params: Any) -> list[tuple]:
        """``rows``, or none while the gateway has not migrated the database yet (it does on first use)."""
        try:
            return self.rows(query, *params)
        except psycopg.errors.UndefinedTable:
            return []

    def synced(self, condition: Any, what: str) -> Any:
        """Wait until the gateway's prompt layer has read back what a command changed."""
        return wait_for(lambda: condition(self.layer.managed), timeout=10, what=what)

    def written(self, count: int) -> None:
        wait_for(lambda: self.found("SELECT count(*) >= %s FROM prompt_dialogues", count) == [(True,)], timeout=20,
                 what=f"{count} dialogues written")

    def enable(self, name: str = "support") -> None:
        wait_for(lambda: self.found("SELECT 1 FROM prompts WHERE id = %s", PID), what="the prompt recorded")
        assert self.cli("enable", PID[:10], "--name", name)[0] == 0
        self.synced(lambda managed: PID in managed, "the gateway picking up the enabled prompt")


def make_stack(make_gateway, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ollama) -> Stack:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"prompt_optimizer": SETTINGS}))
    monkeypatch.setenv("SINGULARITY_DATABASE_URL", database_url)
    monkeypatch.setenv("SINGULARITY_HOME", str(tmp_path))
    monkeypatch.setenv("OLLAMA_HOST", ollama.host)
    flags = {"database.url": database_url, "home": str(tmp_path), "gateway.trusted_proxies": "127.0.0.1/32",
             "guard.enabled": False, "prompt_optimizer.sync_seconds": 0.05}
    gateway = make_gateway(with_history=True, **flags)
    return Stack(gateway, database_url, config_file)


def upstream_systems(ollama: Any) -> list[str | None]:
    """The system prompt of every chat that reached Ollama, in order."""
    found = []
    for path, body in list(ollama.received):
        if path == "/api/chat":
            messages = json.loads(body).get("messages", [])
            found.append(next((m["content"] for m in messages if m.get("role") == "system"), None))
    return found
