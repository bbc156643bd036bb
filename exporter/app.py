"""The exporter process: the registry of collectors and the HTTP server for /metrics and /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from dataclasses import dataclass, field
from types import ModuleType

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from singularity_ops.config import Config
from singularity_ops.errors import SingularityError
from singularity_ops.exporter import access
from singularity_ops.exporter.collectors.alert_thresholds import AlertThresholds
from singularity_ops.exporter.collectors.backup import BackupCollector
from singularity_ops.exporter.collectors.catalogue import CatalogueKeeper
from singularity_ops.exporter.collectors.gpu import GpuCollector
from singularity_ops.exporter.collectors.host import HostCollector
from singularity_ops.exporter.collectors.model_manager import ModelManagerCollector
from singularity_ops.exporter.collectors.ollama import OllamaCollector
from singularity_ops.exporter.collectors.runner import RunnerCollector, RunnerScan
from singularity_ops.exporter.collectors.scrape import ScrapeCollector
from singularity_ops.exporter.collectors.validation import ValidationCollector
from singularity_ops.exporter.connections import (
    METRICS_MAX_CONNECTIONS,
    METRICS_MAX_PER_CLIENT,
    AcceptErrors,
    ConnectionBook,
    ConnectionMetrics,
    Limits,
    fit_to_file_limit,
    raise_file_limit,
)
from singularity_ops.exporter.gateway.history.writer import HistoryWriter
from singularity_ops.exporter.gateway.service import GatewayService
from singularity_ops.exporter.listener import Listener, drop_server_header, expect
from singularity_ops.heap import trim
from singularity_ops.ollama_api import client_for
from singularity_ops.ollama_state import OllamaState
from singularity_ops.store import Database, DatabaseOnDemand, KeptConnection

log = logging.getLogger(__name__)


@dataclass
class Exporter:
    config: Config
    registry: CollectorRegistry
    state: OllamaState
    scrape: ScrapeCollector
    catalogue: CatalogueKeeper | None = None
    gateway: GatewayService | None = None
    connections: ConnectionMetrics = field(default_factory=ConnectionMetrics)

    @classmethod
    def build(cls, config: Config, *, database: Database | None = None, nvml: ModuleType | None = None,
              with_database: bool = True, with_gateway: bool = False, with_history: bool = False) -> Exporter:
        access.check(config.metrics.auth)
        client = client_for(config)
        state = OllamaState(client, config.ollama.cache_seconds)
        registry = CollectorRegistry(auto_describe=False)
        handle = DatabaseOnDemand(config.database, config.home, database)
        collectors: list[Collector] = [
            OllamaCollector(state, config.memory),
            RunnerCollector(state, RunnerScan(config.ollama.cache_seconds)),
            HostCollector(),
            GpuCollector(nvml),
        ]
        if with_database:  # the collectors that read PostgreSQL: the manager's decisions, the backups, the catalogue
            readers = KeptConnection(handle.connect)  # one connection for both, not one each
            collectors.append(ModelManagerCollector(readers, [p.name for p in config.model_manager.profiles]))
            collectors.append(BackupCollector(readers, config.backup))
            collectors.append(ValidationCollector(readers))
        scrape = ScrapeCollector(collectors, timeout_seconds=config.exporter.collector_timeout_seconds)
        registry.register(scrape)
        registry.register(AlertThresholds(config.alerts.thresholds))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        connections = ConnectionMetrics()
        registry.register(connections)
        catalogue = None
        if with_database:
            catalogue = CatalogueKeeper(handle.get, state, config.memory)
            registry.register(catalogue)
        gateway = None
        if with_gateway:
            history = None
            if with_history:
                try:
                    history = HistoryWriter(handle.connect, config.home / "history-spill",
                                            memory_rows=config.history.memory_rows,
                                            spill_max_bytes=config.history.spill_max_bytes,
                                            retention_days=config.history.retention_days)
                except RuntimeError as exc:  # the spill directory's lock: another exporter has this home
                    raise SingularityError(f"{exc}: another exporter runs with home {config.home}; stop it, or "
                                           "give this one its own --home") from None
                registry.register(history)
            # The cache (cache.enabled) opens the same database as the history, on its first lookup.
            gateway = GatewayService(config, registry, state, history, database_url=lambda: handle.get().url)
        return cls(config, registry, state, scrape, catalogue, gateway, connections)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def web_app(self) -> web.Application:
        auth = self.config.metrics.auth
        app = web.Application(middlewares=[access.middleware(auth)] if access.enabled(auth) else [])
        app.on_response_prepare.append(drop_server_header)
        for path, handler in (("/metrics", self._metrics), ("/healthz", self._healthz),
                              ("/breakers", self._breakers), ("/", self._index)):
            app.router.add_get(path, handler, expect_handler=expect)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = await asyncio.get_running_loop().run_in_executor(
            None, self.render, request.headers.get("Accept"))
        response = web.Response(body=body, headers={"Content-Type": content_type})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _breakers(self, request: web.Request) -> web.Response:
        if self.gateway is None:
            return web.json_response({"error": "this exporter runs without the gateway"}, status=404)
        return web.json_response({"breakers": self.gateway.breakers.snapshot()})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="Singularity Ops exporter: see /metrics and /healthz\n")

    def close(self) -> None:
        if self.catalogue is not None:
            self.catalogue.stop()
        self.scrape.close()
        self.state.client.close()


def _limits(config: Config, file_limit: int) -> tuple[Limits, Limits]:
    """The caps of the gateway and of /metrics, both within the process's file limit."""
    gateway = config.gateway
    total, per_client = fit_to_file_limit(file_limit, gateway.max_connections, gateway.max_connections_per_client)
    proxies = tuple(ipaddress.ip_network(p.strip(), strict=False)
                    for p in gateway.trusted_proxies.split(",") if p.strip())
    timeouts = (gateway.header_timeout_seconds, gateway.idle_timeout_seconds)
    return (Limits("gateway", total, per_client, *timeouts, exempt=proxies),
            Limits("metrics", METRICS_MAX_CONNECTIONS, METRICS_MAX_PER_CLIENT, *timeouts))


