"""What the A/B substitution adds to the gateway hop (issue 14: goal ≤ 0.05 ms p50).

Run: ``.venv/bin/python bench/prompt_ab.py [--rounds N]`` from the repository root. A real gateway (the exporter
with its history on a pgserver PostgreSQL in a temporary folder) runs in a thread in front of the Ollama stand-in;
this process sends, interleaved, after a warm-up, through one kept-alive connection:

* ``plain``: a chat whose system prompt is not enabled (the layer only notes its hash in the registry): the baseline;
* ``ab``: the same size of chat whose prompt is enabled with an experiment at share 1.0, so every request gets the
  candidate substituted, the body re-serialised, its dialogue captured and its outcome tracked;
* ``none``: a chat without a system prompt (what the registry itself costs is ``plain`` - ``none``, body size aside);
* ``plain again``: ``plain`` once more, so that ``plain again`` - ``plain`` shows the noise floor of this run;
* ``direct``: the ``plain`` chat straight to the stand-in, for scale.

The hop's figure is ``ab`` - ``plain``: the difference of the p50s, and the median of the per-round differences
(each round's requests are neighbours in time, so slow drifts of a shared machine cancel). Because a loopback round
trip through two aiohttp servers varies by more than the effect, the layer's own work is also timed in-process,
call by call, on the same payloads (``apply``, which returns the body to send, + ``finish``, against ``apply`` on
the plain prompt). The order of the kinds is shuffled every round: a fixed order alone moved a p50 by 0.1 ms here.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psycopg

from singularity_ops.config import load_config
from singularity_ops.controllers.prompt_optimizer import experiments, store
from singularity_ops.exporter.app import Exporter
from singularity_ops.exporter.gateway.endpoints import INFERENCE
from singularity_ops.prompt_ab import prompt_id
from tests.conftest import free_port
from tests.helpers import Running, wait_for
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

MODEL = "llama3.2:3b"
PLAIN = "You are the billing assistant of Example Ltd. " + "Answer briefly and politely, citing the invoice. " * 6
MANAGED = "You are the support assistant of Example Ltd. " + "Answer briefly and politely, citing the order. " * 6
CANDIDATE = "You are the support assistant of Example Ltd. " + "Answer in one friendly sentence with the order. " * 6


def body(system: str | None, index: int = 0) -> dict:
    """A new question each round: the same one again from the same client within a minute would be a regenerate."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": f"Where is my parcel {index}? It was due on Monday."}]
    return {"model": MODEL, "messages": messages, "stream": False, "options": {"num_predict": 4}}


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def hop(gateway_url: str, direct_url: str, rounds: int) -> dict[str, list[float]]:
    kinds = {"plain": (gateway_url, PLAIN), "ab": (gateway_url, MANAGED), "none": (gateway_url, None),
             "plain again": (gateway_url, PLAIN), "direct": (direct_url, PLAIN)}
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    order = list(kinds)
    shuffle = random.Random(14).shuffle
    with httpx.Client(timeout=30) as client:
        for round_ in range(rounds + 200):  # the first 200 rounds warm up
            shuffle(order)
            for kind in order:
                url, system = kinds[kind]
                payload = body(system, round_)
                started = time.perf_counter()
                reply = client.post(url + "/api/chat", json=payload)
                elapsed = time.perf_counter() - started
                assert reply.status_code == 200, reply.text
                if kind == "ab":
                    assert reply.headers["X-Singularity-Variant"] == "candidate"
                if round_ >= 200:
                    seconds[kind].append(elapsed)
    return seconds


