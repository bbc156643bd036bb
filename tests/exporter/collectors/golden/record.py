"""Re-record the Ollama answers the golden test renders:
``.venv/bin/python -m tests.exporter.collectors.golden.record``.

Answers come from the faithful stand-in (tests/standins), with fixed models, loads and clock, so a diff in
the recorded JSON is a change of the stand-in and a diff in ``ollama.prom`` a change of the exporter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx

from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

HERE = Path(__file__).parent
INSTALLED = ["llama3.2:3b", "qwen2.5-coder:1.5b", "phi4:14b", "nomic-embed-text:latest"]


def main() -> None:
    with OllamaStandIn(models=[REAL_MODELS[n] for n in INSTALLED], tz=timezone(timedelta(hours=3))) as ollama:
        ollama.load("llama3.2:3b", expires_in=timedelta(minutes=5), context_length=8192)
        ollama.load("nomic-embed-text:latest", expires_in=None)
        answers = {
            "recorded_at": datetime.now(UTC).isoformat(),
            "version": httpx.get(ollama.url + "/api/version").json(),
            "tags": httpx.get(ollama.url + "/api/tags").json(),
            "ps": httpx.get(ollama.url + "/api/ps").json(),
            "show": {n: httpx.post(ollama.url + "/api/show", json={"model": n}).json() for n in INSTALLED},
        }
    (HERE / "ollama_api.json").write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
