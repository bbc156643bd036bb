"""What the gateway adds: latency (p50, p99), time to first token, and streaming throughput, vs direct.

Run: ``.venv/bin/python bench/gateway.py`` from the repository root. The Ollama stand-in and the gateway
(``singularity-ops exporter``, with its embedded PostgreSQL history) run as their own processes; this
process sends direct and through-the-gateway requests interleaved, after a warm-up, and prints absolute
figures and the differences. Goals (issue 4): added latency ≤ 0.5 ms p50 and ≤ 3 ms p99; streaming
throughput with 32 concurrent clients ≥ 0.9x direct.

The same requests also go, interleaved, through bench/bare_proxy.py: aiohttp forwarding and nothing else. What a
proxy hop costs depends on the machine (the bare one added 0.42 ms p50 when issue 4 was measured, 1.3-1.5 ms on
the same kind of box later); the gateway's added latency over the bare proxy's is the figure that carries over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import free_port  # noqa: E402

MODEL = "llama3.2:3b"
ROUNDS, STREAM_ROUNDS, CLIENTS, STREAMS_PER_CLIENT, TOKENS = 1000, 200, 32, 8, 64


def start(command: list[str], env: dict[str, str], ready_url: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            import urllib.request

            urllib.request.urlopen(ready_url, timeout=1).read()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{command[0]} did not start")


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed_generate(session: aiohttp.ClientSession, base: str) -> float:
    started = time.perf_counter()
    async with session.post(base + "/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False,
                                                          "options": {"num_predict": 1}}) as reply:
        await reply.read()
    return time.perf_counter() - started


async def first_token(session: aiohttp.ClientSession, base: str) -> float:
    started = time.perf_counter()
    async with session.post(base + "/api/generate", json={"model": MODEL, "prompt": "hi",
                                                          "options": {"num_predict": 8}}) as reply:
        first = None
        async for _ in reply.content.iter_any():
            first = first or time.perf_counter() - started
    return first or 0.0


async def stream_tokens(session: aiohttp.ClientSession, base: str) -> int:
    lines = 0
    async with session.post(base + "/api/generate", json={"model": MODEL, "prompt": "hi",
                                                          "options": {"num_predict": TOKENS}}) as reply:
        async for _ in reply.content:
            lines += 1
    return lines


async def throughput(base: str) -> float:
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client() -> int:
            return sum([await stream_tokens(session, base) for _ in range(STREAMS_PER_CLIENT)])

        started = time.perf_counter()
        lines = sum(await asyncio.gather(*(client() for _ in range(CLIENTS))))
        return lines / (time.perf_counter() - started)


async def latency(direct: str, gateway: str, bare: str) -> None:
    targets = {"direct": direct, "bare": bare, "gateway": gateway}
    async with aiohttp.ClientSession() as session:
        for _ in range(200):  # warm-up: connections, caches, the gateway's model list
            for url in targets.values():
                await timed_generate(session, url)
        times: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(ROUNDS):
            for name, url in targets.items():
                times[name].append(await timed_generate(session, url))
        ttft: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(STREAM_ROUNDS):
            for name, url in targets.items():
                ttft[name].append(await first_token(session, url))
    ms = 1e3
    print(f"non-streaming /api/generate, {ROUNDS} interleaved triples (direct, bare aiohttp proxy, gateway):")
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        d, b, g = (quantile(times[k], q) for k in targets)
        print(f"  {name}: direct {d * ms:.3f} ms, gateway {g * ms:.3f} ms, added {(g - d) * ms:.3f} ms "
              f"(goal <= {0.5 if name == 'p50' else 3} ms); a bare aiohttp proxy adds {(b - d) * ms:.3f} ms: "
              f"the gateway's hop is {(g - d) / max(b - d, 1e-9):.2f}x the bare one")
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        d, b, g = (quantile(ttft[k], q) for k in targets)
        print(f"streaming time to first chunk {name}, {STREAM_ROUNDS} triples: direct {d * ms:.3f} ms, "
              f"gateway {g * ms:.3f} ms, added {(g - d) * ms:.3f} ms; bare proxy added {(b - d) * ms:.3f} ms")


async def streaming(direct: str, gateway: str) -> None:
    rates: dict[str, list[float]] = {"direct": [], "gateway": []}
    await throughput(direct)  # warm-up
    await throughput(gateway)
    for _ in range(2):
        rates["direct"].append(await throughput(direct))
        rates["gateway"].append(await throughput(gateway))
    d, g = statistics.mean(rates["direct"]), statistics.mean(rates["gateway"])
    print(f"streaming throughput, {CLIENTS} concurrent clients x {STREAMS_PER_CLIENT} streams of {TOKENS} tokens: "
          f"direct {d:.0f} chunks/s, gateway {g:.0f} chunks/s, ratio {g / d:.2f}x (goal >= 0.9x)")


@contextlib.contextmanager
def processes(token_delay: float) -> Iterator[tuple[str, str, str]]:
    """The stand-in, the gateway in front of it and the bare proxy beside it, each its own process."""
    ollama_port, gateway_port, metrics_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ollama = start([sys.executable, "-m", "tests.standins.serve", "--port", str(ollama_port), "--token-delay",
                    str(token_delay), "--load", MODEL], env, f"http://127.0.0.1:{ollama_port}/api/version")
    home = tempfile.mkdtemp(prefix="bench-gateway-")  # the gateway's embedded database, removed below
    gateway_env = {**env, "OLLAMA_HOST": f"127.0.0.1:{ollama_port}", "SINGULARITY_HOME": home,
                   "SINGULARITY_LOG_LEVEL": "warning"}
    gateway = start([sys.executable, "-m", "singularity_ops.cli", "exporter", "--gateway-listen",
                     f"127.0.0.1:{gateway_port}", "--metrics-listen", f"127.0.0.1:{metrics_port}"], gateway_env,
                    f"http://127.0.0.1:{gateway_port}/api/version")
    bare_port = free_port()
    bare = start([sys.executable, str(REPO / "bench" / "bare_proxy.py"), str(bare_port),
                  f"http://127.0.0.1:{ollama_port}"], env, f"http://127.0.0.1:{bare_port}/api/version")
    try:
        yield f"http://127.0.0.1:{ollama_port}", f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{bare_port}"
    finally:
        for process in (bare, gateway, ollama):
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    print("gateway: singularity-ops exporter with its history in an embedded PostgreSQL; stand-in Ollama apart")
    with processes(token_delay=0.0) as (direct, gateway, bare):  # the proxy's own cost, nothing else
        asyncio.run(latency(direct, gateway, bare))
    with processes(token_delay=0.005) as (direct, gateway, _):  # 200 tokens/s per stream, 32 streams at once
        asyncio.run(streaming(direct, gateway))


if __name__ == "__main__":
    main()