def in_process(layer, rounds: int) -> dict[str, list[float]]:
    chat = INFERENCE["/api/chat"]
    at = datetime.now(UTC)
    seconds: dict[str, list[float]] = {"plain": [], "ab": []}
    for index in range(rounds):
        for kind, system in (("plain", PLAIN), ("ab", MANAGED)):
            payload, request_id = body(system, index), str(uuid.uuid4())  # the proxy makes an id for every request
            raw = json.dumps(payload).encode()  # the body as it came in
            started = time.perf_counter()
            tracked, _ = layer.apply(chat, payload, raw, "10.0.0.1", MODEL, at, request_id)
            if tracked is not None:
                layer.finish(tracked, 200, "Your parcel left the depot today.", None, 0.1)
            seconds[kind].append(time.perf_counter() - started)
        layer._batch.dialogues.clear()  # the write queue does not grow here (the sync is not timed)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    with tempfile.TemporaryDirectory() as home, OllamaStandIn(models=[REAL_MODELS[MODEL]]) as ollama:
        server = pgserver.get_server(Path(home) / "pg", cleanup_mode="delete")
        try:
            url = server.get_uri()
            config = load_config(flags={"gateway.listen": f"127.0.0.1:{free_port()}",
                                        "exporter.metrics_listen": f"127.0.0.1:{free_port()}",
                                        "guard.enabled": False, "prompt_optimizer.sync_seconds": 0.2},
                                 environ={"OLLAMA_HOST": ollama.host, "SINGULARITY_DATABASE_URL": url,
                                          "SINGULARITY_HOME": home})
            exporter = Exporter.build(config, with_database=False, with_gateway=True, with_history=True)
            with Running(exporter):
                gateway = f"http://{config.gateway.listen}"
                layer = exporter.gateway.gateway.prompts
                wait_for(lambda: httpx.post(gateway + "/api/chat", json=body(MANAGED), timeout=5).status_code == 200)
                pid = prompt_id(MANAGED)

                def recorded() -> bool:  # the gateway migrates the database on its first use
                    with psycopg.connect(url) as conn:
                        try:
                            return bool(conn.execute("SELECT 1 FROM prompts WHERE id = %s", (pid,)).fetchone())
                        except psycopg.errors.UndefinedTable:
                            return False

                wait_for(recorded, timeout=30, what="the prompt recorded")
                with psycopg.connect(url, autocommit=True) as conn:
                    now = datetime.now(UTC)
                    store.enable(conn, pid, "support", "bench", now)
                    candidate = store.add_candidate(conn, pid, None, CANDIDATE, None, 9.0, 5.0, [], "bench", now)
                    experiments.start(conn, pid, candidate, 1.0, "bench", now)
                wait_for(lambda: pid in layer.managed and layer.managed[pid].experiment is not None, timeout=30,
                         what="the experiment reaching the gateway")
                seconds = hop(gateway, ollama.url, args.rounds)
                inner = in_process(layer, args.rounds * 5)
        finally:
            server.cleanup()
    print(f"gateway hop, {args.rounds} interleaved rounds after 200 warm-up (ms):")
    print(f"{'kind':<12} {'p50':>8} {'p99':>8} {'mean':>8}")
    for kind, samples in seconds.items():
        print(f"{kind:<12} {quantile(samples, 0.5) * 1e3:8.3f} {quantile(samples, 0.99) * 1e3:8.3f} "
              f"{statistics.fmean(samples) * 1e3:8.3f}")

    def versus(kind: str, base: str) -> str:
        p50 = (quantile(seconds[kind], 0.5) - quantile(seconds[base], 0.5)) * 1e3
        paired = statistics.median(a - b for a, b in zip(seconds[kind], seconds[base], strict=True)) * 1e3
        return f"{p50:+.3f} ms p50, {paired:+.3f} ms paired median"

    print(f"A/B substitution on the hop: ab - plain = {versus('ab', 'plain')} (goal <= 0.05)")
    print(f"noise floor: plain again - plain = {versus('plain again', 'plain')}")
    print(f"registry: plain - none = {versus('plain', 'none')}; gateway - direct = {versus('plain', 'direct')}")
    plain, ab = quantile(inner["plain"], 0.5) * 1e6, quantile(inner["ab"], 0.5) * 1e6
    print(f"in process, {len(inner['ab'])} calls each (µs p50 / p99): plain {plain:.1f} / "
          f"{quantile(inner['plain'], 0.99) * 1e6:.1f}, ab {ab:.1f} / {quantile(inner['ab'], 0.99) * 1e6:.1f}; "
          f"added {ab - plain:+.1f} µs = {(ab - plain) / 1e3:+.4f} ms p50")


if __name__ == "__main__":
    main()
