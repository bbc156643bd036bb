"""The exporter process: the registry of collectors and the HTTP server for /metrics and /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from dataclasses import dataclass
from types import ModuleType

import psycopg
from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from singularity_ops.config import Config, parse_listen
from singularity_ops.errors import SingularityError
from singularity_ops.exporter.collectors.alert_thresholds import AlertThresholds
from singularity_ops.exporter.collectors.backup import BackupCollector
from singularity_ops.exporter.collectors.catalogue import CatalogueKeeper
from singularity_ops.exporter.collectors.gpu import GpuCollector
from singularity_ops.exporter.collectors.host import HostCollector
from singularity_ops.exporter.collectors.model_manager import ModelManagerCollector
from singularity_ops.exporter.collectors.ollama import OllamaCollector
from singularity_ops.exporter.collectors.runner import RunnerCollector, RunnerScan
from singularity_ops.exporter.collectors.scrape import ScrapeCollector
from singularity_ops.exporter.gateway.history.writer import HistoryWriter
from singularity_ops.exporter.gateway.service import GatewayService
from singularity_ops.ollama_api import OllamaClient
from singularity_ops.ollama_state import OllamaState
from singularity_ops.store import Database, KeptConnection

log = logging.getLogger(__name__)


@dataclass
class Exporter:
    config: Config
    registry: CollectorRegistry
    state: OllamaState
    scrape: ScrapeCollector
    catalogue: CatalogueKeeper | None = None
    gateway: GatewayService | None = None

    @classmethod
    def build(cls, config: Config, *, database: Database | None = None, nvml: ModuleType | None = None,
              with_database: bool = True, with_gateway: bool = False, with_history: bool = False) -> Exporter:
        client = OllamaClient(config.ollama.host, config.ollama.timeout_seconds)
        state = OllamaState(client, config.ollama.cache_seconds)
        registry = CollectorRegistry(auto_describe=False)
        handle = DatabaseHandle(config, database)
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
        scrape = ScrapeCollector(collectors, timeout_seconds=config.exporter.collector_timeout_seconds)
        registry.register(scrape)
        registry.register(AlertThresholds(config.alerts.thresholds))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        catalogue = None
        if with_database:
            catalogue = CatalogueKeeper(handle.get, state, config.memory)
            registry.register(catalogue)
        gateway = None
        if with_gateway:
            history = None
            if with_history:
                history = HistoryWriter(handle.connect, config.home / "history-spill",
                                        memory_rows=config.history.memory_rows,
                                        spill_max_bytes=config.history.spill_max_bytes,
                                        retention_days=config.history.retention_days)
                registry.register(history)
            gateway = GatewayService(config, registry, state, history)
        return cls(config, registry, state, scrape, catalogue, gateway)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/breakers", self._breakers)
        app.router.add_get("/", self._index)
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


class DatabaseHandle:
    """The history database, opened and migrated on the first success and shared by its users (the catalogue,
    the history writer), each of which retries in its own thread while it is unreachable."""

    def __init__(self, config: Config, database: Database | None = None) -> None:
        self.config = config
        self._database = database
        self._lock = threading.Lock()

    def get(self) -> Database:
        with self._lock:
            if self._database is None:
                self._database = Database.open_migrated(self.config.database, self.config.home)
            return self._database

    def connect(self) -> psycopg.Connection:
        return self.get().connect()


async def _listen(app: web.Application, address: str, flag: str, runners: list[web.AppRunner],
                  **options: object) -> None:
    host, port = parse_listen(address)
    runner = web.AppRunner(app, access_log=None, **options)
    await runner.setup()
    runners.append(runner)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        for started in runners:
            await started.cleanup()
        raise SingularityError(f"cannot listen on {address}: {exc.strerror}; choose another address with {flag}") \
            from None


async def serve(exporter: Exporter, stop: asyncio.Event | None = None) -> None:
    config = exporter.config
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # first: a SIGTERM during start-up still stops cleanly
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not in the main thread
            loop.add_signal_handler(signum, stop.set)
    runners: list[web.AppRunner] = []
    await _listen(exporter.web_app(), config.exporter.metrics_listen, "--metrics-listen", runners)
    log.info("exporter serving /metrics on http://%s (ollama %s)", config.exporter.metrics_listen, config.ollama.host)
    if exporter.gateway is not None:
        await exporter.gateway.start()
        # handler_cancellation: a client that disconnects cancels its handler, which closes the upstream call.
        await _listen(exporter.gateway.gateway.web_app(), config.gateway.listen, "--gateway-listen", runners,
                      handler_cancellation=True)
        log.info("gateway listening on http://%s -> %s", config.gateway.listen, config.ollama.host)
    if exporter.catalogue is not None:
        exporter.catalogue.start()
    try:
        await stop.wait()
    finally:
        log.info("exporter stopping")
        for runner in reversed(runners):
            await runner.cleanup()
        if exporter.gateway is not None:
            await exporter.gateway.close()
        exporter.close()
