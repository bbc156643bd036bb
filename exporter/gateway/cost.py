"""What a request cost: a price table per million tokens, plus energy at a tariff.

Both are optional and add up (docs/GATEWAY.md, "Cost model"):
    price  = input_tokens / 1e6 x input_per_million + output_tokens / 1e6 x output_per_million
    energy = watts x request seconds (joules); its cost = joules / 3.6e6 x energy_price_per_kwh
Watts come from NVML (the GPUs' summed power draw) when a GPU is present, else ``cost.host_watts``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from singularity_ops.config import CostConfig, PriceConfig

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Charge:
    cost: float
    energy_joules: float


class CostModel:
    def __init__(self, config: CostConfig, gpu_watts: Callable[[], float | None] = lambda: None) -> None:
        self.config = config
        self.currency = config.currency
        self._gpu_watts = gpu_watts

    def price(self, model: str) -> PriceConfig | None:
        return self.config.prices.get(model) or self.config.prices.get("*")

    def watts(self) -> float:
        measured = self._gpu_watts()
        return measured if measured is not None else self.config.host_watts

    def charge(self, model: str, input_tokens: int, output_tokens: int, seconds: float) -> Charge:
        cost = 0.0
        price = self.price(model)
        if price is not None:
            cost += input_tokens / 1e6 * price.input_per_million + output_tokens / 1e6 * price.output_per_million
        joules = self.watts() * max(0.0, seconds)
        cost += joules / JOULES_PER_KWH * self.config.energy_price_per_kwh
        return Charge(cost, joules)
