"""The model manager against the Ollama stand-in (enforcing a memory budget as Ollama does) and a real PostgreSQL,
with an injected clock: profiles switch on time, nothing is loaded that cannot fit, and every decision is recorded."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from singularity_ops.alerting.push import AlertPusher
from singularity_ops.config import Config, load_config
from singularity_ops.controllers.model_manager.controller import ModelManager, NotLeader
from singularity_ops.controllers.model_manager.store import set_status
from singularity_ops.migrate import migrate
from tests.conftest import free_port
from tests.singularity_ops.test_alert_push import alerts, start_alertmanager
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

MODELS = ("llama3.2:3b", "qwen2.5-coder:1.5b", "tinyllama:1.1b", "phi4:14b")
GIB = 2**30
VPS = 2_040_109_465  # the seed's 1.9 GB server
RESERVE = 256 * 2**20
MONDAY = datetime(2025, 6, 2, tzinfo=UTC)  # a Monday
MORNING = {"name": "morning", "hours": "07:00-12:00", "days": ["mon", "tue", "wed", "thu", "fri"],
           "models": ["qwen2.5-coder:1.5b"]}
NIGHT = {"name": "night", "hours": "23:00-07:00", "models": ["tinyllama:1.1b"], "exclusive": True}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def at(hours: float, day: int = 0) -> datetime:
    return MONDAY + timedelta(days=day, hours=hours)


def manager_config(tmp_path: Path, standin: OllamaStandIn, database_url: str, memory: int | None = None,
                   **model_manager: Any) -> Config:
    tree: dict[str, Any] = {"model_manager": {"timezone": "UTC", **model_manager}}
    if memory is not None:
        tree["memory"] = {"ollama_memory_bytes": memory}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    environ = {"OLLAMA_HOST": standin.url, "SINGULARITY_DATABASE_URL": database_url, "SINGULARITY_HOME": str(tmp_path)}
    return load_config(environ=environ, config_file=path)


def generate_calls(standin: OllamaStandIn) -> list[dict]:
    return [json.loads(body) for path, body in standin.received if path == "/api/generate"]


def loaded(standin: OllamaStandIn) -> set[str]:
    return {e.model.name for e in standin._running()}


def events(database_url: str) -> list[dict]:
    with psycopg.connect(database_url) as conn:
        cursor = conn.execute("SELECT at, profile, action, model, result, reason, need_bytes, available_bytes "
                              "FROM model_manager_events ORDER BY id")
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def requested(database_url: str, model: str, when: datetime) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO requests (id, at, model, endpoint, status, duration_seconds) "
                     "VALUES (%s, %s, %s, '/api/chat', 200, 0.5)", (uuid.uuid4(), when, model))


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models=[REAL_MODELS[name] for name in MODELS]) as server:
        yield server


@pytest.fixture
def managers() -> Iterator[list[ModelManager]]:
    made: list[ModelManager] = []
    yield made
    for manager in made:
        manager.close()


@pytest.fixture
def make(tmp_path: Path, standin: OllamaStandIn, database_url: str, managers: list[ModelManager]):
    """Builds managers on one migrated database (as `run` migrates before the controllers start)."""
    with psycopg.connect(database_url) as conn:
        migrate(conn)

    def build(clock: Clock, memory: int = 16 * GIB, **model_manager: Any) -> ModelManager:
        manager = ModelManager(manager_config(tmp_path, standin, database_url, memory, **model_manager), clock=clock)
        managers.append(manager)
        return manager

    return build


# --- profiles follow the clock ---------------------------------------------------------------------------


def test_the_profile_switches_at_seven(make, standin: OllamaStandIn, database_url: str) -> None:
    clock = Clock(at(6, 0) + timedelta(minutes=59))
    manager = make(clock, profiles=[MORNING, NIGHT])
    manager.tick()
    assert loaded(standin) == {"tinyllama:1.1b"}

    clock.now = at(7)
    manager.tick()
    assert loaded(standin) == {"tinyllama:1.1b", "qwen2.5-coder:1.5b"}, "morning is not exclusive: nothing unloaded"
    assert [c["model"] for c in generate_calls(standin)] == ["tinyllama:1.1b", "qwen2.5-coder:1.5b"]
    assert all(c["keep_alive"] == "30m" and "prompt" not in c for c in generate_calls(standin))
    switches = [(e["profile"], e["reason"]) for e in events(database_url) if e["action"] == "profile"]
    assert switches[0][0] == "night" and switches[0][1].startswith("manager started")
    assert switches[1] == ("morning", "switched from night; profile morning (07:00-12:00 mon,tue,wed,thu,fri)")
    load = [e for e in events(database_url) if e["action"] == "load"][-1]
    assert (load["model"], load["result"], load["profile"]) == ("qwen2.5-coder:1.5b", "ok", "morning")
    assert load["reason"].startswith("profile morning, priority 1") and load["need_bytes"] > 0

    manager.tick()
    assert len(generate_calls(standin)) == 2, "a loaded model is kept, not loaded again"


def test_the_time_zone_decides_which_hour_it_is(make, standin: OllamaStandIn) -> None:
    manager = make(Clock(at(4)), profiles=[MORNING], timezone="Europe/Moscow")  # 04:00 UTC is 07:00 in Moscow
    manager.tick()
    assert loaded(standin) == {"qwen2.5-coder:1.5b"}


def test_the_night_wraps_past_midnight_without_a_second_switch(make, standin: OllamaStandIn, database_url: str) -> None:
    clock = Clock(at(23, 0) + timedelta(minutes=59))
    manager = make(clock, profiles=[MORNING, NIGHT])
    manager.tick()
    clock.now = at(0, 1)  # Tuesday 00:00
    manager.tick()
    clock.now = at(6.99, 1)
    manager.tick()
    assert [e["profile"] for e in events(database_url) if e["action"] == "profile"] == ["night"]
    clock.now = at(7, 1)
    manager.tick()
    assert [e["profile"] for e in events(database_url) if e["action"] == "profile"] == ["night", "morning"]


def test_a_night_on_friday_only_ends_on_saturday_morning(make, standin: OllamaStandIn) -> None:
    friday_night = {**NIGHT, "days": ["fri"]}
    clock = Clock(at(2, 5))  # Saturday 02:00: still Friday's night
    manager = make(clock, profiles=[friday_night])
    assert manager.plan().profile == "night"
    clock.now = at(2, 4)  # Friday 02:00: Thursday had no night
    assert manager.plan().profile is None


def test_the_exclusive_night_unloads_every_other_model(make, standin: OllamaStandIn, database_url: str) -> None:
    standin.load("llama3.2:3b")
    standin.load("qwen2.5-coder:1.5b")
    manager = make(Clock(at(23, 2)), profiles=[MORNING, NIGHT])
    manager.tick()
    assert loaded(standin) == {"tinyllama:1.1b"}
    calls = generate_calls(standin)
    assert [c["keep_alive"] for c in calls[:2]] == [0, 0], "unloads go first"
    assert {c["model"] for c in calls[:2]} == {"llama3.2:3b", "qwen2.5-coder:1.5b"}
    assert calls[2] == {"model": "tinyllama:1.1b", "keep_alive": "30m"}
    unloads = [e for e in events(database_url) if e["action"] == "unload"]
    assert all(e["result"] == "ok" and e["reason"] == "not in exclusive profile night" for e in unloads)


def test_outside_every_profile_nothing_is_loaded_or_unloaded(make, standin: OllamaStandIn, database_url: str) -> None:
    standin.load("llama3.2:3b")
    manager = make(Clock(at(14)), profiles=[MORNING, NIGHT])
    manager.tick()
    assert generate_calls(standin) == [] and loaded(standin) == {"llama3.2:3b"}
    assert [e["reason"] for e in events(database_url)] == ["manager started; profile none: only memory safety"]


# --- memory ----------------------------------------------------------------------------------------------


def test_phi4_on_a_1_9_gb_budget_is_skipped_with_the_numbers_and_never_loaded(
        tmp_path: Path, database_url: str, managers: list[ModelManager]) -> None:
    port = free_port()
    alertmanager = start_alertmanager(tmp_path, port)
    pusher = AlertPusher(f"http://127.0.0.1:{port}", instance="vps-1").start()
    try:
        with OllamaStandIn(models=[REAL_MODELS["phi4:14b"]], memory_bytes=VPS) as small:
            config = manager_config(tmp_path, small, database_url, VPS,
                                    profiles=[{"name": "day", "hours": "08:00-20:00", "models": ["phi4:14b"]}])
            clock = Clock(at(10))
            manager = ModelManager(config, clock=clock, alerts=pusher)
            managers.append(manager)
            manager.tick()
            manager.tick()
            assert generate_calls(small) == []
            skip = manager.plan().as_json()["skipped"]
            assert skip == [{"model": "phi4:14b", "need_bytes": 10_546_290_663, "available_bytes": VPS - RESERVE,
                             "reason": skip[0]["reason"]}]
            assert skip[0]["reason"].startswith("not enough memory: needs 9.8 GiB, at most 1.6 GiB can be made "
                                                "available")
            (recorded,) = [e for e in events(database_url) if e["action"] == "skip"]
            assert (recorded["model"], recorded["result"]) == ("phi4:14b", "memory"), "recorded once, not every tick"
            assert (recorded["need_bytes"], recorded["available_bytes"]) == (10_546_290_663, VPS - RESERVE)
            assert pusher.flush()
            (alert,) = alerts(port)
            assert alert["labels"] == {"alertname": "ModelSkippedForMemory", "severity": "warning",
                                       "instance": "vps-1", "model": "phi4:14b"}
            assert alert["annotations"]["summary"] == \
                "Model phi4:14b not loaded for lack of memory: needs 9.8 GiB, 1.6 GiB available"

            clock.now = at(21)  # the profile is over: phi4 is no longer wanted, and its alert ends
            manager.tick()
            assert pusher.flush()
            assert alerts(port) == []
    finally:
        alertmanager.kill()
        alertmanager.wait()


def test_least_recently_used_idle_model_is_unloaded_to_make_room(tmp_path: Path, database_url: str, make,
                                                                  standin: OllamaStandIn) -> None:
    held = REAL_MODELS["llama3.2:3b"].loaded_size(4096) + REAL_MODELS["tinyllama:1.1b"].loaded_size(4096)
    budget = held + RESERVE + 1_000_000_000  # 1 GB free; qwen needs 1.6 GiB; either idle model would make room
    standin.memory_bytes = budget
    standin.load("llama3.2:3b")
    standin.load("tinyllama:1.1b")
    manager = make(Clock(at(8)), budget, profiles=[MORNING], demand_minutes=15)
    requested(database_url, "llama3.2:3b", at(5))  # used longest ago
    requested(database_url, "tinyllama:1.1b", at(6))
    plan = manager.plan()
    assert (plan.unload, plan.load, plan.keep) == (["llama3.2:3b"], ["qwen2.5-coder:1.5b"], [])
    manager.tick()
    assert loaded(standin) == {"tinyllama:1.1b", "qwen2.5-coder:1.5b"}
    unload = next(e for e in events(database_url) if e["action"] == "unload")
    assert unload["reason"] == "least recently used; makes room for qwen2.5-coder:1.5b"


def test_a_model_never_used_through_the_gateway_goes_first(database_url: str, make, standin: OllamaStandIn) -> None:
    held = REAL_MODELS["llama3.2:3b"].loaded_size(4096) + REAL_MODELS["tinyllama:1.1b"].loaded_size(4096)
    standin.load("llama3.2:3b")
    standin.load("tinyllama:1.1b")
    requested(database_url, "llama3.2:3b", at(5))
    plan = make(Clock(at(8)), held + RESERVE + 1_000_000_000, profiles=[MORNING]).plan()
    assert plan.unload == ["tinyllama:1.1b"]


def test_wanted_models_are_never_unloaded_for_a_lower_priority_one(make, standin: OllamaStandIn) -> None:
    standin.load("llama3.2:3b")
    budget = REAL_MODELS["llama3.2:3b"].loaded_size(4096) + RESERVE + 1_000_000_000
    morning = {**MORNING, "models": ["llama3.2:3b", "qwen2.5-coder:1.5b"]}
    plan = make(Clock(at(8)), budget, profiles=[morning]).plan()
    assert (plan.keep, plan.load, plan.unload) == (["llama3.2:3b"], [], [])
    assert plan.skipped[0].model == "qwen2.5-coder:1.5b" and plan.skipped[0].available_bytes == 1_000_000_000


def test_ollamas_memory_refusal_is_recorded_and_not_retried_in_a_loop(make, standin: OllamaStandIn,
                                                                      database_url: str) -> None:
    standin.memory_bytes = GIB  # Ollama has less than the configured budget says
    clock = Clock(at(8))
    manager = make(clock, 8 * GIB, profiles=[{**MORNING, "models": ["llama3.2:3b"]}])
    manager.tick()
    for minutes in (1, 2, 3):
        clock.now = at(8) + timedelta(minutes=minutes)
        manager.tick()
    assert len(generate_calls(standin)) == 1
    (refused,) = [e for e in events(database_url) if e["action"] == "load"]
    assert refused["result"] == "refused"
    assert refused["reason"] == ("Ollama refused to load it: model requires more system memory (2.6 GiB) than is "
                                 "available (1.0 GiB)")
    assert [e["action"] for e in events(database_url)] == ["profile", "load"], "the refusal is not re-recorded"
    assert manager.plan().skipped[0].kind == "refused"

    clock.now = at(9, 0) + timedelta(minutes=1)  # an hour later it is tried once more
    manager.tick()
    assert len(generate_calls(standin)) == 2


# --- demand and demotion ---------------------------------------------------------------------------------


def test_models_used_recently_are_preloaded_and_idle_ones_left_to_expire(make, standin: OllamaStandIn,
                                                                         database_url: str) -> None:
    requested(database_url, "llama3.2:3b", at(14) - timedelta(minutes=5))
    requested(database_url, "qwen2.5-coder:1.5b", at(14) - timedelta(minutes=40))
    standin.load("tinyllama:1.1b")
    manager = make(Clock(at(14)), 16 * GIB, demand_minutes=15)
    manager.tick()
    assert loaded(standin) == {"llama3.2:3b", "tinyllama:1.1b"}, "not requested lately: neither loaded nor unloaded"
    load = next(e for e in events(database_url) if e["action"] == "load")
    assert load["reason"].startswith("requested through the gateway at 2025-06-02T13:55:00+00:00")


def test_demoted_model_is_never_preloaded(make, standin: OllamaStandIn, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        manager = make(Clock(at(8)), 16 * GIB, profiles=[MORNING])
        set_status(conn, "qwen2.5-coder:1.5b", "demoted", "validator: 3 wrong answers out of 10")
        requested(database_url, "qwen2.5-coder:1.5b", at(8) - timedelta(minutes=1))
        manager.tick()
        assert generate_calls(standin) == []
        skip = next(e for e in events(database_url) if e["action"] == "skip")
        assert (skip["model"], skip["result"]) == ("qwen2.5-coder:1.5b", "demoted")
        assert skip["reason"] == "demoted (validator: 3 wrong answers out of 10): never preloaded"

        set_status(conn, "qwen2.5-coder:1.5b", "active", "promoted by hand")
        manager.tick()
        assert loaded(standin) == {"qwen2.5-coder:1.5b"}


# --- one acting replica, safety --------------------------------------------------------------------------


def test_of_two_managers_only_one_acts(make, standin: OllamaStandIn, database_url: str) -> None:
    clock = Clock(at(8))
    first, second = make(clock, profiles=[MORNING]), make(clock, profiles=[MORNING])
    first.tick()
    second.tick()
    assert len(generate_calls(standin)) == 1
    with pytest.raises(NotLeader, match="another model manager holds the lock"):
        second.apply_once()

    first.close()
    standin.unload("qwen2.5-coder:1.5b")
    second.tick()
    assert len(generate_calls(standin)) == 2 and loaded(standin) == {"qwen2.5-coder:1.5b"}
    assert [e["action"] for e in events(database_url)].count("load") == 2


def test_ollama_unreachable_means_no_action_and_a_backed_off_look(make, standin: OllamaStandIn,
                                                                  database_url: str) -> None:
    clock = Clock(at(8))
    manager = make(clock, profiles=[MORNING], interval_seconds=30)
    standin.faults_by_path["/api/version"] = "error500"
    manager.tick()
    manager.tick()
    clock.now += timedelta(seconds=29)
    manager.tick()
    assert standin.calls["/api/version"] == 1, "no second look before the backoff"
    clock.now += timedelta(seconds=2)
    manager.tick()
    assert standin.calls["/api/version"] == 2
    assert generate_calls(standin) == [] and events(database_url) == []

    standin.faults_by_path.clear()
    clock.now += timedelta(seconds=61)
    manager.tick()
    assert loaded(standin) == {"qwen2.5-coder:1.5b"}


def test_dry_run_plans_and_logs_but_never_acts(make, standin: OllamaStandIn, database_url: str, caplog) -> None:
    caplog.set_level(logging.INFO)
    manager = make(Clock(at(8)), profiles=[MORNING], dry_run=True)
    manager.tick()
    manager.tick()
    assert generate_calls(standin) == [] and events(database_url) == []
    lines = [r.getMessage() for r in caplog.records if "dry run" in r.getMessage()]
    assert len(lines) == 1 and "'load': ['qwen2.5-coder:1.5b']" in lines[0]


def test_a_kept_model_about_to_expire_gets_its_keep_alive_renewed(make, standin: OllamaStandIn,
                                                                  database_url: str) -> None:
    standin.load("qwen2.5-coder:1.5b", expires_in=timedelta(seconds=20))
    manager = make(Clock(at(8)), profiles=[MORNING], interval_seconds=30)
    manager.tick()
    assert generate_calls(standin) == [{"model": "qwen2.5-coder:1.5b", "keep_alive": "30m"}]
    (entry,) = standin._running()
    assert entry.expires_ns > (datetime.now(UTC) + timedelta(minutes=29)).timestamp() * 1e9
    assert [e["action"] for e in events(database_url)] == ["profile", "refresh"]


def test_a_profile_model_that_is_not_installed_is_a_warning_and_a_skip(make, standin: OllamaStandIn,
                                                                       caplog) -> None:
    caplog.set_level(logging.WARNING)
    manager = make(Clock(at(8)), profiles=[{**MORNING, "models": ["deepseek-r1:7b", "qwen2.5-coder"]}])
    plan = manager.plan()
    assert plan.skipped[0].as_json() == {"model": "deepseek-r1:7b", "need_bytes": None, "available_bytes": None,
                                         "reason": "not installed; pull it with: ollama pull deepseek-r1:7b"}
    assert plan.load == [], "qwen2.5-coder without a tag means :latest, which is not installed either"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'deepseek-r1:7b', which is not installed" in w for w in warnings)
