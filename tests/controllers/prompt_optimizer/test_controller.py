"""The prompt-optimizer controller: registered by name, it decides running experiments every tick, and optimises an
enabled prompt when the schedule fires and it has enough new successful dialogues, once per fire time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from singularity_ops.controllers.prompt_optimizer import experiments, store
from singularity_ops.controllers.prompt_optimizer.controller import PromptOptimizer
from singularity_ops.controllers.registry import load_all
from singularity_ops.store import Database
from tests.controllers.prompt_optimizer.helpers import (
    NOW,
    PID,
    FakeModels,
    add_dialogues,
    make_config,
    migrate,
    rows,
    seed_prompt,
)

BEFORE_SCHEDULE = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)  # the default schedule fires at 04:30


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def make(tmp_path: Path, database_url: str) -> Iterator:
    made: list[PromptOptimizer] = []

    def build(clock: Clock, **settings: object) -> PromptOptimizer:
        config = make_config(tmp_path, database_url, **settings)
        migrate(config)
        controller = PromptOptimizer(config, database=Database.open_migrated(config.database, tmp_path), clock=clock,
                                     models=FakeModels())
        made.append(controller)
        return controller

    yield build
    for controller in made:
        controller.close()


def candidates(url: str) -> int:
    return rows(url, "SELECT count(*) FROM prompt_candidates")[0][0]


def test_it_is_registered_as_prompt_optimizer() -> None:
    assert "prompt-optimizer" in load_all()


def test_the_schedule_optimises_a_prompt_with_enough_new_successes_once(make, database_url: str) -> None:
    clock = Clock(BEFORE_SCHEDULE)
    controller = make(clock, min_new_successes=5)
    seed_prompt(database_url)
    add_dialogues(database_url, {"success": 5}, at=NOW)
    controller.tick()
    assert candidates(database_url) == 0  # the schedule has not fired since the controller started
    clock.now = BEFORE_SCHEDULE + timedelta(hours=2)
    controller.tick()
    assert candidates(database_url) == 2
    assert rows(database_url, "SELECT started_by FROM prompt_experiments") == [("prompt-optimizer",)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        experiments.stop(conn, "support", "cli:ops", NOW)
    controller.tick()
    assert candidates(database_url) == 2  # tried once per fire time


def test_too_few_new_successes_wait_for_the_next_fire(make, database_url: str) -> None:
    clock = Clock(BEFORE_SCHEDULE)
    controller = make(clock)
    seed_prompt(database_url)
    add_dialogues(database_url, {"success": 9, "failure": 20})
    clock.now = BEFORE_SCHEDULE + timedelta(hours=2)
    controller.tick()
    assert candidates(database_url) == 0
    add_dialogues(database_url, {"weak_success": 1}, at=NOW + timedelta(seconds=1))
    clock.now += timedelta(days=1)
    controller.tick()
    assert candidates(database_url) == 2


def test_every_tick_looks_at_running_experiments(make, database_url: str) -> None:
    controller = make(Clock(NOW + timedelta(hours=1)), schedule=None)
    seed_prompt(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        chosen = store.add_candidate(conn, PID, None, "Be brief.", None, 8.0, 5.0, [], "cli:ops", NOW)
        experiment, _ = experiments.start(conn, "support", chosen, 0.2, "cli:ops", NOW)
    add_dialogues(database_url, {"success": 1000, "failure": 1000}, experiment_id=experiment.id, variant="control")
    add_dialogues(database_url, {"success": 330, "failure": 170}, experiment_id=experiment.id, variant="candidate")
    controller.tick()
    assert rows(database_url, "SELECT state FROM prompt_experiments") == [("awaiting_approval",)]
    ((statistic, threshold),) = rows(database_url, "SELECT statistic, threshold FROM prompt_experiments")
    assert statistic >= threshold > 0


def test_disabled_it_does_nothing(make, database_url: str) -> None:
    clock = Clock(BEFORE_SCHEDULE)
    controller = make(clock, enabled=False, min_new_successes=1)
    seed_prompt(database_url)
    add_dialogues(database_url, {"success": 5})
    clock.now += timedelta(hours=2)
    controller.tick()
    assert candidates(database_url) == 0
