"""Keeps the ``models`` table in step with Ollama's installed models, off the scrape path.

A background thread connects (and migrates) when the database is reachable, then writes the catalogue
whenever the set of installed models changes. A database outage is a metric and a log line, and the
write is retried on the next tick: nothing is lost because the catalogue is rebuilt from Ollama each time.

Sample exposition::

    singularity_database_up 1.0
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import psycopg
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.config import MemoryConfig
from singularity_ops.errors import SingularityError
from singularity_ops.model_fit import ModelFit, assess_models
from singularity_ops.ollama_state import OllamaSnapshot, OllamaState
from singularity_ops.store import Database

log = logging.getLogger(__name__)

UPSERT = """
INSERT INTO models (name, digest, size_bytes, family, parameter_size, quantization_level,
                    context_length, required_bytes, last_seen, removed_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now(), NULL)
ON CONFLICT (name) DO UPDATE SET
    digest = EXCLUDED.digest, size_bytes = EXCLUDED.size_bytes, family = EXCLUDED.family,
    parameter_size = EXCLUDED.parameter_size, quantization_level = EXCLUDED.quantization_level,
    context_length = EXCLUDED.context_length, required_bytes = EXCLUDED.required_bytes,
    last_seen = now(), removed_at = NULL
"""


def write_catalogue(conn: psycopg.Connection, snapshot: OllamaSnapshot, fits: list[ModelFit]) -> None:
    need = {row.name: row.fit.need for row in fits}
    with conn.transaction(), conn.cursor() as cursor:
        cursor.executemany(UPSERT, [
            (m.name, m.digest, m.size_bytes, m.family or None, m.parameter_size or None,
             m.quantization_level or None, need[m.name].context_length, need[m.name].total_bytes)
            for m in snapshot.installed
        ])
        cursor.execute(
            "UPDATE models SET removed_at = now() WHERE removed_at IS NULL AND NOT (name = ANY(%s))",
            ([m.name for m in snapshot.installed],),
        )


class CatalogueKeeper(Collector):
    name = "database"

    def __init__(self, connect: Callable[[], Database], state: OllamaState, settings: MemoryConfig,
                 interval_seconds: float = 30.0) -> None:
        self._connect = connect
        self.state = state
        self.settings = settings
        self.interval_seconds = interval_seconds
        self.database: Database | None = None
        self.up = False
        self._warned = False
        self._written: frozenset[tuple[str, str]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="catalogue", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("singularity_database_up",
                                "1 when the history database answered the last write or check", value=int(self.up))

    def tick(self) -> None:
        try:
            if self.database is None:
                self.database = self._connect()
            snapshot = self.state.snapshot()
            with self.database.connect() as conn:
                if snapshot.up:
                    key = frozenset((m.name, m.digest) for m in snapshot.installed)
                    if key != self._written:
                        _, fits = assess_models(snapshot, self.settings)
                        write_catalogue(conn, snapshot, fits)
                        self._written = key
                        log.info("model catalogue updated: %d installed", len(key))
                else:
                    conn.execute("SELECT 1")
            if not self.up:
                log.info("history database reachable")
            self.up = True
        except (SingularityError, psycopg.Error, OSError) as exc:
            self._down(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except Exception as exc:  # whatever it is, never let the thread die
            self._down(type(exc).__name__)

    def _down(self, reason: str) -> None:
        if self.up or not self._warned:
            log.warning("history database unavailable: %s; retrying every %g s", reason, self.interval_seconds)
            self._warned = True
        self.up = False

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval_seconds)
