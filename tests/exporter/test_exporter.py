"""The exporter end to end: a real HTTP server scraped like Prometheus does, against the Ollama stand-in."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from singularity_ops.config import load_config
from singularity_ops.exporter.app import Exporter
from tests.conftest import free_port
from tests.helpers import Running, series

GiB = 2**30


@pytest.fixture
def exporter(ollama, clean_env) -> Iterator[Running]:
    config = load_config(environ={
        "OLLAMA_HOST": ollama.host,
        "SINGULARITY_OLLAMA_MEMORY_BYTES": str(int(1.9 * GiB)),
        "SINGULARITY_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
    })
    built = Exporter.build(config, with_database=False)
    with Running(built) as running:
        yield running


def test_installed_and_loaded_models_are_exposed(exporter: Running, ollama) -> None:
    ollama.load("llama3.2:3b", size=3_000_000_000, size_vram=1_000_000_000, expires_in=timedelta(minutes=5))
    text = exporter.scrape()
    assert series(text, "ollama_up") == {"": 1.0}
    assert list(series(text, "ollama_info")) == [f'{{version="{ollama.version}"}}']
    assert set(series(text, "ollama_model_size_bytes")) == {
        '{model="llama3.2:3b"}', '{model="qwen2.5-coder:1.5b"}', '{model="phi4:14b"}'}
    assert series(text, "ollama_model_loaded_bytes") == {'{model="llama3.2:3b"}': 3e9}
    assert series(text, "ollama_model_vram_bytes") == {'{model="llama3.2:3b"}': 1e9}
    assert 280 < series(text, "ollama_model_expires_in_seconds")['{model="llama3.2:3b"}'] <= 300
    assert series(text, "ollama_models_loaded") == {"": 1.0}


def test_phi4_does_not_fit_on_1_9_gib_and_a_small_model_does(exporter: Running) -> None:
    text = exporter.scrape()
    fits = series(text, "ollama_model_fits")
    assert fits['{model="phi4:14b"}'] == 0.0
    assert fits['{model="qwen2.5-coder:1.5b"}'] == 1.0
    assert series(text, "ollama_model_required_bytes")['{model="phi4:14b"}'] > 9e9


def test_ollama_down_is_a_metric_not_a_failed_scrape(exporter: Running, ollama) -> None:
    ollama.stop()
    text = exporter.scrape()
    assert series(text, "ollama_up") == {"": 0.0}
    assert not series(text, "ollama_model_size_bytes")
    assert series(text, "singularity_collector_success")['{collector="ollama"}'] == 1.0
    assert "llm_host_memory_total_bytes" in text


@pytest.mark.parametrize("fault", ["garbage", "error500"])
def test_garbage_from_ollama_is_ollama_up_0(exporter: Running, ollama, fault: str) -> None:
    ollama.fault = fault
    assert series(exporter.scrape(), "ollama_up") == {"": 0.0}


def test_a_hanging_ollama_costs_one_timeout_not_a_failed_scrape(ollama, clean_env) -> None:
    config = load_config(flags={"ollama.timeout_seconds": 0.5, "exporter.collector_timeout_seconds": 2},
                         environ={"OLLAMA_HOST": ollama.host,
                                  "SINGULARITY_METRICS_LISTEN": f"127.0.0.1:{free_port()}"})
    ollama.hang_seconds = 5
    ollama.fault = "hang"
    with Running(Exporter.build(config, with_database=False)) as running:
        text = running.scrape()
    assert series(text, "ollama_up") == {"": 0.0}
    assert "llm_host_memory_available_bytes" in text


def test_concurrent_scrapes_share_one_read_of_ollama(exporter: Running, ollama) -> None:
    exporter.scrape()
    before = sum(ollama.calls.values())

    def scrape() -> None:
        exporter.scrape()

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # At most one fresh read (version + tags + ps) may have been needed by the 8 scrapes.
    assert sum(ollama.calls.values()) - before <= 3


def test_show_is_asked_once_per_model_not_per_scrape(exporter: Running, ollama) -> None:
    exporter.exporter.state.cache_seconds = 0
    for _ in range(3):
        exporter.scrape()
    assert ollama.calls["/api/show"] == 3  # three installed models, each shown once


def test_scrape_passes_promtool_check_metrics(exporter: Running, ollama) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed: apt-get install prometheus (scripts/test does it)"
    ollama.load("llama3.2:3b")
    text = exporter.scrape()
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_openmetrics_is_served_when_asked_for(exporter: Running) -> None:
    response = httpx.get(exporter.url + "/metrics",
                         headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_healthz_answers(exporter: Running) -> None:
    assert httpx.get(exporter.url + "/healthz").json() == {"status": "ok"}


def test_configured_alert_thresholds_are_published(ollama, clean_env, tmp_path) -> None:
    config_file = tmp_path / "c.yaml"
    config_file.write_text("alerts:\n  thresholds:\n    HostMemoryHigh: 0.85\n    TemperatureHigh: 80\n")
    config = load_config(config_file=config_file, environ={
        "OLLAMA_HOST": ollama.host, "SINGULARITY_METRICS_LISTEN": f"127.0.0.1:{free_port()}"})
    with Running(Exporter.build(config, with_database=False)) as running:
        assert series(running.scrape(), "singularity_alert_threshold") == {
            '{alert="HostMemoryHigh"}': 0.85, '{alert="TemperatureHigh"}': 80.0}