TRIM_SECONDS = 15.0  # about one Prometheus scrape interval


async def _trim_heap_every(seconds: float) -> None:
    """Free heap back to the system after start-up, then every ``seconds`` (singularity_ops/heap.py)."""
    while True:
        trim()
        await asyncio.sleep(seconds)


async def serve(exporter: Exporter, stop: asyncio.Event | None = None) -> None:
    config = exporter.config
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # first: a SIGTERM during start-up still stops cleanly
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not in the main thread
            loop.add_signal_handler(signum, stop.set)
    file_limit = raise_file_limit()
    gateway_limits, metrics_limits = _limits(config, file_limit)
    accept_errors = exporter.connections.accept_errors = AcceptErrors(file_limit)
    accept_errors.install(loop)
    listeners: list[Listener] = []
    gateway_started = serving = False
    try:
        await _listen(Listener(exporter.web_app(), ConnectionBook(metrics_limits), accept_errors),
                      config.exporter.metrics_listen, "--metrics-listen", listeners, exporter)
        log.info("exporter serving /metrics on http://%s (ollama %s)", config.exporter.metrics_listen,
                 config.ollama.host)
        access.warn_if_open(config.metrics.auth, config.exporter.metrics_listen)
        if exporter.gateway is not None:
            await exporter.gateway.start()
            gateway_started = True
            # handler_cancellation: a client that disconnects cancels its handler, which closes the upstream call;
            # auto_decompress off: the gateway decodes bodies itself, within gateway.max_body_bytes.
            gateway = Listener(exporter.gateway.gateway.web_app(), ConnectionBook(gateway_limits), accept_errors,
                               handler_cancellation=True, auto_decompress=False)
            await _listen(gateway, config.gateway.listen, "--gateway-listen", listeners, exporter)
            log.info("gateway listening on http://%s -> %s (at most %d connections, %d per client; open-file "
                     "limit %d)", config.gateway.listen, config.ollama.host, gateway_limits.max_connections,
                     gateway_limits.max_per_client, file_limit)
        if exporter.catalogue is not None:
            exporter.catalogue.start()
        serving = True
        trimming = asyncio.create_task(_trim_heap_every(TRIM_SECONDS))
        try:
            await stop.wait()
        finally:
            trimming.cancel()
    finally:
        log.info("exporter stopping")
        for listener in reversed(listeners):
            await listener.close()
        if exporter.gateway is not None and gateway_started:
            await exporter.gateway.close()
        if serving:  # a failed start ends the process: nothing was started that needs stopping
            exporter.close()
        accept_errors.uninstall(loop)


async def _listen(listener: Listener, address: str, flag: str, listeners: list[Listener], exporter: Exporter) -> None:
    await listener.start(address, flag)
    listeners.append(listener)
    exporter.connections.books.append(listener.book)
