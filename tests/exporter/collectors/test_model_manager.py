"""The model manager's metrics, read from its records at scrape time by whichever process serves /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from singularity_ops.controllers.model_manager.controller import ModelManager
from singularity_ops.exporter.collectors.model_manager import ModelManagerCollector
from singularity_ops.exporter.collectors.scrape import ScrapeCollector
from singularity_ops.migrate import migrate
from tests.controllers.model_manager.test_auto_model_manager import MORNING, NIGHT, VPS, Clock, at, manager_config
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    models = [REAL_MODELS[n] for n in ("qwen2.5-coder:1.5b", "tinyllama:1.1b", "phi4:14b")]
    with OllamaStandIn(models=models, memory_bytes=VPS) as server:
        yield server


def scrape(collector: object) -> list[str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return [line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")]


def test_decisions_profile_and_desired_models_are_exposed(tmp_path: Path, standin: OllamaStandIn,
                                                          database_url: str) -> None:
    morning = {**MORNING, "models": ["qwen2.5-coder:1.5b", "phi4:14b"]}
    config = manager_config(tmp_path, standin, database_url, VPS, profiles=[morning, NIGHT])
    clock = Clock(at(8))
    manager = ModelManager(config, clock=clock)
    collector = ModelManagerCollector(lambda: psycopg.connect(database_url), ["morning", "night"])
    try:
        manager.tick()
        lines = scrape(collector)
        counters = [line for line in lines if line.startswith("singularity_model_manager_actions_total")]
        assert [line for line in counters if not line.endswith(" 0.0")] == [
            'singularity_model_manager_actions_total{action="profile",result="ok"} 1.0',
            'singularity_model_manager_actions_total{action="load",result="ok"} 1.0',
            'singularity_model_manager_actions_total{action="skip",result="memory"} 1.0',
        ]
        assert len(counters) == 13, "every action and result is there from 0"
        assert lines[len(counters):] == [
            'singularity_model_desired{model="phi4:14b"} 0.0',
            'singularity_model_desired{model="qwen2.5-coder:1.5b"} 1.0',
            'singularity_model_desired{model="tinyllama:1.1b"} 0.0',
            'singularity_model_manager_profile{profile="morning"} 1.0',
            'singularity_model_manager_profile{profile="night"} 0.0',
            'singularity_model_manager_profile{profile="none"} 0.0',
            "singularity_model_manager_last_plan_timestamp_seconds 1.7488512e+09",  # 2025-06-02T08:00Z
        ]
        clock.now = at(23)
        manager.tick()
        lines = scrape(collector)
        assert 'singularity_model_manager_actions_total{action="unload",result="ok"} 1.0' in lines
        assert 'singularity_model_manager_profile{profile="night"} 1.0' in lines
        assert 'singularity_model_desired{model="tinyllama:1.1b"} 1.0' in lines
        assert 'singularity_model_desired{model="qwen2.5-coder:1.5b"} 0.0' in lines
    finally:
        manager.close()
        collector.close()


def test_before_the_first_plan_only_the_zero_counters_are_there(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        migrate(conn)
    collector = ModelManagerCollector(lambda: psycopg.connect(database_url))
    try:
        lines = scrape(collector)
        assert 'singularity_model_manager_actions_total{action="skip",result="memory"} 0.0' in lines
        assert all(line.startswith("singularity_model_manager_actions_total") and line.endswith(" 0.0")
                   for line in lines)
    finally:
        collector.close()


def test_a_database_outage_is_a_failed_collector_not_a_failed_scrape() -> None:
    def unreachable() -> psycopg.Connection:
        return psycopg.connect("host=127.0.0.1 port=1 connect_timeout=1")

    scraper = ScrapeCollector([ModelManagerCollector(unreachable)], timeout_seconds=3)
    try:
        assert 'singularity_collector_success{collector="model_manager"} 0.0' in scrape(scraper)
    finally:
        scraper.close()
