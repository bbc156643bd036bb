"""Managed prompts through the running gateway: every prompt listed, nothing kept or changed until one is enabled,
feedback by the request id every response carries, the regenerate and conversation heuristics, and the sticky
share of clients that gets an experiment's candidate, as seen by Ollama."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest

from tests.exporter.gateway.prompts.support import PID, SYSTEM, upstream_systems
from tests.helpers import series, wait_for


def test_every_system_prompt_is_listed_and_nothing_kept_until_it_is_enabled(stack, ollama) -> None:
    reply = stack.chat("10.0.0.1", "When are you open?")
    assert reply.status_code == 200 and "X-Singularity-Variant" not in reply.headers
    stack.chat("10.0.0.2", "no system prompt here", system=None)
    listed = wait_for(lambda: stack.cli("list", "--json")[1]["prompts"], what="the prompt listed")
    (prompt,) = listed
    assert (prompt["id"], prompt["short_id"], prompt["enabled"], prompt["request_count"]) == (PID, PID[:12], False, 1)
    assert prompt["models"] == ["llama3.2:3b"] and prompt["preview"] == SYSTEM[:60] and "original_text" not in prompt
    assert upstream_systems(ollama) == [SYSTEM, None]  # passed on unchanged
    assert stack.rows("SELECT count(*), bool_and(original_text IS NULL) FROM prompts") == [(1, True)]
    assert stack.rows("SELECT count(*) FROM prompt_dialogues") == [(0,)]

    stack.enable()
    reply = stack.chat("10.0.0.1", "Do you ship abroad?")
    stack.written(1)
    ((messages, answer, model, status, outcome),) = stack.rows(
        "SELECT messages, answer, model, status, outcome FROM prompt_dialogues WHERE request_id = %s",
        uuid.UUID(reply.headers["X-Request-Id"]))
    assert messages[-1] == {"role": "user", "content": "Do you ship abroad?"} and answer == reply.json()[
        "message"]["content"]
    assert (model, status, outcome) == ("llama3.2:3b", 200, "unknown")
    wait_for(lambda: stack.rows("SELECT original_text FROM prompts") == [(SYSTEM,)], what="the text kept once enabled")
    code, text = stack.cli("list")
    assert code == 0 and "support" in text and PID[:12] in text


def test_feedback_by_request_id_is_recorded_for_the_client_that_asked(stack) -> None:
    stack.chat("10.0.0.9", "first sight")
    stack.enable()
    reply = stack.chat("10.0.0.1", "When are you open?")
    request_id = reply.headers["X-Request-Id"]
    assert stack.feedback("10.0.0.2", request_id, 1).status_code == 403
    answer = stack.feedback("10.0.0.1", request_id, 1)
    assert answer.status_code == 200
    assert answer.json() == {"request_id": request_id, "prompt": "support", "outcome": "success", "rating": 1.0}
    stack.written(1)
    wait_for(lambda: stack.rows("SELECT outcome, outcome_reason, rating FROM prompt_dialogues WHERE request_id = %s",
                                uuid.UUID(request_id)) == [("success", "feedback", 1.0)], what="feedback written")
    assert stack.feedback("10.0.0.1", request_id, 0.2).json()["outcome"] == "failure"  # a later rating replaces it
    assert stack.feedback("10.0.0.1", str(uuid.uuid4()), 1).status_code == 404
    assert stack.feedback("10.0.0.1", request_id, 5).status_code == 400
    assert "rating" in stack.feedback("10.0.0.1", request_id, "great").json()["error"]
    assert httpx.get(stack.url + "/singularity/v1/feedback").status_code == 405
    scraped = series(stack.gateway.scrape(), "llm_prompt_outcomes_total")
    assert scraped == {'{outcome="success",prompt="support"}': 1.0, '{outcome="failure",prompt="support"}': 1.0}


def test_asking_the_same_again_is_a_regenerate_and_going_on_a_weak_success(stack) -> None:
    stack.chat("10.0.0.9", "first sight")
    stack.enable()
    first = stack.chat("10.0.0.1", "Why was I charged twice?").headers["X-Request-Id"]
    second = stack.chat("10.0.0.1", "Why was I charged twice?").headers["X-Request-Id"]
    third = stack.chat("10.0.0.1", "Why was I charged twice?", "Thanks. Can I get a refund?").headers["X-Request-Id"]
    stack.written(3)
    wait_for(lambda: dict(stack.rows("SELECT request_id::text, outcome_reason FROM prompt_dialogues")) == {
        first: "regenerate", second: "continued", third: None}, what="the heuristics written")
    assert stack.rows("SELECT outcome FROM prompt_dialogues WHERE request_id::text = %s", first) == [("failure",)]
    assert stack.rows("SELECT outcome FROM prompt_dialogues WHERE request_id::text = %s", second) == [
        ("weak_success",)]


@pytest.mark.slow
def test_a_sticky_share_of_clients_gets_the_candidate_as_ollama_sees_it(stack, ollama) -> None:
    stack.chat("10.0.0.9", "first sight")
    stack.enable()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO prompt_candidates (prompt_id, created_at, text, offline_score) "
                     "VALUES (%s, now(), 'Be brief and friendly.', 8)", (PID,))
    code, started = stack.cli("experiment", "start", "support", "--share", "0.3", "--json")
    assert code == 0 and started["share"] == 0.3 and started["done"] == "started"
    stack.synced(lambda managed: managed[PID].experiment is not None, "the experiment reaching the gateway")
    before = len(upstream_systems(ollama))
    clients = [f"10.2.{i // 250}.{i % 250}" for i in range(400)]
    variants = {c: stack.chat(c, "hello").headers["X-Singularity-Variant"] for c in clients}
    sent = upstream_systems(ollama)[before:]
    assert [s == "Be brief and friendly." for s in sent] == [variants[c] == "candidate" for c in clients]
    share = sum(v == "candidate" for v in variants.values()) / len(clients)
    assert 0.23 < share < 0.37  # binomial sd 0.023 at n = 400
    assert all(stack.chat(c, "again").headers["X-Singularity-Variant"] == variants[c] for c in clients[:40])
    scraped = series(stack.gateway.scrape(), "llm_prompt_experiment_requests_total")
    assert sum(scraped.values()) == 440 and set(scraped) == {'{prompt="support",variant="candidate"}',
                                                             '{prompt="support",variant="control"}'}
    assert series(stack.gateway.scrape(), "llm_prompt_experiment_share") == {'{prompt="support"}': 0.3}


def test_every_response_carries_a_request_id_and_feedback_needs_the_prompt_layer(make_gateway) -> None:
    gateway = make_gateway()  # no history database: no prompt layer
    first = httpx.get(gateway.gateway_url + "/api/tags")
    second = httpx.post(gateway.gateway_url + "/api/generate", json={"model": "nope", "prompt": "x"})
    ids = {first.headers["X-Request-Id"], second.headers["X-Request-Id"]}
    assert len(ids) == 2 and all(uuid.UUID(i) for i in ids)
    reply = httpx.post(gateway.gateway_url + "/singularity/v1/feedback", json={"request_id": first.headers[
        "X-Request-Id"], "rating": 1})
    assert reply.status_code == 404 and "prompt_optimizer" in reply.json()["error"]
