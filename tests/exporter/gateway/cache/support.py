"""A gateway with the semantic cache on, in front of the Ollama stand-in, on a database with pgvector."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from typing import Any

import httpx

from singularity_ops.config import load_config
from singularity_ops.exporter.app import Exporter
from tests.conftest import free_port
from tests.exporter.gateway.conftest import GatewayUnderTest
from tests.helpers import wait_for

HEADER = "X-Singularity-Cache"
MODEL = "llama3.2:3b"


def bag_of_words(text: str, length: int) -> list[float]:
    """A real if crude embedding for the stand-in: texts that share words point the same way."""
    vector = [0.0] * length
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % length] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def build(ollama, database_url: str, *, start: bool = True, prepare: Callable[[Exporter], None] | None = None,
          **flags: Any) -> GatewayUnderTest:
    """The gateway with ``cache.*`` flags; its cache's upkeep every 0.1 s (digests, counts, warms), not 5 s."""
    config = load_config(flags={"gateway.listen": f"127.0.0.1:{free_port()}",
                                "exporter.metrics_listen": f"127.0.0.1:{free_port()}", "database.url": database_url,
                                "cache.enabled": True, "cache.embedding_model": "nomic-embed-text", **flags},
                         environ={"OLLAMA_HOST": ollama.host})
    exporter = Exporter.build(config, with_database=False, with_gateway=True)
    assert exporter.gateway is not None and exporter.gateway.cache_service is not None
    exporter.gateway.cache_service.upkeep_seconds = 0.1
    if prepare is not None:
        prepare(exporter)
    running = GatewayUnderTest(exporter)
    if start:
        running.__enter__()
        wait_for(lambda: _answers(running.gateway_url))
        cache = exporter.gateway.cache_service
        wait_for(lambda: cache.digest_of(MODEL) is not None)
    return running


def _answers(url: str) -> bool:
    try:
        httpx.get(url + "/", timeout=0.5)
    except httpx.HTTPError:
        return False
    return True

