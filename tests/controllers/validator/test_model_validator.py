"""Cross-model validation (the seed's "model_validator"): every scorer on passing and failing answers, then whole
runs against the Ollama stand-in (models answering from an answer book) and a real PostgreSQL: demotion, routing
away from the demoted model, promotion back with hysteresis, misfits skipped, the loaded set restored, a judge
answering garbage, Ollama going away mid-run."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from singularity_ops.controllers.model_manager.store import demoted_models, set_status
from singularity_ops.controllers.validator.ollama import OllamaHelpers, ValidatorClient
from singularity_ops.controllers.validator.progress import ConsoleProgress, Progress
from singularity_ops.controllers.validator.scorers import read_expect
from singularity_ops.exporter.gateway.routing import RouteTable
from singularity_ops.migrate import migrate
from singularity_ops.ollama_api import OllamaClient
from singularity_ops.ollama_state import OllamaState
from singularity_ops.store import KeptConnection
from tests.controllers.validator.helpers import (
    MODELS,
    VPS,
    AnswerBook,
    loaded,
    model_status,
    rows,
    smoke,
    validate,
    validator_config,
)
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

# --- the scorers ------------------------------------------------------------------------------------------------

PASSING: list[tuple[dict[str, Any], str]] = [
    ({"equals": "4"}, " 4."),
    ({"equals": "negative"}, "**Negative**"),
    ({"equals": {"value": "HELLO", "case_sensitive": True}}, "HELLO"),
    ({"contains": "Paris"}, "The capital is paris."),
    ({"contains": {"any": ["red", "blue"]}}, "Blue."),
    ({"contains": {"all": ["def is_even", "return"]}}, "def is_even(n):\n    return n % 2 == 0"),
    ({"contains": {"none": ["Q1", "Q3"]}}, "Q2"),
    ({"regex": r"\b17:25\b"}, "It arrives at 17:25."),
    ({"regex": {"pattern": r"^\W*yes\b", "flags": "i"}}, "Yes, they are."),
    ({"json": True}, '{"a": 1}'),
    ({"json": True}, '```json\n{"a": 1}\n```'),
    ({"json": {"schema": {"type": "object", "required": ["age"], "properties": {"age": {"type": "integer"}}}}},
     '{"age": 34}'),
    ({"json": {"fields": {"name": "Maria Lopez", "tags.1": "b"}}}, '{"name": "Maria Lopez", "tags": ["a", "b"]}'),
    ({"number": 258}, "17 × 24 = 408; 408 − 150 = 258"),
    ({"number": 1450}, "The highest was 1,450"),
    ({"number": {"value": 0.9, "tolerance": 0.001}}, "0.9"),
    ({"number": {"value": 17, "pick": "any"}}, "17 crates, then 42"),
]
FAILING: list[tuple[dict[str, Any], str, str]] = [
    ({"equals": "4"}, "The answer is 4.", "differs from '4'"),
    ({"equals": {"value": "HELLO", "case_sensitive": True}}, "Hello", "differs"),
    ({"contains": "Paris"}, "Lyon", "missing ['Paris']"),
    ({"contains": {"any": ["red", "blue"]}}, "green", "none of"),
    ({"contains": {"all": ["def is_even", "return"]}}, "def is_even(n): pass", "missing ['return']"),
    ({"contains": {"none": ["Q1", "Q3"]}}, "Q1 and Q2", "contains ['Q1']"),
    ({"regex": r"\b17:25\b"}, "at 5:25 pm", "no match"),
    ({"json": True}, "Sure! {\"a\": 1}", "not JSON"),
    ({"json": {"schema": {"type": "object", "required": ["age"], "properties": {"age": {"type": "integer"}}}}},
     '{"age": "34"}', "$.age: expected integer, got string"),
    ({"json": {"schema": {"type": "array", "maxItems": 2}}}, "[1, 2, 3]", "at most 2"),
    ({"json": {"fields": {"name": "Maria Lopez"}}}, '{"name": "Maria"}', "'Maria', expected 'Maria Lopez'"),
    ({"json": {"fields": {"address.city": "Kyoto"}}}, '{"name": "x"}', "no 'address'"),
    ({"number": 258}, "258 apples? No: 260", "260, expected 258"),
    ({"number": 42}, "forty-two", "no number"),
]


def score(expect: dict[str, Any], answer: str, helpers: Any = None) -> list[Any]:
    return [scorer.score(answer, "the question", helpers) for scorer in read_expect(expect, "expect")]


@pytest.mark.parametrize(("expect", "answer"), PASSING, ids=lambda v: json.dumps(v)[:40])
def test_a_scorer_passes_a_right_answer(expect: dict[str, Any], answer: str) -> None:
    verdicts = score(expect, answer)
    assert all(v.passed for v in verdicts), [v.detail for v in verdicts]


@pytest.mark.parametrize(("expect", "answer", "detail"), FAILING, ids=lambda v: json.dumps(v)[:40])
def test_a_scorer_fails_a_wrong_answer_and_says_why(expect: dict[str, Any], answer: str, detail: str) -> None:
    (verdict,) = score(expect, answer)
    assert not verdict.passed
    assert detail in verdict.detail


class FakeHelpers:
    """Embeddings from a table, and a judge that answers what it is told to."""

    def __init__(self, vectors: dict[str, list[float]] | None = None, judge_says: str = "") -> None:
        self.vectors = vectors or {}
        self.judge_says = judge_says
        self.prompts: list[str] = []

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors[t] for t in texts]

    def judge(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.judge_says


def test_similar_passes_at_or_above_its_minimum_cosine_and_fails_below() -> None:
    helpers = FakeHelpers({"Paris is the capital.": [1.0, 0.0], "It is Paris.": [0.9, 0.1],
                           "I like trains.": [0.0, 1.0]})
    expect = {"similar": {"reference": "Paris is the capital.", "min": 0.9}}
    (close,) = score(expect, "It is Paris.", helpers)
    (far,) = score(expect, "I like trains.", helpers)
    assert close.passed and close.score == pytest.approx(0.9939, abs=1e-4)
    assert not far.passed and far.score == 0.0 and "< 0.9" in far.detail


def test_similar_through_ollama_embeddings(ollama: OllamaStandIn) -> None:
    ollama._models["nomic-embed-text:latest"] = REAL_MODELS["nomic-embed-text:latest"]
    with ValidatorClient(ollama.url, 5) as client:
        helpers = OllamaHelpers(client, "nomic-embed-text:latest", None, "5m")
        (same,) = score({"similar": "Paris is the capital of France."}, "Paris is the capital of France.", helpers)
        (other,) = score({"similar": "Paris is the capital of France."}, "Bananas are yellow.", helpers)
    assert same.passed and same.score == pytest.approx(1.0)
    assert not other.passed


@pytest.mark.parametrize(("says", "passed", "score_"), [
    ('{"score": 8, "reason": "correct and complete"}', True, 8.0),
    ('Here you go: {"score": 3, "reason": "wrong city"}', False, 3.0),
    ("PASS - the answer names Paris", True, 10.0),
])
def test_judge_reads_a_score_or_a_verdict_and_records_its_prompt_and_answer(says: str, passed: bool,
                                                                            score_: float) -> None:
    helpers = FakeHelpers(judge_says=says)
    (verdict,) = score({"judge": {"rubric": "Names Paris as the capital.", "min_score": 7}}, "Paris.", helpers)
    assert (verdict.passed, verdict.score) == (passed, score_)
    assert "Names Paris as the capital." in helpers.prompts[0] and "Paris." in helpers.prompts[0]
    assert verdict.as_json()["judge_prompt"] == helpers.prompts[0]
    assert verdict.as_json()["judge_answer"] == says


@pytest.mark.parametrize("garbage", ["lol", "", '{"score": "high"}', '{"score": 42}', "PASS or FAIL, who knows"])
def test_a_judge_answer_that_is_not_a_verdict_is_a_failed_judgement(garbage: str) -> None:
    (verdict,) = score({"judge": "Names Paris."}, "Paris.", FakeHelpers(judge_says=garbage))
    assert not verdict.passed and verdict.score is None
    assert "not a verdict" in verdict.detail and verdict.extra["judge_answer"] == garbage


# --- whole runs ------------------------------------------------------------------------------------------------


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models=[REAL_MODELS[name] for name in MODELS]) as server:
        server.answer = AnswerBook({"qwen2.5-coder:1.5b": 5, "llama3.2:3b": 5, "tinyllama:1.1b": 2})
        yield server


def book(standin: OllamaStandIn) -> AnswerBook:
    assert isinstance(standin.answer, AnswerBook)
    return standin.answer


SMALL = ["qwen2.5-coder:1.5b", "tinyllama:1.1b", "llama3.2:3b"]


def test_a_run_over_several_models_demotes_the_weak_one_and_routing_then_avoids_it(
        tmp_path: Path, standin: OllamaStandIn, database_url: str) -> None:
    config = validator_config(tmp_path, standin, database_url)
    report = validate(config, models=SMALL)

    assert report.status == "ok"
    by_model = {m.model: m for m in report.models}
    assert {name: (m.status, m.accuracy, m.passed) for name, m in by_model.items()} == {
        "qwen2.5-coder:1.5b": ("ok", 1.0, 5), "tinyllama:1.1b": ("demoted", 0.4, 2), "llama3.2:3b": ("ok", 1.0, 5)}
    assert by_model["tinyllama:1.1b"].reason == f"validation run {report.run_id}: accuracy 40.0% < 80%"
    assert all(0 < m.quality_score <= 1 for m in report.models)
    assert by_model["qwen2.5-coder:1.5b"].quality_score > by_model["tinyllama:1.1b"].quality_score
    # the model manager's table: it stops preloading the demoted model
    status = model_status(database_url)
    assert status == {"tinyllama:1.1b": ("demoted", f"validation run {report.run_id}: accuracy 40.0% < 80%")}
    cases = rows(database_url, "SELECT c.case_id, c.passed, c.verdicts, c.answer_excerpt FROM model_validation_cases c "
                               "JOIN model_validation_results r ON r.id = c.result_id WHERE r.model = %s "
                               "ORDER BY c.case_id", "tinyllama:1.1b")
    assert [(c["case_id"], c["passed"]) for c in cases] == [
        ("capital", True), ("person", False), ("ready", False), ("sum", True), ("time", False)]
    assert cases[1]["verdicts"] == [{"scorer": "json", "passed": False, "score": None,
                                     "detail": "not JSON: Expecting value: line 1 column 1 (char 0)"}]
    assert cases[1]["answer_excerpt"] == "Her name is Ada."

    # routing reads the same tables: a route listing the demoted model first goes elsewhere
    kept = KeptConnection(lambda: psycopg.connect(database_url))
    table = RouteTable({"chat": ["tinyllama:1.1b", "qwen2.5-coder:1.5b"]}, 0.05, kept)
    with OllamaClient(standin.url) as client:
        table.refresh(OllamaState(client, 0).snapshot())
    kept.close()
    (choice,) = table.choices()
    assert choice.model == "qwen2.5-coder:1.5b"
    assert "tinyllama:1.1b: demoted (validation run" in choice.why


def test_a_later_run_at_or_above_the_threshold_promotes_it_back(tmp_path: Path, standin: OllamaStandIn,
                                                              database_url: str) -> None:
    config = validator_config(tmp_path, standin, database_url)
    first = validate(config, models=["tinyllama:1.1b"])
    assert [m.status for m in first.models] == ["demoted"]
    book(standin).right["tinyllama:1.1b"] = 5
    second = validate(config, models=["tinyllama:1.1b"])
    (result,) = second.models
    assert (result.status, result.accuracy) == ("promoted", 1.0)
    assert result.reason == f"validation run {second.run_id}: accuracy 100.0% ≥ 85%"
    assert model_status(database_url)["tinyllama:1.1b"][0] == "active"


def test_between_the_threshold_and_the_promotion_margin_a_demoted_model_stays_demoted(
        tmp_path: Path, standin: OllamaStandIn, database_url: str) -> None:
    config = validator_config(tmp_path, standin, database_url, promote_margin=0.15)
    validate(config, models=["tinyllama:1.1b"])
    book(standin).right["tinyllama:1.1b"] = 4  # 80 %: at the threshold, below 95 %
    (result,) = validate(config, models=["tinyllama:1.1b"]).models
    assert result.status == "demoted"
    assert "accuracy 80.0% ≥ 80% but < 95% needed to promote back: stays demoted" in result.reason
    assert model_status(database_url)["tinyllama:1.1b"][0] == "demoted"


def test_a_model_demoted_by_hand_stays_demoted_whatever_it_scores(tmp_path: Path, standin: OllamaStandIn,
                                                                   database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        set_status(conn, "qwen2.5-coder:1.5b", "demoted", "licence review")
    config = validator_config(tmp_path, standin, database_url)
    (result,) = validate(config, models=["qwen2.5-coder:1.5b"]).models
    assert result.status == "demoted" and "demoted by hand (licence review): left as it is" in result.reason
    assert model_status(database_url)["qwen2.5-coder:1.5b"] == ("demoted", "licence review")


def test_no_demote_only_reports(tmp_path: Path, standin: OllamaStandIn, database_url: str) -> None:
    config = validator_config(tmp_path, standin, database_url)
    report = validate(config, models=["tinyllama:1.1b"], demote=False)
    (result,) = report.models
    assert result.status == "ok" and result.reason.endswith("--no-demote: nothing changed")
    assert model_status(database_url) == {}
    assert rows(database_url, "SELECT demote FROM validation_runs") == [{"demote": False}]


def test_a_model_that_cannot_fit_is_skipped_with_the_estimators_reason(tmp_path: Path, standin: OllamaStandIn,
                                                                        database_url: str) -> None:
    config = validator_config(tmp_path, standin, database_url, memory=VPS)
    report = validate(config, models=["phi4:14b", "qwen2.5-coder:1.5b"])
    phi4, qwen = report.models
    assert (phi4.status, phi4.cases, phi4.accuracy) == ("skipped", [], None)
    assert phi4.reason.startswith("does not fit: needs 9.8 GiB") and "1.9 GiB configured" in phi4.reason
    assert qwen.status == "ok"
    assert not [p for p, body in standin.received if p == "/api/chat" and b"phi4" in body]
    assert model_status(database_url) == {}


def test_embedding_only_models_are_skipped(tmp_path: Path, standin: OllamaStandIn, database_url: str) -> None:
    config = validator_config(tmp_path, standin, database_url, models=["nomic-embed-text", "qwen2.5-coder:1.5b"])
    report = validate(config)
    assert [(m.model, m.status, m.reason) for m in report.models] == [
        ("nomic-embed-text:latest", "skipped", "embedding-only model: it does not generate text"),
        ("qwen2.5-coder:1.5b", "ok", "accuracy 100.0% ≥ 80%")]


def test_the_models_loaded_before_are_loaded_again_afterwards(tmp_path: Path, standin: OllamaStandIn,
                                                             database_url: str) -> None:
    from datetime import timedelta

    standin.memory_bytes = VPS  # as Ollama does, the stand-in refuses a load that does not fit beside others
    standin.load("tinyllama:1.1b", expires_in=timedelta(minutes=20))
    config = validator_config(tmp_path, standin, database_url, memory=VPS)
    report = validate(config, models=["qwen2.5-coder:1.5b"])
    assert [m.status for m in report.models] == ["ok"]
    generate = [json.loads(body) for path, body in standin.received if path == "/api/generate"]
    # tinyllama made room for qwen (unloaded), then came back for the time it had left; qwen went
    assert generate[0] == {"model": "tinyllama:1.1b", "keep_alive": 0}
    assert {"model": "qwen2.5-coder:1.5b", "keep_alive": 0} in generate
    assert generate[-1]["model"] == "tinyllama:1.1b" and 1100 < generate[-1]["keep_alive"] <= 1200
    assert loaded(standin) == {"tinyllama:1.1b"}


class Recorder(Progress):
    """Calls a hook after each answered case (the runner's thread), and keeps what it was told."""

    def __init__(self, hook: Any = None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.hook = hook

    def model(self, name: str) -> None:
        self.events.append(("model", name))

    def case(self, model: str, case_id: str, passed: bool | None, error: str | None = None) -> None:
        self.events.append(("case", model, case_id, passed))
        if self.hook is not None:
            self.hook(model, case_id)


def test_ollama_going_away_mid_run_fails_the_run_and_demotes_nothing(tmp_path: Path, standin: OllamaStandIn,
                                                                     database_url: str) -> None:
    def stop_during_the_second_model(model: str, case_id: str) -> None:
        if model == "qwen2.5-coder:1.5b" and case_id == "sum":
            standin.stop()

    config = validator_config(tmp_path, standin, database_url)
    report = validate(config, models=["tinyllama:1.1b", "qwen2.5-coder:1.5b"],
                      progress=Recorder(stop_during_the_second_model))
    assert report.status == "failed" and report.error.startswith("Ollama went away during the run: cannot reach")
    # tinyllama scored 40 % before Ollama went away: still nothing is decided on a failed run
    assert [(m.model, m.status) for m in report.models] == [("tinyllama:1.1b", "failed"),
                                                            ("qwen2.5-coder:1.5b", "failed")]
    assert all(m.reason.startswith("run failed, nothing decided") for m in report.models)
    assert model_status(database_url) == {}
    (run,) = rows(database_url, "SELECT status, error FROM validation_runs")
    assert run["status"] == "failed" and run["error"] == report.error
    assert {r["status"] for r in rows(database_url, "SELECT status FROM model_validation_results")} == {"failed"}


def test_a_model_whose_answers_fail_is_marked_failed_and_the_run_goes_on(tmp_path: Path, standin: OllamaStandIn,
                                                                       database_url: str) -> None:
    class CrashFirst(Recorder):
        def model(self, name: str) -> None:
            standin.faults_by_path["/api/chat"] = "error500" if name == "tinyllama:1.1b" else None

    config = validator_config(tmp_path, standin, database_url)
    report = validate(config, models=["tinyllama:1.1b", "qwen2.5-coder:1.5b"], progress=CrashFirst())
    tiny, qwen = report.models
    assert report.status == "ok"
    assert tiny.status == "failed" and "llama runner process has terminated" in tiny.reason
    assert tiny.reason.endswith("not decided on partial data")
    assert (qwen.status, qwen.accuracy) == ("ok", 1.0)
    assert model_status(database_url) == {}


def test_a_judge_that_answers_garbage_fails_the_judgement_and_the_run_goes_on(
        tmp_path: Path, standin: OllamaStandIn, database_url: str) -> None:
    book(standin).replies["llama3.2:3b"] = "lol, no idea"
    suite = smoke(cases=[{"id": "capital", "prompt": "What is the capital of France?",
                          "expect": {"contains": "Paris", "judge": "Names Paris as the capital."}}])
    config = validator_config(tmp_path, standin, database_url, judge_model="llama3.2:3b")
    report = validate(config, suite, models=["qwen2.5-coder:1.5b"], demote=False)
    (result,) = report.models
    assert report.status == "ok" and (result.status, result.accuracy) == ("ok", 0.0)
    (case,) = rows(database_url, "SELECT verdicts FROM model_validation_cases")
    contains, judge = case["verdicts"]
    assert contains["passed"] is True
    assert judge["passed"] is False and judge["detail"] == "the judge's answer is not a verdict: 'lol, no idea'"
    assert "The capital of France is Paris." in judge["judge_prompt"] and judge["judge_answer"] == "lol, no idea"
    # the answers came first, then the judge: the model under test was not asked while the judge was
    chats = [json.loads(body)["model"] for path, body in standin.received if path == "/api/chat"]
    assert chats == ["qwen2.5-coder:1.5b", "llama3.2:3b"]


def test_the_progress_bar_on_a_terminal_and_plain_lines_otherwise() -> None:
    class Clock:
        now = 100.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    terminal, log = io.StringIO(), io.StringIO()
    bar, lines = ConsoleProgress(terminal, tty=True, clock=clock), ConsoleProgress(log, tty=False, clock=clock)
    for progress in (bar, lines):
        progress.start(10)
        progress.model("qwen2.5-coder:1.5b")
        clock.now += 65
        progress.case("qwen2.5-coder:1.5b", "capital", True)
        progress.case("qwen2.5-coder:1.5b", "sum", False)
        progress.skip("phi4:14b", 5, "does not fit")
        progress.finish()
        clock.now = 100.0
    assert terminal.getvalue().rsplit("\r\x1b[2K", 1)[-1] == \
        "[#########---------------] 2/5 cases  qwen2.5-coder:1.5b  1:05\n"
    assert "\r\x1b[2Kphi4:14b: skipped: does not fit\n" in terminal.getvalue()
    assert log.getvalue().splitlines() == [
        "[0:00] qwen2.5-coder:1.5b: started", "[1:05] 1/10 qwen2.5-coder:1.5b capital pass",
        "[1:05] 2/10 qwen2.5-coder:1.5b sum fail", "[1:05] phi4:14b: skipped: does not fit"]
    assert "\r" not in log.getvalue()


def test_the_demoted_model_is_what_the_model_manager_skips(tmp_path: Path, standin: OllamaStandIn,
                                                           database_url: str) -> None:
    validate(validator_config(tmp_path, standin, database_url), models=["tinyllama:1.1b"])
    with psycopg.connect(database_url) as conn:
        assert list(demoted_models(conn)) == ["tinyllama:1.1b"]
