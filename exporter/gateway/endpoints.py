"""What the gateway knows about each Ollama path: how to meter it, and under which bounded label."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Dialect(StrEnum):
    OLLAMA = "ollama"  # NDJSON streams, counters in the final chunk (durations in ns)
    OPENAI = "openai"  # SSE streams, `usage` in the last chunk when asked for


@dataclass(frozen=True)
class Endpoint:
    path: str
    dialect: Dialect
    operation: str | None  # gen_ai.operation.name; None for paths that are proxied but not inference
    chat: bool = False  # carries a `messages` history (context compression applies)


INFERENCE = {
    "/api/generate": Endpoint("/api/generate", Dialect.OLLAMA, "text_completion"),
    "/api/chat": Endpoint("/api/chat", Dialect.OLLAMA, "chat", chat=True),
    "/api/embed": Endpoint("/api/embed", Dialect.OLLAMA, "embeddings"),
    "/api/embeddings": Endpoint("/api/embeddings", Dialect.OLLAMA, "embeddings"),
    "/v1/chat/completions": Endpoint("/v1/chat/completions", Dialect.OPENAI, "chat", chat=True),
    "/v1/completions": Endpoint("/v1/completions", Dialect.OPENAI, "text_completion"),
    "/v1/embeddings": Endpoint("/v1/embeddings", Dialect.OPENAI, "embeddings"),
}

# Proxied as they are; named in the endpoint label. Anything else is proxied too, labelled "other".
KNOWN_PATHS = {
    *INFERENCE,
    "/", "/api/version", "/api/tags", "/api/ps", "/api/show", "/api/pull", "/api/push", "/api/create",
    "/api/copy", "/api/delete", "/v1/models",
}


def endpoint_label(path: str) -> str:
    if path in KNOWN_PATHS:
        return path
    if path.startswith("/api/blobs/"):
        return "/api/blobs"
    if path.startswith("/v1/models/"):
        return "/v1/models"
    return "other"
