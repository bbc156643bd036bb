"""The ``prompt-optimizer`` controller: every ``prompt_optimizer.interval_seconds`` it looks at each running
experiment with the sequential test (and carries out a decision), and when the cron ``prompt_optimizer.schedule``
has fired it optimises each enabled prompt that has no open experiment and at least
``prompt_optimizer.min_new_successes`` successful dialogues since its last optimisation.

One replica acts (a PostgreSQL advisory lock held across ticks). A scheduled time missed while the controller was
not running is not made up: optimising loads the optimiser and judge models, which is what off-peak hours are for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

import psycopg

from singularity_ops.config import Config
from singularity_ops.controllers.leader import LeaderLock
from singularity_ops.controllers.prompt_optimizer import experiments, store
from singularity_ops.controllers.prompt_optimizer.optimize import Models, new_successes, optimize
from singularity_ops.controllers.registry import register
from singularity_ops.controllers.validator.ollama import ValidatorClient
from singularity_ops.cron import Cron, zone_named
from singularity_ops.errors import SingularityError
from singularity_ops.ollama_api import client_for
from singularity_ops.store import Database, DatabaseOnDemand, KeptConnection

log = logging.getLogger(__name__)
LEADER_KEY = 0x50_4F_50_54  # "POPT": one acting prompt optimiser
ACTOR = "prompt-optimizer"


def utc_now() -> datetime:
    return datetime.now(UTC)


class OllamaModels:
    """The optimiser's and the judge's calls through Ollama's ``/api/chat`` (the validator's client)."""

    def __init__(self, config: Config, settings: Any) -> None:
        self.client = client_for(config, settings.timeout_seconds, ValidatorClient)
        self.keep_alive = settings.keep_alive
        self.judge_model = settings.judge_model or settings.model

    def chat(self, model: str, messages: list[dict[str, Any]], temperature: float) -> str:
        return self.client.chat(model, messages, {"temperature": temperature}, self.keep_alive).text

    def judge(self, prompt: str) -> str:
        return self.client.chat(self.judge_model, [{"role": "user", "content": prompt}],
                                {"temperature": 0, "num_predict": 256}, self.keep_alive, response_format="json").text

    def close(self) -> None:
        self.client.close()


class PromptOptimizer:
    name = ACTOR

    def __init__(self, config: Config, *, database: Database | None = None,
                 clock: Callable[[], datetime] = utc_now, models: Models | None = None) -> None:
        self.config = config
        self.settings = config.prompt_optimizer
        self.interval_seconds = self.settings.interval_seconds
        self.clock = clock
        self.zone: tzinfo | None = zone_named(self.settings.timezone)
        self.cron = Cron.parse(self.settings.schedule) if self.settings.schedule else None
        self.started_at = clock()
        self._models = models
        self._database = DatabaseOnDemand(config.database, config.home, database)
        self._kept = KeptConnection(self._connect)
        self.lock = LeaderLock(self._connect, LEADER_KEY)
        self._done: dict[str, datetime] = {}  # prompt id -> the fire time it was last tried for

    @property
    def models(self) -> Models:
        if self._models is None:
            self._models = OllamaModels(self.config, self.settings)
        return self._models

    def tick(self) -> None:
        if not self.settings.enabled:
            return
        if not self.lock.acting("prompt optimizer"):
            return
        now = self.clock()
        self._kept.run(lambda conn: self._look(conn, now))
        fired = self._fired(now)
        if fired is not None:
            self._kept.run(lambda conn: self._optimise_due(conn, fired, now))

    def _look(self, conn: psycopg.Connection, now: datetime) -> None:
        for experiment in experiments.running(conn):
            found = experiments.decide(conn, experiment.id, self.settings, now, ACTOR)
            if found is not None and found.decision != "continue":
                log.info("prompt optimizer: experiment %d: %s (%s)", experiment.id, found.decision, found.reason)

    def _fired(self, now: datetime) -> datetime | None:
        """The schedule's last fire time, when it is after this controller started."""
        if self.cron is None or not self.settings.model:
            return None
        fired = self.cron.previous(now, self.zone)
        return fired if fired >= self.started_at else None

    def _optimise_due(self, conn: psycopg.Connection, fired: datetime, now: datetime) -> None:
        for prompt in store.list_prompts(conn):
            if not prompt.enabled or self._done.get(prompt.id) == fired:
                continue
            if experiments.open_experiment(conn, prompt.id) is not None:
                continue
            if new_successes(conn, prompt.id) < self.settings.min_new_successes:
                continue
            self._done[prompt.id] = fired  # tried once per fire time, whatever happens
            try:
                optimize(conn, prompt.id, self.settings, self.models, ACTOR, now)
            except SingularityError as exc:  # Ollama away, a model missing, no text yet: next fire time
                log.warning("prompt optimizer: %s not optimised: %s", prompt.label, exc)

    def close(self) -> None:
        self.lock.release()
        self._kept.close()
        if isinstance(self._models, OllamaModels):
            self._models.close()
        self._database.close()

    def _connect(self) -> psycopg.Connection:
        return self._database.connect(autocommit=True)


@register(ACTOR)
def build(config: Config) -> PromptOptimizer:
    if not config.prompt_optimizer.enabled:
        log.info("prompt optimizer disabled (prompt_optimizer.enabled: false): it will not run on its own")
    elif not config.prompt_optimizer.model:
        log.info("prompt optimizer: no prompt_optimizer.model set; it decides experiments but writes no candidates")
    return PromptOptimizer(config)
