"""Assembles the gateway with its breakers, cost model and history, and keeps its view of Ollama fresh."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from singularity_ops.config import Config
from singularity_ops.exporter.gateway.breaker import BreakerPolicy, Transition
from singularity_ops.exporter.gateway.breaker_registry import BreakerRegistry
from singularity_ops.exporter.gateway.cost import CostModel
from singularity_ops.exporter.gateway.guard.access import check_exposure
from singularity_ops.exporter.gateway.guard.detector import Guard, GuardMetrics
from singularity_ops.exporter.gateway.history.rollup import MinuteRollup
from singularity_ops.exporter.gateway.history.writer import HistoryWriter
from singularity_ops.exporter.gateway.metering import GatewayMetrics
from singularity_ops.exporter.gateway.model_names import ModelNames
from singularity_ops.exporter.gateway.prompts.layer import PromptLayer
from singularity_ops.exporter.gateway.proxy import Gateway
from singularity_ops.exporter.gateway.tracing import Tracing
from singularity_ops.hardware import hottest_cpu_celsius, shared_nvml
from singularity_ops.ollama_state import OllamaState
from singularity_ops.store import KeptConnection

if TYPE_CHECKING:
    from singularity_ops.exporter.gateway.cache.service import CacheService
    from singularity_ops.exporter.gateway.routing import RouteTable

log = logging.getLogger(__name__)
REFRESH_SECONDS = 5.0


def read_temperatures() -> tuple[float | None, float | None]:
    """The hottest CPU sensor and the hottest GPU, each None without sensors."""
    return hottest_cpu_celsius(), shared_nvml().hottest_celsius()


class GatewayService:
    def __init__(self, config: Config, registry: CollectorRegistry, state: OllamaState,
                 history: HistoryWriter | None = None, database_url: Callable[[], str] | None = None) -> None:
        self.state = state
        self.names = ModelNames()
        self._watts: float | None = None
        self._temperatures: tuple[float | None, float | None] | None = None
        self.history = history
        self.submit_history = history.submit if history is not None else None
        rollup = MinuteRollup(lambda: self._temperatures) if history is not None else None
        policy = config.gateway.breaker
        self.breakers = BreakerRegistry(
            BreakerPolicy(window_seconds=policy.window_seconds,
                          failure_rate_threshold=policy.failure_rate_threshold,
                          minimum_calls=policy.minimum_calls, open_seconds=policy.open_seconds,
                          half_open_calls=policy.half_open_calls),
            on_transition=self._on_transition,
        )
        registry.register(self.breakers)
        self.tracing = Tracing.from_environment()
        check_exposure(config)
        self.alerts = None
        if config.guard.enabled and config.guard.spike.enabled:
            from singularity_ops.alerting.push import AlertPusher

            self.alerts = AlertPusher(config.alerts.alertmanager_url)
        # Always: keys, scopes and admin routes hold with guard.enabled false too (only the detectors go).
        # The history's own database handle: bans are read back from where the history writes them.
        self.guard = Guard(config, self.submit_history, history._connect if history is not None else None,
                           self._spike_alert if self.alerts is not None else None)
        registry.register(GuardMetrics(self.guard))
        self.gateway = Gateway(config, GatewayMetrics(registry), self.names, self.breakers,
                               CostModel(config.cost, lambda: self._watts), self.submit_history, rollup,
                               self.tracing, self.guard)
        self.routes: RouteTable | None = None
        if config.gateway.routes:  # quality-aware routing: scores and demotions from the history's database
            from singularity_ops.exporter.gateway.routing import RouteTable, open_breakers_of

            self.routes = RouteTable(config.gateway.routes, config.gateway.route_loaded_margin,
                                     KeptConnection(history._connect) if history is not None else None,
                                     open_breakers_of(self.breakers))
            self.gateway.router = self.routes
        if history is not None and config.prompt_optimizer.enabled:  # managed system prompts, on the history's database
            self.gateway.prompts = PromptLayer(config.prompt_optimizer, registry, history._connect)
        self.cache_service: CacheService | None = None
        if config.cache.enabled and database_url is not None:  # the semantic cache (docs/PREDICTIVE_CACHE_WARMING.md)
            from singularity_ops.exporter.gateway.cache.service import CacheService  # off by default: 0.6 MB unloaded

            self.cache_service = CacheService(config, registry, state.snapshot, database_url,
                                              lambda: self.gateway.session)
            self.gateway.cache = self.cache_service.cache
        self.rollup = rollup
        self._task: asyncio.Task[None] | None = None

    def _on_transition(self, transition: Transition) -> None:
        log.warning("circuit breaker %s: %s -> %s (%s, failure rate %.0f%% over %d calls)", transition.breaker,
                    transition.from_state, transition.to_state, transition.reason, transition.failure_rate * 100,
                    transition.window_calls)
        if self.submit_history is not None:
            self.submit_history("circuit_breaker_events", {
                "at": transition.at, "breaker": transition.breaker, "from_state": str(transition.from_state),
                "to_state": str(transition.to_state), "reason": transition.reason,
                "failure_rate": transition.failure_rate, "window_calls": transition.window_calls,
            })

    def _spike_alert(self, firing: bool, summary: str, description: str) -> None:
        assert self.alerts is not None
        self.alerts.push("SecurityRequestSpike", "warning", summary, description, resolved=not firing)

    def refresh(self) -> None:
        """Blocking: Ollama's model list (for labels), the GPUs' power (for energy), temperatures (for rollups)."""
        snapshot = self.state.snapshot()
        if snapshot.up:
            self.names.update([m.name for m in snapshot.installed])
        if self.routes is not None:
            self.routes.refresh(snapshot)
        self._watts = shared_nvml().power_watts()
        self._temperatures = read_temperatures()

    def close_minutes(self) -> None:
        """Per-minute rollups of the minutes that are over, to ``real_time_metrics`` (event loop only)."""
        if self.rollup is not None and self.submit_history is not None:
            for row in self.rollup.close_minutes(datetime.now(UTC)):
                self.submit_history("real_time_metrics", row)

    async def start(self) -> None:
        if self.history is not None:
            self.history.start()
        await self.gateway.start()
        if self.cache_service is not None:
            await self.cache_service.start()
        if self.alerts is not None:
            self.alerts.start()
        await self.guard.start()
        if self.gateway.prompts is not None:
            await self.gateway.prompts.start()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.refresh)
        self._task = asyncio.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await loop.run_in_executor(None, self.refresh)
            except Exception as exc:  # keep the labels we have; the collector reports Ollama's state
                log.debug("gateway refresh failed: %s", exc)
            self.close_minutes()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.cache_service is not None:
            await self.cache_service.close()
        await self.gateway.close()
        if self.gateway.prompts is not None:
            await self.gateway.prompts.close()
        if self.routes is not None:
            self.routes.close()
        await self.guard.close()
        if self.alerts is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.alerts.stop, 1.0)
        if self.tracing is not None:
            self.tracing.close()
        if self.history is not None:
            if self.rollup is not None:  # the minute in progress too: it would be lost otherwise
                for row in self.rollup.close_minutes(datetime.now(UTC) + timedelta(minutes=1)):
                    self.history.submit("real_time_metrics", row)
            await asyncio.get_running_loop().run_in_executor(None, self.history.stop)
