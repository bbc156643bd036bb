"""What the validator's tests share: a stand-in Ollama whose models answer from an answer book, a config pointing
at it and a fresh database, a small suite, and readers of what a run left in PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import yaml

from singularity_ops.config import Config, load_config
from singularity_ops.controllers.validator.progress import Progress
from singularity_ops.controllers.validator.runner import RunReport, ValidationRun
from singularity_ops.controllers.validator.suite import Suite, parse_suite
from singularity_ops.store import Database
from tests.standins.ollama import OllamaStandIn

VPS = 2_040_109_465  # the seed's 1.9 GB server
MODELS = ("llama3.2:3b", "qwen2.5-coder:1.5b", "tinyllama:1.1b", "phi4:14b", "nomic-embed-text:latest")
# Five cases; each prompt has a right answer, and a wrong one that every scorer rejects.
SMOKE = {"name": "smoke", "cases": [
    {"id": "capital", "prompt": "What is the capital of France?", "expect": {"contains": "Paris"}},
    {"id": "sum", "prompt": "What is 17 + 25?", "expect": {"number": 42}},
    {"id": "person", "prompt": "Give Ada's name as JSON.", "expect": {"json": {"fields": {"name": "Ada"}}}},
    {"id": "ready", "prompt": "Say ready.", "expect": {"equals": "ready"}},
    {"id": "time", "prompt": "When does the train arrive?", "expect": {"regex": r"\b17:25\b"}},
]}
RIGHT = {"What is the capital of France?": "The capital of France is Paris.", "What is 17 + 25?": "17 + 25 = 42",
         "Give Ada's name as JSON.": '{"name": "Ada"}', "Say ready.": "Ready.", "When does the train arrive?": "17:25"}
WRONG = {"What is the capital of France?": "Lyon, I think.", "What is 17 + 25?": "It is 41.",
         "Give Ada's name as JSON.": "Her name is Ada.", "Say ready.": "I am ready to help!",
         "When does the train arrive?": "At 5 pm."}


class AnswerBook:
    """``standin.answer``: per model, how many of the smoke suite's cases (in order) it answers right."""

    def __init__(self, right: dict[str, int] | None = None) -> None:
        self.right = dict(right or {})
        self.replies: dict[str, str] = {}  # model → one reply to every prompt (a judge, say)

    def __call__(self, model: str, prompt: str) -> str | None:
        if model in self.replies:
            return self.replies[model]
        if prompt not in RIGHT:
            return None
        index = list(RIGHT).index(prompt)
        return RIGHT[prompt] if index < self.right.get(model, 0) else WRONG[prompt]


def validator_config(tmp_path: Path, standin: OllamaStandIn, database_url: str, memory: int | None = None,
                     **validator: Any) -> Config:
    tree: dict[str, Any] = {"validator": validator}
    if memory is not None:
        tree["memory"] = {"ollama_memory_bytes": memory}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    environ = {"OLLAMA_HOST": standin.url, "SINGULARITY_DATABASE_URL": database_url, "SINGULARITY_HOME": str(tmp_path)}
    return load_config(environ=environ, config_file=path)


def smoke(**changes: Any) -> Suite:
    return parse_suite({**SMOKE, **changes}, "test")


def validate(config: Config, suite: Suite | None = None, models: list[str] | None = None, demote: bool = True,
             progress: Progress | None = None) -> RunReport:
    database = Database.open_migrated(config.database, config.home)
    try:
        return ValidationRun(config, database, suite or smoke(), progress=progress).run(models, demote=demote)
    finally:
        database.close()


def rows(database_url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        cursor = conn.execute(query, params)
        names = [c.name for c in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def model_status(database_url: str) -> dict[str, tuple[str, str]]:
    return {r["model"]: (r["status"], r["reason"]) for r in rows(database_url, "SELECT * FROM model_status")}


def loaded(standin: OllamaStandIn) -> set[str]:
    return {e.model.name for e in standin._running()}
