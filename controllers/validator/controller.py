"""The validator controller: runs the suite on every model on a cron schedule (default Saturday 03:00, off-peak),
and on a model again when its digest changes (re-pulled), then demotes and promotes as ``validate`` does.

One replica acts (a PostgreSQL advisory lock held across ticks); a run itself also takes the validation lock, so
a ``validate`` by hand and the controller never run at once. A scheduled time missed while nothing ran is not made
up later: validation loads every model in turn, which is what off-peak hours are for. Ollama unavailable means no
run (``ollama_up 0`` already alerts). See docs/MODEL_VALIDATION.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

import psycopg

from singularity_ops.config import Config
from singularity_ops.controllers.leader import LeaderLock
from singularity_ops.controllers.registry import register
from singularity_ops.controllers.validator import results as store
from singularity_ops.controllers.validator.runner import RunReport, ValidationBusy, ValidationRun
from singularity_ops.controllers.validator.suite import Suite, load_suite
from singularity_ops.cron import Cron, zone_named
from singularity_ops.errors import OllamaError
from singularity_ops.ollama_api import client_for
from singularity_ops.store import Database, DatabaseOnDemand, KeptConnection

log = logging.getLogger(__name__)
LEADER_KEY = 0x56_4C_44_52  # "VLDR": one acting validator controller


def utc_now() -> datetime:
    return datetime.now(UTC)


class Validator:
    name = "validator"

    def __init__(self, config: Config, *, database: Database | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config
        self.settings = config.validator
        self.interval_seconds = self.settings.interval_seconds
        self.clock = clock
        self.zone: tzinfo | None = zone_named(self.settings.timezone)
        self.cron = Cron.parse(self.settings.schedule) if self.settings.schedule else None
        self.started_at = clock()
        self.client = client_for(config)
        self._database = DatabaseOnDemand(config.database, config.home, database)
        self._kept = KeptConnection(self._connect)
        self.lock = LeaderLock(self._connect, LEADER_KEY)
        self._suite: Suite | None = None
        self._tried: set[tuple[str, str]] = set()  # (model, digest) validated for a digest change already
        self._ollama_down = False
        self.last_report: RunReport | None = None

    def tick(self) -> None:
        if not self.settings.enabled:
            return
        if not self.lock.acting("validator"):
            return
        now = self.clock()
        if self._schedule_due(now):
            self._run(None, "schedule")
            return
        changed = self._digests_changed()
        if changed and not self._run([name for name, _ in changed], "digest"):
            self._tried -= set(changed)  # not started (busy, Ollama gone): tried again at the next tick

    def close(self) -> None:
        self.lock.release()
        self._kept.close()
        self.client.close()
        self._database.close()

    def _schedule_due(self, now: datetime) -> bool:
        """The schedule fired since the last scheduled run started, and after this controller started."""
        if self.cron is None:
            return False
        fired = self.cron.previous(now, self.zone)
        last = self._kept.run(store.last_scheduled_start)
        return fired >= self.started_at and (last is None or last < fired)

    def _digests_changed(self) -> list[tuple[str, str]]:
        """(model, digest) of installed models validated before under another digest; each new digest once."""
        if not self.settings.on_digest_change:
            return []
        try:
            installed = self.client.installed()
        except OllamaError as exc:
            if not self._ollama_down:
                log.warning("validator: no run while Ollama is unavailable (%s)", exc)
            self._ollama_down = True
            return []
        self._ollama_down = False
        validated = self._kept.run(store.validated_digests)
        changed = [m for m in installed if m.name in validated and validated[m.name] != m.digest
                   and (m.name, m.digest) not in self._tried]
        for model in changed:
            self._tried.add((model.name, model.digest))
            log.info("validator: %s changed (digest %s, validated as %s): validating it again", model.name,
                     model.digest[:19], validated[model.name][:19])
        return [(m.name, m.digest) for m in changed]

    def _run(self, models: list[str] | None, trigger: str) -> bool:
        """True when the run took place (finished or failed), False when it could not start."""
        if self._suite is None:
            self._suite = load_suite(self.settings.suite)
        run = ValidationRun(self.config, self._database.get(), self._suite, clock=self.clock)
        try:
            report = run.run(models, demote=True, trigger=trigger)
        except ValidationBusy as exc:
            log.info("validator: %s", exc)
            return False
        except OllamaError as exc:
            log.warning("validator: %s run not started: %s", trigger, exc)
            return False
        self.last_report = report
        summary = ", ".join(f"{m.model} {m.status}" for m in report.models) or "no models"
        if report.status == "ok":
            log.info("validator: %s run %d finished: %s", trigger, report.run_id, summary)
        else:
            log.warning("validator: %s run %d failed (%s): %s", trigger, report.run_id, report.error, summary)
        return True

    def _connect(self) -> psycopg.Connection:
        return self._database.connect(autocommit=True)


@register("validator")
def build(config: Config) -> Validator:
    if not config.validator.enabled:
        log.info("validator disabled (validator.enabled: false): it will not run on its own")
    return Validator(config)
