"""The Ollama calls a validation run makes beyond the shared state client: one non-streamed chat per case, a
model's capabilities, embeddings for ``similar`` and the judge's grading for ``judge``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from singularity_ops.errors import OllamaError
from singularity_ops.ollama_api import OllamaClient


@dataclass(frozen=True)
class Answer:
    text: str
    latency_seconds: float  # wall time of the call, as a client sees it
    output_tokens: int | None  # eval_count
    generation_seconds: float | None  # eval_duration


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class ValidatorClient(OllamaClient):
    def capabilities(self, name: str) -> list[str] | None:
        """``/api/show``'s capabilities (Ollama 0.6 and later); None when this Ollama does not say."""
        payload = self._call("POST", "/api/show", {"model": name})
        found = payload.get("capabilities") if isinstance(payload, dict) else None
        return [str(c) for c in found] if isinstance(found, list) else None

    def chat(self, model: str, messages: list[dict[str, str]], options: dict[str, Any], keep_alive: str | int,
             response_format: str | None = None) -> Answer:
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": False, "options": options,
                                "keep_alive": keep_alive}
        if response_format:
            body["format"] = response_format
        started = time.perf_counter()
        payload = self._call("POST", "/api/chat", body)
        latency = time.perf_counter() - started
        message = payload.get("message") if isinstance(payload, dict) else None
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str):
            raise OllamaError(f"Ollama's /api/chat answer for {model} has no message content: is OLLAMA_HOST Ollama?")
        duration = _number(payload.get("eval_duration"))
        return Answer(text, latency, _number(payload.get("eval_count")), duration / 1e9 if duration else None)

    def embed(self, model: str, texts: list[str], keep_alive: str | int) -> list[list[float]]:
        payload = self._call("POST", "/api/embed", {"model": model, "input": texts, "keep_alive": keep_alive})
        vectors = payload.get("embeddings") if isinstance(payload, dict) else None
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise OllamaError(f"Ollama's /api/embed answer for {model} has no embeddings for the {len(texts)} texts")
        return vectors


class OllamaHelpers:
    """``scorers.Helpers`` over Ollama: the configured embedding and judge models. References are embedded once."""

    def __init__(self, client: ValidatorClient, embedding_model: str | None, judge_model: str | None,
                 keep_alive: str | int) -> None:
        self.client = client
        self.embedding_model = embedding_model
        self.judge_model = judge_model
        self.keep_alive = keep_alive
        self._vectors: dict[str, list[float]] = {}

    def embed(self, texts: list[str]) -> list[list[float]]:
        assert self.embedding_model is not None  # the runner checks the suite's needs before it starts
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            for text, vector in zip(missing, self.client.embed(self.embedding_model, missing, self.keep_alive),
                                    strict=True):
                self._vectors[text] = vector
        found = [self._vectors[t] for t in texts]
        if len(self._vectors) > 4096:  # answers are embedded once each; keep only what a suite could reuse
            self._vectors.clear()
        return found

    def judge(self, prompt: str) -> str:
        assert self.judge_model is not None
        answer = self.client.chat(self.judge_model, [{"role": "user", "content": prompt}],
                                  {"temperature": 0, "num_predict": 256}, self.keep_alive, response_format="json")
        return answer.text
