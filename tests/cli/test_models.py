"""`singularity-ops models plan | apply | demote | promote`, through the parser they are wired with."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from singularity_ops.cli import models as models_cli
from singularity_ops.cli.main import _common
from singularity_ops.config import Config
from singularity_ops.controllers.model_manager.controller import ModelManager, NotLeader
from singularity_ops.errors import SingularityError
from tests.controllers.model_manager.test_auto_model_manager import (
    MORNING,
    NIGHT,
    RESERVE,
    VPS,
    events,
    generate_calls,
    loaded,
    manager_config,
)
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    models = [REAL_MODELS[n] for n in ("qwen2.5-coder:1.5b", "tinyllama:1.1b", "phi4:14b")]
    with OllamaStandIn(models=models, memory_bytes=VPS) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, standin: OllamaStandIn, database_url: str) -> Config:
    morning = {**MORNING, "models": ["qwen2.5-coder:1.5b", "phi4:14b"]}
    return manager_config(tmp_path, standin, database_url, VPS, profiles=[morning, NIGHT],
                          timezone="Europe/Moscow")


def models(config: Config, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="singularity-ops")
    models_cli.add_parser(parser.add_subparsers(dest="command", required=True), _common)
    return models_cli.run(config, parser.parse_args(["models", *argv]))


def test_plan_json_is_the_documented_shape_and_nothing_is_done(config: Config, standin: OllamaStandIn,
                                                               database_url: str, capsys) -> None:
    assert models(config, "plan", "--at", "2025-06-02T08:00", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan == {
        "profile": "morning",
        "load": ["qwen2.5-coder:1.5b"],
        "unload": [],
        "keep": [],
        "skipped": [{"model": "phi4:14b", "reason": plan["skipped"][0]["reason"], "need_bytes": 10_546_290_663,
                     "available_bytes": VPS - RESERVE - 1_686_235_200}],  # what is left once qwen is loaded
    }
    assert plan["skipped"][0]["reason"].startswith("not enough memory: needs 9.8 GiB")
    assert generate_calls(standin) == [] and events(database_url) == []


def test_plan_at_a_local_time_picks_that_times_profile(config: Config, standin: OllamaStandIn, capsys) -> None:
    standin.load("qwen2.5-coder:1.5b")
    assert models(config, "plan", "--at", "2025-06-02T23:30") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "at 2025-06-02T23:30+03:00: profile night (23:00-07:00 every day, exclusive)"
    assert out[1].split() == ["ACTION", "MODEL", "WHY"]
    assert out[2].split(None, 2) == ["unload", "qwen2.5-coder:1.5b", "not in exclusive profile night"]
    assert out[3].split(None, 2) == ["load", "tinyllama:1.1b", "profile night, priority 1"]

    assert models(config, "plan", "--at", "2025-06-02T05:30+00:00", "--json") == 0
    assert json.loads(capsys.readouterr().out)["profile"] == "morning", "08:30 in Moscow"
    assert models(config, "plan", "--at", "2025-06-02T09:30+00:00", "--json") == 0
    assert json.loads(capsys.readouterr().out)["profile"] is None, "12:30 in Moscow: the morning is over"


def test_plan_at_a_bad_time_names_the_fix(config: Config) -> None:
    with pytest.raises(SingularityError, match=r"--at 'tomorrow' is not an ISO-8601 time; write e\.g\. "):
        models(config, "plan", "--at", "tomorrow")


def test_apply_acts_once_and_prints_what_it_did(tmp_path: Path, standin: OllamaStandIn, database_url: str,
                                                capsys) -> None:
    config = manager_config(tmp_path, standin, database_url, VPS, profiles=[{"name": "always", "models":
                                                                              ["tinyllama:1.1b", "phi4:14b"]}])
    assert models(config, "apply") == 0
    assert loaded(standin) == {"tinyllama:1.1b"}
    rows = [line.split(None, 3) for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["ACTION", "MODEL", "RESULT", "WHY"]
    assert [row[:3] for row in rows[1:]] == [["profile", "-", "ok"], ["skip", "phi4:14b", "memory"],
                                             ["load", "tinyllama:1.1b", "ok"]]
    assert [e["action"] for e in events(database_url)] == ["profile", "skip", "load"]

    assert models(config, "apply", "--json") == 0
    again = json.loads(capsys.readouterr().out)["events"]
    assert [(e["action"], e["model"]) for e in again] == [("profile", None), ("skip", "phi4:14b")], \
        "tinyllama is kept; each start records its profile and standing skips once"
    assert again[1]["need_bytes"] == 10_546_290_663 and len(generate_calls(standin)) == 1


def test_apply_is_refused_while_another_manager_acts(config: Config, standin: OllamaStandIn) -> None:
    running = ModelManager(config)
    try:
        assert running.lock.acquire()
        with pytest.raises(NotLeader, match="singularity-ops models plan"):
            models(config, "apply")
    finally:
        running.close()
    assert generate_calls(standin) == []


def test_demote_and_promote_by_hand(config: Config, database_url: str, capsys) -> None:
    assert models(config, "demote", "QWEN2.5-coder:1.5b", "--reason", "answers in Chinese") == 0
    assert capsys.readouterr().out == "qwen2.5-coder:1.5b demoted: the model manager never preloads it\n"
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT status, reason FROM model_status WHERE model = 'qwen2.5-coder:1.5b'").fetchone() \
            == ("demoted", "answers in Chinese")
    models(config, "plan", "--at", "2025-06-02T08:00", "--json")
    plan = json.loads(capsys.readouterr().out)
    assert plan["load"] == [] and plan["skipped"][0] == {
        "model": "qwen2.5-coder:1.5b", "reason": "demoted (answers in Chinese): never preloaded",
        "need_bytes": None, "available_bytes": None}

    assert models(config, "promote", "qwen2.5-coder:1.5b") == 0
    assert capsys.readouterr().out == "qwen2.5-coder:1.5b promoted: the model manager may preload it\n"
    assert models(config, "promote", "qwen2.5-coder:1.5b") == 0
    assert "was not demoted" in capsys.readouterr().out


def test_demoting_a_model_that_is_not_installed_names_the_installed_ones(config: Config) -> None:
    with pytest.raises(SingularityError, match=r"model 'tinyllama' is not installed in Ollama \(installed: "
                                               r".*tinyllama:1\.1b.*\); check the name"):
        models(config, "demote", "tinyllama")
