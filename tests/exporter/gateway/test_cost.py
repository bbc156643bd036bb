"""Cost = price table + energy at a tariff, per model and currency."""

from __future__ import annotations

import httpx
import pytest

from singularity_ops.config import CostConfig, PriceConfig
from singularity_ops.exporter.gateway.cost import CostModel

MODEL = "llama3.2:3b"


def test_price_table_per_model_with_a_wildcard() -> None:
    model = CostModel(CostConfig(prices={MODEL: PriceConfig(1.0, 2.0), "*": PriceConfig(10.0, 10.0)}))
    assert model.charge(MODEL, 1_000_000, 500_000, 0).cost == pytest.approx(2.0)
    assert model.charge("phi4:14b", 100_000, 0, 0).cost == pytest.approx(1.0)


def test_gpu_power_wins_over_the_configured_host_wattage() -> None:
    config = CostConfig(host_watts=50, energy_price_per_kwh=0.36)
    assert CostModel(config).charge(MODEL, 0, 0, 10).energy_joules == 500
    with_gpu = CostModel(config, gpu_watts=lambda: 300.0).charge(MODEL, 0, 0, 10)
    assert with_gpu.energy_joules == 3000
    assert with_gpu.cost == pytest.approx(3000 / 3.6e6 * 0.36)


def test_cost_and_energy_of_proxied_requests(make_gateway) -> None:
    gateway = make_gateway(**{"cost.currency": "EUR", "cost.host_watts": 100, "cost.energy_price_per_kwh": 0.36,
                              "cost.prices": {"*": {"input_per_million": 3.0, "output_per_million": 6.0}}})
    answer = httpx.post(gateway.gateway_url + "/api/generate", timeout=30,
                        json={"model": MODEL, "prompt": "one two three", "stream": False}).json()
    joules = 100 * answer["total_duration"] / 1e9
    expected = (answer["prompt_eval_count"] * 3.0 + answer["eval_count"] * 6.0) / 1e6 + joules / 3.6e6 * 0.36
    assert gateway.value("llm_energy_joules_total", f'{{model="{MODEL}"}}') == pytest.approx(joules)
    assert gateway.value("llm_cost_total", f'{{currency="EUR",model="{MODEL}"}}') == pytest.approx(expected)
