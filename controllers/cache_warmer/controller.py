"""The ``cache-warmer`` controller: each tick, the next window's predictions (predict.py), and for those whose
entry is missing or expires inside the window, a queued warm, when it is safe:

* the model is loaded now, or the model manager's active profile for the window lists it and it fits the memory
  budget (``planned``: the manager loads it then anyway) — never a model that would have to push others out;
* the tokens the warms spent in the last hour are under ``cache.warmer.budget_tokens_per_hour``;
* the gateway that carries a warm out is idle (no user request in flight, none for ``idle_seconds``): that rule is
  the gateway's, since only it sees its requests.

It never evicts a user's entry (the gateway makes room only from the warmer's own) and never acts while the cache
is disabled. ``preview`` is what ``cache warm --dry-run`` prints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg

from singularity_ops.config import Config
from singularity_ops.controllers.cache_warmer import store
from singularity_ops.controllers.cache_warmer.predict import (
    Prediction,
    Window,
    from_calendar,
    from_history,
    rank,
    weeks_known,
)
from singularity_ops.controllers.model_manager.plan import active_profile, resolve
from singularity_ops.controllers.registry import register
from singularity_ops.cron import zone_named
from singularity_ops.model_fit import assess_models
from singularity_ops.ollama_api import OllamaClient, client_for
from singularity_ops.ollama_state import OllamaSnapshot, OllamaState
from singularity_ops.store import Database, DatabaseOnDemand, KeptConnection

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class CacheWarmer:
    name = "cache-warmer"

    def __init__(self, config: Config, *, database: Database | None = None,
                 clock: Callable[[], datetime] = utc_now,
                 snapshot: Callable[[], OllamaSnapshot] | None = None) -> None:
        self.config = config
        self.settings = config.cache
        self.interval_seconds = self.settings.warmer.interval_seconds
        self.zone = zone_named(self.settings.warmer.timezone)
        self.clock = clock
        self._database = DatabaseOnDemand(config.database, config.home, database)
        self._kept = KeptConnection(self._connect)
        self._client: OllamaClient | None = None
        if snapshot is None:
            self._client = client_for(config)
            snapshot = OllamaState(self._client, 0).snapshot
        self.snapshot = snapshot
        self._said: set[str] = set()

    def tick(self) -> None:
        if not (self.settings.enabled and self.settings.warmer.enabled):
            return
        self.queue(self.clock())

    def close(self) -> None:
        self._kept.close()
        if self._client is not None:
            self._client.close()

    # --- predicting --------------------------------------------------------------------------------------

    def window(self, at: datetime) -> Window:
        return Window(at, at + timedelta(minutes=self.settings.warmer.window_minutes))

    def preview(self, at: datetime | None = None) -> tuple[Window, list[Prediction]]:
        """The window starting at ``at`` (default now) and its predictions, each with ``cached`` and whether its
        model may be run (``ready``: loaded, planned, or why not)."""
        window = self.window(at or self.clock())
        warmer = self.settings.warmer

        def read(conn: psycopg.Connection) -> list[Prediction]:
            since = window.start - timedelta(days=warmer.history_days)
            known = weeks_known(window, store.first_record(conn, since), warmer.history_days)
            observed = store.observe(conn, window, window.start, known, warmer.recency_hours)
            found = rank(from_history(observed, window, known, self.settings)
                         + from_calendar(self.settings, window, self.zone), self.settings)
            if found:
                store.mark_cached(conn, found, window)
            return found

        predictions = self._kept.run(read)
        self._readiness(predictions, window)
        return window, predictions

    def _readiness(self, predictions: list[Prediction], window: Window) -> None:
        if not predictions:
            return
        snapshot = self.snapshot()
        if not snapshot.up:
            for prediction in predictions:
                prediction.ready = f"Ollama unavailable: {snapshot.error}"
            return
        loaded = {m.name for m in snapshot.loaded}
        installed = [m.name for m in snapshot.installed]
        manager = self.config.model_manager
        profile = active_profile(manager.profiles, window.start, zone_named(manager.timezone)) \
            if manager.enabled else None
        fits = {fit.name: fit.fit for fit in assess_models(snapshot, self.config.memory)[1]}
        for prediction in predictions:
            name = resolve(prediction.model, installed)
            if name is None:
                prediction.ready = "not installed"
            elif name in loaded:
                prediction.ready = "loaded"
            elif profile is None or not any(resolve(m, [name]) for m in profile.models):
                prediction.ready = "not loaded, and no model manager profile loads it in the window"
            elif not fits[name].fits:
                prediction.ready = f"planned by profile {profile.name} but does not fit: {fits[name].reason}"
            else:
                prediction.ready = "planned"

    # --- queueing ----------------------------------------------------------------------------------------

    def queue(self, at: datetime, reason: str | None = None) -> list[Prediction]:
        """Queue the warms that are due and safe; returns the predictions queued."""
        window, predictions = self.preview(at)
        budget = self.settings.warmer.budget_tokens_per_hour

        def write(conn: psycopg.Connection) -> list[Prediction]:
            spent = store.tokens_last_hour(conn, window.start)
            if spent >= budget:
                self._say("budget", f"cache warmer: the hourly budget is spent ({spent} of {budget} tokens); "
                                    "nothing is queued until it frees up")
                return []
            queued = []
            for prediction in predictions:
                if prediction.cached or prediction.ready not in ("loaded", "planned"):
                    if not prediction.cached:
                        self._say(prediction.key, f"cache warmer: not warming {prediction.model} "
                                                  f"({prediction.reason}): {prediction.ready}")
                    continue
                if store.enqueue(conn, prediction, window, prediction.ready == "planned", reason):
                    queued.append(prediction)
            return queued

        queued = self._kept.run(write) if predictions else []
        if queued:
            log.info("cache warmer: queued %d warm(s) for %s-%s", len(queued), window.start.isoformat(),
                     window.end.isoformat())
        return queued

    def _say(self, key: str, message: str) -> None:
        if key not in self._said:  # once per key and process: a tick a minute would repeat it all day
            self._said.add(key)
            log.info("%s", message)

    # --- database ----------------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        return self._database.connect(autocommit=True)


@register("cache-warmer")
def build(config: Config) -> CacheWarmer:
    if not config.cache.enabled:
        log.info("cache warmer idle: the cache is disabled (cache.enabled: false)")
    return CacheWarmer(config)
