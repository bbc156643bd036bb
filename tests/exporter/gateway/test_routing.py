"""Quality-aware routing: a virtual model name goes to its best candidate that is not demoted and whose breaker is
not open, a loaded one when the scores are close; the response names the route taken, metrics the real model."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from singularity_ops.exporter.gateway.routing import Candidate, RouteTable, rank
from singularity_ops.migrate import migrate

ROUTE = ["phi4:14b", "llama3.2:3b", "qwen2.5-coder:1.5b"]


def seed_results(database_url: str, scores: dict[str, float], demoted: dict[str, str] | None = None,
                 run_status: str = "ok") -> None:
    """One finished validation run with these quality scores, and these models demoted."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        (run_id,) = conn.execute(
            "INSERT INTO validation_runs (started_at, trigger, suite_name, suite_hash, status, demote) "
            "VALUES (now(), 'manual', 'smoke', 'h', %s, true) RETURNING id", (run_status,)).fetchone()
        for model, score in scores.items():
            conn.execute("INSERT INTO model_validation_results (run_id, at, model, suite_hash, status, accuracy, "
                         "cases, passed, quality_score) VALUES (%s, %s, %s, 'h', 'ok', %s, 5, 5, %s)",
                         (run_id, datetime.now(UTC), model, score, score))
        for model, reason in (demoted or {}).items():
            conn.execute("INSERT INTO model_status (model, status, reason) VALUES (%s, 'demoted', %s)",
                         (model, reason))


# --- the rule ---------------------------------------------------------------------------------------------------


def test_the_best_score_wins_and_unscored_candidates_come_after_in_listed_order() -> None:
    choice = rank("coder", [Candidate("a:1"), Candidate("b:1", score=0.7), Candidate("c:1"),
                            Candidate("d:1", score=0.9)], 0.05)
    assert (choice.model, choice.order) == ("d:1", ("d:1", "b:1", "a:1", "c:1"))
    assert choice.why == "best quality 0.900"


def test_without_any_score_the_first_listed_candidate_is_chosen() -> None:
    choice = rank("coder", [Candidate("a:1"), Candidate("b:1")], 0.05)
    assert (choice.model, choice.why) == ("a:1", "first listed; no candidate has a validation score")


def test_demoted_missing_and_open_candidates_are_skipped_and_named() -> None:
    choice = rank("coder", [Candidate("a:1", demoted="validation run 3: accuracy 40.0% < 80%", score=0.99),
                            Candidate("b:1", installed=False), Candidate("c:1", breaker_open=True, score=0.9),
                            Candidate("d:1", score=0.5)], 0.05)
    assert choice.model == "d:1" and choice.order == ("d:1",)
    assert choice.why == ("best quality 0.500; skipped a:1: demoted (validation run 3: accuracy 40.0% < 80%), "
                          "b:1: not installed, c:1: breaker open")


@pytest.mark.parametrize(("loaded_score", "chosen"), [(0.85, "loaded:1"), (0.849, "best:1")])
def test_a_loaded_candidate_within_the_margin_of_the_best_goes_first(loaded_score: float, chosen: str) -> None:
    choice = rank("coder", [Candidate("best:1", score=0.9), Candidate("loaded:1", score=loaded_score, loaded=True)],
                  0.05)
    assert choice.model == chosen
    if chosen == "loaded:1":
        assert choice.why == "loaded, quality 0.850 within 0.05 of best:1's 0.900 (not loaded)"
        assert choice.order == ("loaded:1", "best:1")  # the best one is next, should the loaded one's breaker open


def test_no_candidate_left_is_a_choice_of_none_with_the_reasons() -> None:
    choice = rank("coder", [Candidate("a:1", installed=False)], 0.05)
    assert (choice.model, choice.why) == (None, "skipped a:1: not installed")
    table = RouteTable({"coder": ["a:1"]}, 0.05, None)
    table._choices = {"coder": choice}
    assert table.resolve("coder") == (None, "route coder has no available model: skipped a:1: not installed")


# --- through the gateway ---------------------------------------------------------------------------------------


