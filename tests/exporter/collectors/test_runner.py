"""ollama_model_runner_rss_bytes: the real RSS of the process Ollama runs a model in, mapped to the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from singularity_ops.config import load_config
from singularity_ops.exporter.app import Exporter
from singularity_ops.runners import find_runner_rss
from tests.helpers import series
from tests.standins.fake_runner import LEGACY_BINARY, fake_runner

MiB = 2**20


@pytest.fixture
def exporter(ollama, clean_env):
    built = Exporter.build(load_config(environ={"OLLAMA_HOST": ollama.host}), with_database=False)
    yield built
    built.close()


@pytest.mark.parametrize("binary", ["/usr/local/bin/ollama", LEGACY_BINARY])
def test_runner_rss_is_reported_under_its_model(exporter: Exporter, ollama, binary: str) -> None:
    ollama.load("llama3.2:3b")
    with fake_runner(ollama.blob_path("llama3.2:3b"), rss_bytes=96 * MiB, binary=binary):
        text = exporter.render()[0].decode()
    rss = series(text, "ollama_model_runner_rss_bytes")
    assert list(rss) == ['{model="llama3.2:3b"}']
    assert 96 * MiB <= rss['{model="llama3.2:3b"}'] < 400 * MiB


def test_no_runner_visible_means_no_series_not_zero(exporter: Exporter, ollama) -> None:
    ollama.load("qwen2.5-coder:1.5b")  # no other test starts a runner for this one's blob
    text = exporter.render()[0].decode()
    assert 'ollama_model_runner_rss_bytes{model="qwen2.5-coder:1.5b"}' not in text
    assert series(text, "ollama_model_loaded_bytes")


def test_a_runner_for_a_blob_ollama_does_not_list_is_not_reported(exporter: Exporter, ollama) -> None:
    with fake_runner("/root/.ollama/models/blobs/sha256-" + "0" * 64, rss_bytes=8 * MiB):
        assert find_runner_rss()  # the process is visible...
        text = exporter.render()[0].decode()
    assert "ollama_model_runner_rss_bytes{" not in text  # ...but maps to no model


def test_check_memory_shows_the_runner_rss(ollama) -> None:
    ollama.load("llama3.2:3b")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SINGULARITY_", "OLLAMA_"))}
    with fake_runner(ollama.blob_path("llama3.2:3b"), rss_bytes=80 * MiB):
        result = subprocess.run([sys.executable, "-m", "singularity_ops.cli", "check-memory", "--json",
                                 "--model", "llama3.2:3b"], env={**env, "OLLAMA_HOST": ollama.host},
                                capture_output=True, text=True, timeout=60)
    (model,) = json.loads(result.stdout)["models"]
    assert model["runner_rss_bytes"] >= 80 * MiB
