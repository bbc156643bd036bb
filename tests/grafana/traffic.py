"""Client traffic through the gateway: what a day of use leaves in the metrics, in a few seconds."""

from __future__ import annotations

import httpx

MODELS = ("llama3.2:3b", "qwen2.5-coder:1.5b")
TRIPPED = MODELS[0]  # the model whose circuit breaker the traffic opens and closes again
OPEN_SECONDS = 3.0
# A breaker that opens after 3 calls at ≥ 50 % failures, stays open 3 s and closes after 2 good probes.
BREAKER_POLICY = {"gateway.breaker.minimum_calls": 3, "gateway.breaker.open_seconds": OPEN_SECONDS,
                  "gateway.breaker.half_open_calls": 2}


def _post(client: httpx.Client, path: str, body: dict) -> int:
    """POST and read the whole answer (streams included); returns the status."""
    with client.stream("POST", path, json=body) as response:
        response.read()
        return response.status_code


def _generate(client: httpx.Client, model: str = TRIPPED) -> int:
    return _post(client, "/api/generate", {"model": model, "prompt": "x", "stream": False})


def everyday(client: httpx.Client) -> list[int]:
    """Each model asked through /api/generate and /api/chat, streaming and not; a model Ollama lacks; /api/tags."""
    statuses = []
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]
    for model in MODELS:
        for stream in (True, False):
            statuses.append(_post(client, "/api/generate", {"model": model, "prompt": "Why is the sky blue?",
                                                            "stream": stream}))
            statuses.append(_post(client, "/api/chat", {"model": model, "messages": chat, "stream": stream}))
    statuses.append(_generate(client, "no-such-model:1b"))
    statuses.append(client.get("/api/tags").status_code)
    return statuses


def failing(client: httpx.Client, ollama, until_refused: bool, most: int = 40) -> list[int]:
    """Ollama answers /api/generate with 500: once, or until the breaker of TRIPPED opens and the gateway refuses
    with 503 (the window still holds the earlier successes, so that takes more than minimum_calls failures)."""
    ollama.faults_by_path["/api/generate"] = "error500"
    statuses: list[int] = []
    try:
        statuses.append(_generate(client))
        while until_refused and 503 not in statuses and len(statuses) < most:
            statuses.append(_generate(client))
    finally:
        del ollama.faults_by_path["/api/generate"]
    return statuses


def refused(client: httpx.Client) -> list[int]:
    """One more request while the breaker is open: refused without reaching Ollama."""
    return [_generate(client)]


def probes(client: httpx.Client) -> list[int]:
    """Once half-open, two good probes close the breaker again."""
    return [_generate(client) for _ in range(2)]
