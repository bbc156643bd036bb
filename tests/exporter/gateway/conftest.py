"""A running exporter with its gateway in front of the Ollama stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from singularity_ops.config import load_config
from singularity_ops.exporter.app import Exporter
from tests.conftest import free_port
from tests.helpers import Running, series


class GatewayUnderTest(Running):
    @property
    def gateway_url(self) -> str:
        return f"http://{self.exporter.config.gateway.listen}"

    def value(self, name: str, labels: str = "") -> float:
        return series(self.scrape(), name).get(labels, 0.0)


@pytest.fixture
def ollama() -> Iterator:
    """The stand-in with the default models and an embedding model."""
    from tests.conftest import DEFAULT_MODELS
    from tests.standins.models import REAL_MODELS
    from tests.standins.ollama import OllamaStandIn

    names = [*DEFAULT_MODELS, "nomic-embed-text:latest"]
    with OllamaStandIn(models=[REAL_MODELS[name] for name in names]) as standin:
        yield standin


@pytest.fixture
def make_gateway(ollama, clean_env) -> Iterator[Callable[..., GatewayUnderTest]]:
    started: list[GatewayUnderTest] = []

    def make(with_history: bool = False, clock: Callable[[], float] | None = None, **flags: Any) -> GatewayUnderTest:
        config = load_config(flags={"gateway.listen": f"127.0.0.1:{free_port()}",
                                    "exporter.metrics_listen": f"127.0.0.1:{free_port()}", **flags},
                             environ={"OLLAMA_HOST": ollama.host})
        exporter = Exporter.build(config, with_database=False, with_gateway=True, with_history=with_history)
        if clock is not None:  # the guard's clock (bans, buckets, repeats): the test moves it instead of sleeping
            exporter.gateway.guard.clock = clock
        running = GatewayUnderTest(exporter).__enter__()
        started.append(running)
        for _ in range(100):  # the gateway site starts right after the metrics site
            try:
                httpx.get(running.gateway_url + "/", timeout=0.5)
                break
            except httpx.HTTPError:
                pass
        return running

    yield make
    for running in started:
        running.__exit__(None, None, None)


@pytest.fixture
def gateway(make_gateway) -> GatewayUnderTest:
    return make_gateway()
