"""How fast an open circuit breaker answers, against a request that reaches Ollama, in one run.

Run: ``.venv/bin/python bench/breaker.py`` from the repository root. An in-process gateway in front of the
Ollama stand-in (answering at once, so the upstream costs nearly nothing): one model's breaker is opened by
failures, and requests for it (refused with 503 by the gateway itself) are interleaved with requests for a
healthy model (proxied). Prints p50/p99 of both and the ratio; the refusal should never be slower than a proxied
request (issue 4: "503 fast").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singularity_ops.config import load_config
from singularity_ops.exporter.app import Exporter
from tests.conftest import DEFAULT_MODELS, free_port
from tests.helpers import Running
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

BROKEN, HEALTHY, ROUNDS = "llama3.2:3b", "qwen2.5-coder:1.5b", 500


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    with OllamaStandIn(models=[REAL_MODELS[name] for name in DEFAULT_MODELS]) as ollama:
        config = load_config(flags={"gateway.listen": f"127.0.0.1:{free_port()}",
                                    "exporter.metrics_listen": f"127.0.0.1:{free_port()}",
                                    "gateway.breaker.minimum_calls": 3, "gateway.breaker.open_seconds": 3600},
                             environ={"OLLAMA_HOST": ollama.host})
        with Running(Exporter.build(config, with_database=False, with_gateway=True)), httpx.Client(
                base_url=f"http://{config.gateway.listen}", timeout=30) as client:
            def generate(model: str) -> tuple[int, float]:
                started = time.perf_counter()
                status = client.post("/api/generate", json={"model": model, "prompt": "x", "stream": False}
                                     ).status_code
                return status, time.perf_counter() - started

            for _ in range(50):  # warm-up
                generate(HEALTHY)
            ollama.fault = "error500"  # until the breaker of BROKEN opens; HEALTHY's stays closed (it is not asked)
            while generate(BROKEN)[0] != 503:
                pass
            ollama.fault = None
            refused, proxied = [], []
            for _ in range(ROUNDS):
                status, seconds = generate(BROKEN)
                assert status == 503
                refused.append(seconds)
                status, seconds = generate(HEALTHY)
                assert status == 200
                proxied.append(seconds)
    ms = 1e3
    print(f"gateway, {ROUNDS} interleaved pairs: refused by an open breaker vs proxied to the stand-in")
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        r, p = quantile(refused, q), quantile(proxied, q)
        print(f"  {name}: refused {r * ms:.3f} ms, proxied {p * ms:.3f} ms, ratio {r / p:.2f}x")


if __name__ == "__main__":
    main()
