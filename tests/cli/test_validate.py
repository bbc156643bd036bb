"""`singularity-ops validate` and `models routes` through the real entry point: the documented JSON, progress on
stderr, exit codes, and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from singularity_ops.cli.main import main
from tests.controllers.validator.helpers import SMOKE, AnswerBook, model_status
from tests.exporter.gateway.test_routing import seed_results
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

MODEL_KEYS = {"model", "status", "accuracy", "cases", "passed", "latency_p50_seconds", "latency_p95_seconds",
              "tokens_per_second", "quality_score", "reason"}


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    names = ("qwen2.5-coder:1.5b", "tinyllama:1.1b", "llama3.2:3b", "nomic-embed-text:latest")
    with OllamaStandIn(models=[REAL_MODELS[n] for n in names]) as server:
        server.answer = AnswerBook({"qwen2.5-coder:1.5b": 5, "tinyllama:1.1b": 2})
        yield server


@pytest.fixture
def environment(standin: OllamaStandIn, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                clean_env: None) -> Path:
    monkeypatch.setenv("OLLAMA_HOST", standin.url)
    monkeypatch.setenv("SINGULARITY_DATABASE_URL", database_url)
    monkeypatch.setenv("SINGULARITY_HOME", str(tmp_path))
    suite = tmp_path / "smoke.yaml"
    suite.write_text(yaml.safe_dump(SMOKE))
    return suite


def test_validate_json_is_the_documented_shape_with_progress_on_stderr(environment: Path, database_url: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", "--json", "--suite", str(environment), "--models",
                 "qwen2.5-coder:1.5b,tinyllama:1.1b,nomic-embed-text"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 0
    assert set(report) == {"run_id", "suite", "status", "error", "models"}
    assert report["suite"] == {"name": "smoke", "hash": report["suite"]["hash"], "cases": 5,
                               "source": str(environment)}
    assert len(report["suite"]["hash"]) == 64
    assert all(set(m) == MODEL_KEYS for m in report["models"])
    assert [(m["model"], m["status"], m["cases"], m["passed"]) for m in report["models"]] == [
        ("qwen2.5-coder:1.5b", "ok", 5, 5), ("tinyllama:1.1b", "demoted", 5, 2), ("nomic-embed-text:latest",
                                                                                 "skipped", 0, 0)]
    qwen = report["models"][0]
    assert qwen["accuracy"] == 1.0 and 0 < qwen["latency_p50_seconds"] <= qwen["latency_p95_seconds"]
    assert qwen["tokens_per_second"] > 0 and 0.8 <= qwen["quality_score"] <= 1
    # not a terminal: one plain line per case, no carriage returns
    lines = err.splitlines()
    assert "\r" not in err and len([line for line in lines if " capital " in line]) == 2
    assert lines[1].endswith("1/10 qwen2.5-coder:1.5b capital pass")
    assert model_status(database_url)["tinyllama:1.1b"][0] == "demoted"


def test_validate_prints_a_table_and_no_demote_changes_nothing(environment: Path, database_url: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--no-demote", "--suite", str(environment), "--models", "tinyllama:1.1b"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("run 1: suite smoke (5 cases, ") and out[0].endswith("finished")
    assert out[1].split() == ["MODEL", "STATUS", "ACCURACY", "PASSED", "P50", "P95", "TOKENS/S", "QUALITY", "WHY"]
    assert out[2].split()[:4] == ["tinyllama:1.1b", "ok", "40.0%", "2/5"]
    assert out[2].endswith("--no-demote: nothing changed")
    assert model_status(database_url) == {}


def test_validate_exits_1_when_a_model_failed(environment: Path, standin: OllamaStandIn,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    standin.faults_by_path["/api/chat"] = "error500"
    assert main(["validate", "--json", "--suite", str(environment), "--models", "qwen2.5-coder:1.5b"]) == 1
    (model,) = json.loads(capsys.readouterr().out)["models"]
    assert model["status"] == "failed"


@pytest.mark.parametrize(("suite", "message"), [
    ({"name": "x", "cases": [{"id": "a", "prompt": "hi", "expect": {"contains": ["a", "b"]}}]},
     "case 'a'.expect.contains: a list is ambiguous"),
    ({"name": "x", "cases": [{"id": "a", "prompt": "hi", "expect": {"smells": "nice"}}]},
     "unknown scorer 'smells'"),
])
def test_a_bad_suite_is_one_line_naming_the_place(environment: Path, tmp_path: Path, suite: dict, message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert main(["validate", "--suite", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"singularity-ops validate: error: suite {path}: ") and message in err
    assert "\n" not in err


def test_models_routes_shows_each_choice_and_why(environment: Path, database_url: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    seed_results(database_url, {"qwen2.5-coder:1.5b": 0.9, "llama3.2:3b": 0.95},
                 demoted={"llama3.2:3b": "validation run 1: accuracy 50.0% < 80%"})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"gateway": {"routes": {"coder": ["llama3.2:3b", "qwen2.5-coder:1.5b"],
                                                             "tiny": ["tinyllama:1.1b"]}}}))
    assert main(["models", "routes", "--json", "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["breakers_known"] is False  # no gateway running here
    coder, tiny = report["routes"]
    assert (coder["route"], coder["model"]) == ("coder", "qwen2.5-coder:1.5b")
    assert coder["why"] == ("best quality 0.900; skipped llama3.2:3b: demoted (validation run 1: accuracy 50.0% "
                            "< 80%)")
    assert (tiny["model"], tiny["why"]) == ("tinyllama:1.1b", "first listed; no candidate has a validation score")
    assert main(["models", "routes", "--config", str(config)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["ROUTE", "MODEL", "WHY"] and table[1].split()[:2] == ["coder", "qwen2.5-coder:1.5b"]
