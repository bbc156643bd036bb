"""The validator controller: the weekly schedule (never made up for a time missed while it was not running), a
model validated again when its digest changes, one acting replica, and its place in the registry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from singularity_ops.controllers.registry import load_all
from singularity_ops.controllers.validator.controller import Validator
from singularity_ops.store import Database
from tests.controllers.validator.helpers import SMOKE, AnswerBook, model_status, rows, validator_config
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

FRIDAY = datetime(2025, 6, 6, 12, 0, tzinfo=UTC)
SATURDAY_3AM = datetime(2025, 6, 7, 3, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models=[REAL_MODELS[n] for n in ("qwen2.5-coder:1.5b", "tinyllama:1.1b")]) as server:
        server.answer = AnswerBook({"qwen2.5-coder:1.5b": 5, "tinyllama:1.1b": 2})
        yield server


@pytest.fixture
def make(tmp_path: Path, standin: OllamaStandIn, database_url: str) -> Iterator:
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SMOKE))
    made: list[Validator] = []

    def build(clock: Clock, **settings: object) -> Validator:
        config = validator_config(tmp_path, standin, database_url, suite=str(suite), timezone="UTC", **settings)
        validator = Validator(config, database=Database.open_migrated(config.database, tmp_path), clock=clock)
        made.append(validator)
        return validator

    yield build
    for validator in made:
        validator.close()


def runs(database_url: str) -> list[tuple[str, str]]:
    return [(r["trigger"], r["status"]) for r in rows(database_url, "SELECT * FROM validation_runs ORDER BY id")]


def test_it_is_registered_as_validator() -> None:
    assert "validator" in load_all()


def test_the_schedule_runs_the_suite_once_when_it_fires(make, database_url: str) -> None:
    clock = Clock(FRIDAY)
    validator = make(clock)  # default schedule: Saturday 03:00
    validator.tick()
    assert rows(database_url, "SELECT 1 FROM validation_runs") == []
    clock.now = SATURDAY_3AM + timedelta(minutes=1)
    validator.tick()
    validator.tick()  # the same firing: not again
    assert runs(database_url) == [("schedule", "ok")]
    assert model_status(database_url)["tinyllama:1.1b"][0] == "demoted"
    clock.now += timedelta(days=7)
    validator.tick()
    assert runs(database_url) == [("schedule", "ok"), ("schedule", "ok")]


def test_a_time_missed_before_the_controller_started_is_not_made_up(make, database_url: str) -> None:
    validator = make(Clock(SATURDAY_3AM + timedelta(hours=6)))  # it was off at 03:00: peak hours now
    validator.tick()
    assert runs(database_url) == []


def test_a_model_whose_digest_changed_is_validated_again_alone_and_once(make, standin: OllamaStandIn,
                                                                       database_url: str) -> None:
    clock = Clock(SATURDAY_3AM + timedelta(minutes=1))
    validator = make(clock, schedule="0 3 * * 6")
    validator.started_at = FRIDAY
    validator.tick()
    clock.now += timedelta(hours=1)
    validator.tick()
    assert runs(database_url) == [("schedule", "ok")]
    repulled = replace(REAL_MODELS["qwen2.5-coder:1.5b"], digest="f" * 64)  # `ollama pull` brought a new version
    standin._models["qwen2.5-coder:1.5b"] = repulled
    standin.answer.right["qwen2.5-coder:1.5b"] = 3  # and it got worse
    validator.tick()
    validator.tick()
    assert runs(database_url) == [("schedule", "ok"), ("digest", "ok")]
    latest = rows(database_url, "SELECT model, model_digest, status FROM model_validation_results r WHERE run_id = "
                                "(SELECT max(id) FROM validation_runs)")
    assert latest == [{"model": "qwen2.5-coder:1.5b", "model_digest": "f" * 64, "status": "demoted"}]


def test_one_replica_acts_the_other_stands_by(make, database_url: str) -> None:
    clock = Clock(SATURDAY_3AM + timedelta(minutes=1))
    first, second = make(clock), make(clock)
    first.started_at = second.started_at = FRIDAY
    assert first.lock.acquire()
    second.tick()
    assert runs(database_url) == []
    first.tick()
    assert runs(database_url) == [("schedule", "ok")]


def test_disabled_it_does_nothing(make, database_url: str) -> None:
    validator = make(Clock(SATURDAY_3AM + timedelta(minutes=1)), enabled=False)
    validator.started_at = FRIDAY
    validator.tick()
    assert runs(database_url) == []
