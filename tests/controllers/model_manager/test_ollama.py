"""The calls the model manager makes to Ollama (load, unload), and the stand-in's memory budget that answers them
the way Ollama's CPU load check does."""

from __future__ import annotations

import json
from collections.abc import Iterator

import ollama
import pytest

from singularity_ops.errors import OllamaError
from singularity_ops.ollama_api import OllamaClient
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn, human_bytes2

VPS = 2_040_109_465


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    models = [REAL_MODELS[n] for n in ("llama3.2:3b", "tinyllama:1.1b", "phi4:14b", "nomic-embed-text:latest")]
    with OllamaStandIn(models=models) as server:
        yield server


def test_load_is_a_generate_without_prompt_and_unload_a_keep_alive_of_zero(standin: OllamaStandIn) -> None:
    with OllamaClient(standin.url) as client:
        client.load("tinyllama:1.1b", "30m")
        assert [m.name for m in client.loaded()] == ["tinyllama:1.1b"]
        client.unload("tinyllama:1.1b")
        assert client.loaded() == []
        client.load("llama3.2:3b", -1)
    assert [json.loads(body) for path, body in standin.received if path == "/api/generate"] == [
        {"model": "tinyllama:1.1b", "keep_alive": "30m"},
        {"model": "tinyllama:1.1b", "keep_alive": 0},
        {"model": "llama3.2:3b", "keep_alive": -1},
    ]


def test_an_embedding_model_is_loaded_through_embed(standin: OllamaStandIn) -> None:
    with OllamaClient(standin.url) as client:
        client.load("nomic-embed-text:latest", "10m")
        assert [m.name for m in client.loaded()] == ["nomic-embed-text:latest"]
        client.unload("nomic-embed-text:latest")
        assert client.loaded() == []


def test_load_of_a_missing_model_is_ollamas_error(standin: OllamaStandIn) -> None:
    with OllamaClient(standin.url) as client, pytest.raises(OllamaError, match="HTTP 404: model 'nope:1b' not found"):
        client.load("nope:1b", "30m")


def test_loads_time_out(standin: OllamaStandIn) -> None:
    standin.load_seconds = 2.0
    with OllamaClient(standin.url, timeout=0.3) as client, pytest.raises(OllamaError, match=r"within 0\.3 s"):
        client.load("tinyllama:1.1b", "30m")


def test_human_bytes2_is_gos() -> None:
    assert [human_bytes2(n) for n in (512, 2048, 5 * 2**20 + 2**19, 10_277_855_207)] == \
        ["512 B", "2.0 KiB", "5.5 MiB", "9.6 GiB"]


def test_the_budget_refuses_a_load_with_ollamas_words(standin: OllamaStandIn) -> None:
    standin.memory_bytes = VPS
    with ollama.Client(host=standin.url) as official, pytest.raises(ollama.ResponseError) as error:
        official.generate("phi4:14b", "")
    assert error.value.status_code == 500
    assert error.value.error == "model requires more system memory (9.6 GiB) than is available (1.9 GiB)"
    assert standin._running() == []


def test_the_budget_counts_what_is_already_loaded(standin: OllamaStandIn) -> None:
    llama, tiny = REAL_MODELS["llama3.2:3b"].loaded_size(4096), REAL_MODELS["tinyllama:1.1b"].loaded_size(4096)
    standin.memory_bytes = llama + tiny - 1
    with OllamaClient(standin.url) as client:
        client.load("llama3.2:3b", "5m")
        with pytest.raises(OllamaError, match=r"model requires more system memory \(976.2 MiB\) than is available "
                                              r"\(976.2 MiB\)"):
            client.load("tinyllama:1.1b", "5m")
        client.load("llama3.2:3b", "10m")  # already loaded: no new memory needed
        client.unload("llama3.2:3b")
        client.load("tinyllama:1.1b", "5m")
        assert [m.name for m in client.loaded()] == ["tinyllama:1.1b"]


def test_without_a_budget_everything_loads_as_before(standin: OllamaStandIn) -> None:
    assert standin.memory_bytes is None
    with OllamaClient(standin.url) as client:
        client.load("phi4:14b", "5m")
        assert [m.name for m in client.loaded()] == ["phi4:14b"]
