"""What the optimiser's tests share: a migrated database holding one enabled prompt as the gateway leaves it,
dialogues with outcomes written as the gateway writes them, and a deterministic stand-in for the optimiser, the
replayed model and the judge."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.types.json import Jsonb

from singularity_ops.config import Config, load_config
from singularity_ops.controllers.prompt_optimizer import store
from singularity_ops.prompt_ab import prompt_id
from singularity_ops.store import Database

SYSTEM = "You are the support assistant of Example Ltd."
PID = prompt_id(SYSTEM)
NOW = datetime.now(UTC).replace(microsecond=0)
MODEL = "llama3.2:3b"
OPTIMIZER = "qwen2.5-coder:1.5b"
GOOD_CANDIDATE = "You are the support assistant of Example Ltd. Always give opening times and a phone number."
PLAIN_CANDIDATE = "You are the assistant of Example Ltd."
OPTIMIZER_ANSWER = (f"PATTERNS:\n- satisfied users got times and a number\n<prompt>{GOOD_CANDIDATE}</prompt>\n"
                    f"<prompt>{PLAIN_CANDIDATE}</prompt>")


def make_config(tmp_path: Path, database_url: str, ollama_url: str = "http://127.0.0.1:9", **settings: Any) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"prompt_optimizer": {"model": OPTIMIZER, "timezone": "UTC", **settings}}))
    return load_config(config_file=path, environ={"SINGULARITY_DATABASE_URL": database_url,
                                                  "SINGULARITY_HOME": str(tmp_path), "OLLAMA_HOST": ollama_url})


def migrate(config: Config) -> None:
    Database.open_migrated(config.database, config.home).close()


def seed_prompt(url: str, *, name: str = "support", text_seen: bool = True) -> None:
    """The prompt as the gateway records it, enabled by the operator, its text kept at the next request."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO prompts (id, first_seen, last_seen, request_count, models, preview) "
                     "VALUES (%s, %s, %s, 1, %s, %s)", (PID, NOW, NOW, [MODEL], SYSTEM[:60]))
        store.enable(conn, PID, name, "cli:test", NOW)
        if text_seen:
            conn.execute("UPDATE prompts SET original_text = %s WHERE id = %s", (SYSTEM, PID))


def add_dialogues(url: str, outcomes: dict[str, int], *, experiment_id: int | None = None,
                  variant: str | None = None, served: int | None = None, at: datetime | None = None,
                  question: str = "When are you open?", answer: str = "From 9 to 5, call 555-0100.") -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO prompt_dialogues (request_id, prompt_id, at, client_hash, model, endpoint, messages, answer, "
            "latency_seconds, status, experiment_id, variant, served_candidate, outcome, outcome_reason) VALUES "
            "(%s, %s, %s, 'c', %s, '/api/chat', %s, %s, 0.5, 200, %s, %s, %s, %s, %s)",
            [(uuid.uuid4(), PID, (at or NOW) - timedelta(seconds=index), MODEL,
              Jsonb([{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{question} ({index})"}]),
              "" if outcome == "failure" else answer, experiment_id, variant, served, outcome,
              {"success": "feedback", "weak_success": "continued", "failure": "regenerate"}.get(outcome))
             for kind, count in outcomes.items() for index, outcome in enumerate([kind] * count)])


def rows(url: str, query: str, *params: Any) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


class FakeModels:
    """The optimiser answers with two candidates; a replayed answer is good when its system prompt asks for times
    and a number; the judge scores a good answer 9 and any other 5 (its reply is JSON, as asked)."""

    def __init__(self, optimizer_answer: str = OPTIMIZER_ANSWER) -> None:
        self.optimizer_answer = optimizer_answer
        self.calls: list[tuple[str, list[dict[str, Any]], float]] = []
        self.judged: list[str] = []

    def chat(self, model: str, messages: list[dict[str, Any]], temperature: float) -> str:
        self.calls.append((model, messages, temperature))
        if model == OPTIMIZER:
            return self.optimizer_answer
        system = messages[0]["content"]
        return "Open 9 to 5, call 555-0100." if "phone number" in system else "We are open on weekdays."

    def judge(self, prompt: str) -> str:
        self.judged.append(prompt)
        answer = re.search(r"Answer:\n<<<\n(.*?)\n>>>", prompt, re.S).group(1)
        return json.dumps({"score": 9 if "555" in answer else 5, "reason": "compared with the reference"})
