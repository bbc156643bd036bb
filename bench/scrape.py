"""Cost of a scrape: render time against client_python's bare generate_latest, and RSS after 1,000 scrapes.

Run: ``.venv/bin/python bench/scrape.py`` (from the repository root). Prints absolute figures and ratios,
all measured in this one run against the same Ollama stand-in (50 installed, 10 loaded models).
Goals (issue 3): render ≤ 2x the baseline and ≤ 10 ms; exporter RSS after 1,000 scrapes ≤ 60 MB.

RSS is taken over three exporter runs (median) and set against its floor: a bare interpreter that imports only the
libraries the exporter is built on (aiohttp, prometheus_client, psycopg, pgserver, psutil), measured in the same run.
What lies above the floor is ours. History (issue 16, same machine, single runs unless said): 62.5 MB before;
60.7 MB once a host without the NVIDIA driver no longer imports pynvml (2 MB: hardware._load_nvml looks for the
library first); 60.3 MB once the semantic cache and routing are imported only when configured (cache.enabled,
gateway.routes); the median of three runs then: 60.1 MB against a 52.3 MB floor (single runs 60.1-60.4);
58.0 MB once aiohttp is imported without the two CA stores it builds at import and the exporter never uses
(singularity_ops/tls.py: 2 MB; printed below against the exporter that keeps them, in the same run).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singularity_ops.config import load_config
from singularity_ops.exporter.app import Exporter
from tests.conftest import free_port
from tests.standins.models import synthetic_models
from tests.standins.ollama import OllamaStandIn

INSTALLED, LOADED, ROUNDS, SCRAPES = 50, 10, 300, 1000


def timed(function, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples


def baseline_registry(text: str) -> CollectorRegistry:
    """The same families, label sets and values as plain client_python gauges."""
    registry = CollectorRegistry()
    for family in text_string_to_metric_families(text):
        names = sorted({k for s in family.samples for k in s.labels})
        gauge = Gauge(family.name.replace(":", "_") + "_copy", family.documentation or "copy", names,
                      registry=registry)
        for sample in family.samples:
            child = gauge.labels(**{n: sample.labels.get(n, "") for n in names}) if names else gauge
            child.set(sample.value)
    return registry


def render_figures(standin: OllamaStandIn) -> None:
    config = load_config(environ={"OLLAMA_HOST": standin.host, "SINGULARITY_OLLAMA_MEMORY_BYTES": str(64 * 2**30)})
    exporter = Exporter.build(config, with_database=False)
    try:
        text = exporter.render()[0].decode()
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        baseline = baseline_registry(text)
        for _ in range(20):  # warm-up
            exporter.render()
            generate_latest(baseline)
        exporter.state.cache_seconds = 3600  # Ollama state shared, as for scrapes within one second
        cached, bare = [], []
        for _ in range(ROUNDS):  # interleaved, so both see the same machine
            cached += timed(exporter.render, 1)
            bare += timed(lambda: generate_latest(baseline), 1)
        exporter.state.cache_seconds = 0  # every render reads Ollama afresh (the usual 15 s scrape)
        fresh = timed(exporter.render, ROUNDS // 3)
    finally:
        exporter.close()
    p50 = statistics.median
    print(f"series in one scrape: {series} ({INSTALLED} installed, {LOADED} loaded models)")
    print(f"generate_latest, same series (baseline): p50 {p50(bare) * 1e3:.2f} ms")
    print(f"exporter render, Ollama state shared:    p50 {p50(cached) * 1e3:.2f} ms  "
          f"ratio {p50(cached) / p50(bare):.2f}x  (goal <= 2x, <= 10 ms)")
    print(f"exporter render, fresh Ollama read:      p50 {p50(fresh) * 1e3:.2f} ms  "
          f"ratio {p50(fresh) / p50(bare):.2f}x  (includes 3 HTTP calls to the stand-in)")


FLOOR = ("import aiohttp.web, prometheus_client, psycopg, psutil, warnings; warnings.simplefilter('ignore'); "
         "import pgserver; print(psutil.Process().memory_info().rss)")


def floor_rss() -> int:
    """RSS of an interpreter holding just the exporter's libraries."""
    result = subprocess.run([sys.executable, "-c", FLOOR], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1])


# The exporter as it ran before singularity_ops/tls.py: aiohttp imported first, with its two CA stores.
PLAIN_AIOHTTP = ("import aiohttp, runpy, sys; sys.argv = ['singularity-ops', *sys.argv[1:]]; "
                 "runpy.run_module('singularity_ops.cli', run_name='__main__')")


def exporter_rss(standin: OllamaStandIn, plain_aiohttp: bool = False) -> tuple[int, int, float]:
    port = free_port()
    home = tempfile.mkdtemp(prefix="bench-home-")
    env = {**os.environ, "OLLAMA_HOST": standin.host, "SINGULARITY_HOME": home,
           "SINGULARITY_LOG_LEVEL": "warning"}
    start = ["-c", PLAIN_AIOHTTP] if plain_aiohttp else ["-m", "singularity_ops.cli"]
    process = subprocess.Popen([sys.executable, *start, "exporter", "--metrics-listen",
                                f"127.0.0.1:{port}", "--gateway-listen", f"127.0.0.1:{free_port()}"], env=env,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        for _ in range(300):
            try:
                httpx.get(url, timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(timeout=10) as client:
            client.get(url)
            after_one = psutil.Process(process.pid).memory_info().rss
            started = time.perf_counter()
            for _ in range(SCRAPES):
                assert client.get(url).status_code == 200
            elapsed = time.perf_counter() - started
        after_all = psutil.Process(process.pid).memory_info().rss
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        shutil.rmtree(home, ignore_errors=True)  # its embedded database: ~47 MB a run
    return after_one, after_all, SCRAPES / elapsed


def rss_figures(standin: OllamaStandIn, runs: int = 3) -> None:
    measured, before = [], []
    for _ in range(runs):  # interleaved, so both see the same machine
        measured.append(exporter_rss(standin))
        before.append(exporter_rss(standin, plain_aiohttp=True))
    floor = statistics.median(floor_rss() for _ in range(runs))
    after_one = statistics.median(m[0] for m in measured)
    after_all = statistics.median(m[1] for m in measured)
    with_stores = statistics.median(m[1] for m in before)
    print(f"libraries alone (floor):        {floor / 1e6:.1f} MB  (aiohttp's CA stores included)")
    print(f"exporter with aiohttp's CA stores (before singularity_ops/tls.py), after {SCRAPES} scrapes: "
          f"{with_stores / 1e6:.1f} MB")
    print(f"exporter RSS after 1 scrape:    {after_one / 1e6:.1f} MB")
    print(f"exporter RSS after {SCRAPES} scrapes: {after_all / 1e6:.1f} MB  (median of {runs} runs; "
          f"{after_all / after_one:.2f}x the first scrape, {after_all / floor:.2f}x the floor, "
          f"{(after_all - floor) / 1e6:.1f} MB ours; {after_all / with_stores:.3f}x the exporter with aiohttp's "
          f"CA stores; goal <= 60 MB); "
          f"{statistics.median(m[2] for m in measured):.0f} scrapes/s over HTTP")


def main() -> None:
    models = synthetic_models(INSTALLED)
    with OllamaStandIn(models=models) as standin:
        for model in models[:LOADED]:
            standin.load(model.name)
        render_figures(standin)
        rss_figures(standin)


if __name__ == "__main__":
    main()