@pytest.fixture
def routed(make_gateway, ollama, database_url: str, tmp_path):
    seed_results(database_url, {"llama3.2:3b": 0.95, "qwen2.5-coder:1.5b": 0.90, "phi4:14b": 0.99},
                 demoted={"phi4:14b": "validation run 1: accuracy 50.0% < 80%"})

    def make(**flags: object):
        gateway = make_gateway(with_history=True, **{"database.url": database_url, "home": str(tmp_path),
                                                     "gateway.routes": {"coder": ROUTE}, **flags})
        gateway.exporter.gateway.refresh()  # as the gateway does every few seconds
        return gateway
    return make


def chat(gateway, model: str = "coder", stream: bool = False) -> httpx.Response:
    return httpx.post(gateway.gateway_url + "/api/chat", timeout=30, json={
        "model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]})


def test_a_route_name_goes_to_its_best_candidate_and_says_so(routed, ollama, database_url: str) -> None:
    gateway = routed()
    for stream in (False, True):
        reply = chat(gateway, stream=stream)
        assert reply.status_code == 200
        assert reply.headers["X-Singularity-Route"] == "coder -> llama3.2:3b"
    forwarded = [json.loads(body)["model"] for path, body in ollama.received if path == "/api/chat"]
    assert forwarded == ["llama3.2:3b", "llama3.2:3b"]
    scraped = gateway.scrape()
    assert 'llm_requests_total{endpoint="/api/chat",model="llama3.2:3b",status="200"} 2.0' in scraped
    assert 'model="coder"' not in scraped
    assert "X-Singularity-Route" not in chat(gateway, model="qwen2.5-coder:1.5b").headers  # a plain model name
    assert gateway.exporter.gateway.history.flush(timeout=20)
    with psycopg.connect(database_url) as conn:  # the history too: the real model, never the route's name
        models = [m for (m,) in conn.execute("SELECT model FROM requests ORDER BY at").fetchall()]
    assert models == ["llama3.2:3b", "llama3.2:3b", "qwen2.5-coder:1.5b"]


def test_a_loaded_candidate_is_preferred_when_the_scores_are_close(routed, ollama) -> None:
    ollama.load("qwen2.5-coder:1.5b")
    gateway = routed()
    assert chat(gateway).headers["X-Singularity-Route"] == "coder -> qwen2.5-coder:1.5b"


def test_a_candidate_whose_breaker_opened_is_skipped_at_once(routed, ollama) -> None:
    gateway = routed(**{"gateway.breaker.minimum_calls": 2})
    ollama.faults_by_path["/api/chat"] = "error500"
    assert [chat(gateway).status_code for _ in range(2)] == [500, 500]  # both went to llama3.2:3b and failed
    ollama.faults_by_path["/api/chat"] = None
    reply = chat(gateway)  # no refresh needed: breakers are looked at per request
    assert reply.status_code == 200 and reply.headers["X-Singularity-Route"] == "coder -> qwen2.5-coder:1.5b"


def test_a_route_with_no_available_candidate_is_refused(routed, ollama) -> None:
    gateway = routed(**{"gateway.routes": {"coder": ["phi4:14b", "mistral:7b"]}})
    reply = chat(gateway)
    assert reply.status_code == 503
    assert reply.json()["error"] == ("route coder has no available model: skipped phi4:14b: demoted (validation run "
                                     "1: accuracy 50.0% < 80%), mistral:7b: not installed")
    assert gateway.value("singularity_gateway_rejected_requests_total", '{reason="no_route"}') == 1


def test_the_model_lists_name_the_routes_too(routed) -> None:
    gateway = routed()
    tags = httpx.get(gateway.gateway_url + "/api/tags").json()["models"]
    entries = {m["name"]: m for m in tags}
    assert entries["coder"]["model"] == "coder"
    assert entries["coder"]["digest"] == entries["llama3.2:3b"]["digest"]  # shown as its current choice
    models = httpx.get(gateway.gateway_url + "/v1/models").json()["data"]
    assert {"id": "coder", "object": "model", "owned_by": "singularity-ops"}.items() <= \
        next(m for m in models if m["id"] == "coder").items()
    assert {m["id"] for m in models} >= {"coder", "llama3.2:3b"}


def test_without_routes_nothing_changes(make_gateway) -> None:
    gateway = make_gateway()
    assert gateway.exporter.gateway.routes is None
    assert "coder" not in {m["name"] for m in httpx.get(gateway.gateway_url + "/api/tags").json()["models"]}
