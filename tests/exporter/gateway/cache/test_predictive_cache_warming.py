"""Predictive cache warming, end to end (the seed's feature 5): the gateway's semantic cache in front of the Ollama
stand-in on a PostgreSQL with pgvector — hits, semantic hits, misses, bypasses, clients kept apart, replays the
official clients cannot tell from Ollama's answers, entries that survive a restart and die with a re-pull, a
database outage that costs nothing but the cache — and the warmer's warms, carried out only when it is safe."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import ollama as ollama_client
import openai
import psycopg
import pytest

from singularity_ops.controllers.cache_warmer.controller import CacheWarmer
from singularity_ops.store import Database
from tests.exporter.gateway.cache.support import HEADER, MODEL, bag_of_words, build
from tests.exporter.gateway.recording import recording_ollama
from tests.helpers import series, wait_for
from tests.standins.models import REAL_MODELS

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
pytestmark = pytest.mark.slow


@pytest.fixture
def gateways(ollama, vector_database_url: str):
    started = []

    def make(**flags: Any):
        running = build(ollama, vector_database_url, **flags)
        started.append(running)
        return running

    yield make
    for running in started:
        running.__exit__(None, None, None)


def chat(url: str, messages: list[dict] = QUESTION, headers: dict[str, str] | None = None, **extra: Any) -> \
        httpx.Response:
    return httpx.post(url + "/api/chat", json={"model": MODEL, "messages": messages, "stream": False, **extra},
                      headers=headers or {}, timeout=30)


def stored(running) -> None:
    """Until the answers stored so far are in the database (the store is off the request path)."""
    wait_for(lambda: running.value("llm_cache_stored_total", f'{{model="{MODEL}"}}') >= 1, what="the store")


def test_a_repeated_question_is_answered_from_the_cache_and_says_so(gateways, ollama) -> None:
    gateway = gateways()
    first = chat(gateway.gateway_url)
    assert first.status_code == 200 and first.headers[HEADER] == "miss"
    stored(gateway)
    calls = ollama.calls["/api/chat"]
    again = chat(gateway.gateway_url)
    assert again.headers[HEADER] == "hit" and ollama.calls["/api/chat"] == calls
    assert again.json()["message"] == first.json()["message"]
    assert gateway.value("llm_cache_requests_total", f'{{model="{MODEL}",result="hit"}}') == 1
    assert gateway.value("llm_cache_saved_seconds_total", f'{{model="{MODEL}"}}') > 0
    wait_for(lambda: gateway.value("llm_cache_entries", f'{{model="{MODEL}"}}') == 1, what="the entry counted")


def _native(part: Any) -> dict[str, Any]:
    data = part.model_dump()
    return {k: v for k, v in data.items() if k not in ("created_at", "total_duration", "load_duration",
                                                      "prompt_eval_duration", "eval_duration", "context")}


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(p["response"] if p.get("response") is not None else p["message"]["content"] for p in parts)


def test_the_caches_embedding_calls_carry_upstream_headers(vector_database_url: str) -> None:
    """An Ollama behind an auth proxy: the cache's own /api/embed calls send ``upstream.headers`` as the gateway's
    forwarded requests do."""
    with contextlib.contextmanager(recording_ollama)() as recording:
        running = build(recording, vector_database_url, **{"upstream.headers": {"Authorization": "Bearer upstream"}})
        try:
            assert chat(running.gateway_url).headers[HEADER] == "miss"
        finally:
            running.__exit__(None, None, None)
    embeds = recording.headers_of("/api/embed")
    assert embeds and all(headers.get("Authorization") == "Bearer upstream" for headers in embeds)


def test_the_ollama_client_cannot_tell_a_hit_from_a_miss_streamed_or_not(gateways) -> None:
    gateway = gateways()
    client = ollama_client.Client(host=gateway.gateway_url)
    for stream in (False, True):  # other questions each time: each pair is a real miss, then a hit
        asks = [("chat", {"messages": [{"role": "user", "content": f"What is the capital of France? {stream}"}]}),
                ("generate", {"prompt": f"Why is the sky blue? {stream}"})]
        for method, arguments in asks:
            answers = []
            for _ in range(2):  # a miss, then (once stored) a hit
                got = getattr(client, method)(model=MODEL, stream=stream, **arguments)
                answers.append([_native(p) for p in got] if stream else [_native(got)])
                wait_for(lambda: gateway.value("llm_cache_requests_total", f'{{model="{MODEL}",result="miss"}}')
                         <= gateway.value("llm_cache_stored_total", f'{{model="{MODEL}"}}'), what="the store")
            miss, hit = answers
            assert _text(hit) == _text(miss) and _text(miss)
            assert hit[-1] == miss[-1]  # the final object: done, done_reason, counts, as Ollama sent them
    assert gateway.value("llm_cache_requests_total", f'{{model="{MODEL}",result="hit"}}') == 4


def test_the_openai_client_cannot_tell_a_hit_from_a_miss_streamed_or_not(gateways) -> None:
    gateway = gateways()
    client = openai.OpenAI(base_url=gateway.gateway_url + "/v1", api_key="unused", max_retries=0)
    whole = [client.chat.completions.create(model=MODEL, messages=QUESTION) for _ in range(2)]
    assert [w.choices[0].message.content for w in whole[:1]] == [whole[1].choices[0].message.content]
    assert whole[0].usage == whole[1].usage and whole[0].choices[0].finish_reason == whole[1].choices[0].finish_reason
    streams = []
    for _ in range(2):
        chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True,
                                                     stream_options={"include_usage": True}))
        streams.append(("".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                        [c.choices[0].finish_reason for c in chunks if c.choices][-1], chunks[-1].usage))
    assert streams[0] == streams[1] and streams[0][0]
    with httpx.stream("POST", gateway.gateway_url + "/v1/chat/completions",
                      json={"model": MODEL, "messages": QUESTION, "stream": True}) as raw:
        body = raw.read()
        assert raw.headers[HEADER] == "hit" and raw.headers["content-type"] == "text/event-stream"
    assert body.endswith(b"data: [DONE]\n\n") and b'"usage"' not in body  # not asked for: not sent


def test_a_reworded_question_is_a_semantic_hit_and_a_different_one_is_a_miss(gateways, ollama) -> None:
    ollama.embedder = bag_of_words
    gateway = gateways()
    chat(gateway.gateway_url)
    stored(gateway)
    reworded = chat(gateway.gateway_url, [{"role": "user", "content": "what is the capital of france"}])
    assert reworded.headers[HEADER] == "semantic"
    assert float(reworded.headers["X-Singularity-Cache-Similarity"]) >= 0.73
    other = chat(gateway.gateway_url, [{"role": "user", "content": "What is the capital of Spain?"}])
    assert other.headers[HEADER] == "miss"  # close in embedding, another content word: never served
    elsewhere = chat(gateway.gateway_url, [{"role": "system", "content": "Answer in French."},
                                           {"role": "user", "content": "what is the capital of france"}])
    assert elsewhere.headers[HEADER] == "miss"  # another system prompt: another scope


def test_no_cache_and_no_store_and_uncacheable_requests_bypass(gateways) -> None:
    gateway = gateways()
    fresh = chat(gateway.gateway_url, headers={"Cache-Control": "no-store"})
    assert fresh.headers[HEADER] == "bypass"
    assert chat(gateway.gateway_url, headers={"Cache-Control": "no-cache"}).headers[HEADER] == "bypass"
    stored(gateway)  # no-cache still stores the fresh answer; no-store did not
    assert gateway.value("llm_cache_stored_total", f'{{model="{MODEL}"}}') == 1
    assert chat(gateway.gateway_url).headers[HEADER] == "hit"
    tools = chat(gateway.gateway_url, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert tools.headers[HEADER] == "bypass"
    embed = httpx.post(gateway.gateway_url + "/api/embed", json={"model": "nomic-embed-text", "input": "x"})
    assert embed.headers[HEADER] == "bypass"


def test_entries_never_cross_clients_unless_the_cache_is_shared(gateways) -> None:
    for shared, expected in ((False, "miss"), (True, "hit")):
        gateway = gateways(**{"gateway.trusted_proxies": "127.0.0.1/32", "cache.shared": shared,
                              "cache.models": ["qwen2.5-coder:1.5b"] if shared else [MODEL]})
        model = "qwen2.5-coder:1.5b" if shared else MODEL
        chat(gateway.gateway_url, model=model, headers={"X-Forwarded-For": "10.0.0.1"})
        wait_for(lambda g=gateway, m=model: g.value("llm_cache_stored_total", f'{{model="{m}"}}') >= 1)
        other = chat(gateway.gateway_url, model=model, headers={"X-Forwarded-For": "10.0.0.2"})
        assert other.headers[HEADER] == expected, shared


def test_entries_survive_a_restart_and_die_with_a_repull(gateways, ollama, vector_database_url: str) -> None:
    first = gateways()
    chat(first.gateway_url)
    stored(first)
    first.__exit__(None, None, None)
    second = gateways()
    assert chat(second.gateway_url).headers[HEADER] == "hit"
    ollama._models[MODEL] = replace(REAL_MODELS[MODEL], digest="f" * 64)  # `ollama pull` brought a new version
    cache = second.exporter.gateway.cache_service
    wait_for(lambda: cache.digest_of(MODEL) == "f" * 64)
    assert chat(second.gateway_url).headers[HEADER] == "miss"
    with psycopg.connect(vector_database_url) as conn:
        wait_for(lambda: conn.execute("SELECT count(*) FROM cache_entries WHERE digest <> %s",
                                      ("f" * 64,)).fetchone()[0] == 0, what="the old digest's entries deleted")


def test_a_database_outage_costs_the_cache_and_nothing_else(gateways, ollama, vector_database_url: str) -> None:
    gateway = gateways(**{"cache.lookup_timeout_seconds": 0.5})
    chat(gateway.gateway_url)
    stored(gateway)
    cache = gateway.exporter.gateway.cache_service
    cache._database_url = lambda: "postgresql://nobody@127.0.0.1:1/gone?connect_timeout=1"
    with psycopg.connect(vector_database_url, autocommit=True) as conn:  # the server goes away under the gateway
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND pid <> pg_backend_pid()")
    answers = [chat(gateway.gateway_url) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert [a.headers[HEADER] for a in answers] == ["bypass"] * 3
    assert sum(series(gateway.scrape(), "llm_cache_errors_total").values()) >= 1
    assert gateway.value("llm_cache_up") == 0


def test_a_server_without_pgvector_is_named_and_the_gateway_serves_without_the_cache(ollama, vector_database_url,
                                                                                     caplog) -> None:
    def missing(exporter) -> None:
        exporter.gateway.cache_service.store.extension = "vector_not_installed"

    gateway = build(ollama, vector_database_url, prepare=missing)
    try:
        answer = chat(gateway.gateway_url)
        assert answer.status_code == 200 and answer.headers[HEADER] == "bypass"
        assert gateway.value("llm_cache_up") == 0
        assert any("extension 'vector_not_installed' (pgvector)" in r.getMessage() for r in caplog.records)
    finally:
        gateway.__exit__(None, None, None)


# --- the warmer's warms, carried out by the gateway ------------------------------------------------------------


def warmer(tmp_path, ollama, database_url: str, **warmer_settings: Any) -> CacheWarmer:
    from tests.controllers.cache_warmer.support import cache_config

    now = datetime.now(UTC)
    fires = now + timedelta(minutes=5)  # the briefing is asked in five minutes: inside the warmer's window
    entry = {"name": "briefing", "cron": f"{fires.minute} {fires.hour} * * *", "model": MODEL,
             "prompt": "Summarise the overnight alerts.", "expected_requests": 4}
    config = cache_config(tmp_path, ollama.host, database_url, cache={"shared": True},
                          warmer={"calendar": [entry], "idle_seconds": 0.3, **warmer_settings})
    return CacheWarmer(config, database=Database(database_url), clock=lambda: now)


def test_a_calendar_warm_is_made_when_the_gateway_is_idle_and_the_morning_question_is_a_hit(
        gateways, ollama, vector_database_url: str, tmp_path) -> None:
    ollama.load(MODEL)
    gateway = gateways(**{"cache.shared": True, "cache.warmer.idle_seconds": 0.3})
    planner = warmer(tmp_path, ollama, vector_database_url)
    assert [p.prompt for p in planner.queue(planner.clock())] == ["Summarise the overnight alerts."]
    planner.close()
    wait_for(lambda: gateway.value("llm_cache_warmed_total", f'{{model="{MODEL}",reason="calendar"}}') == 1,
             what="the warm")
    asked = chat(gateway.gateway_url, [{"role": "user", "content": "Summarise the overnight alerts."}])
    assert asked.headers[HEADER] == "hit"
    assert gateway.value("llm_cache_warm_hits_total", f'{{model="{MODEL}"}}') == 1
    with psycopg.connect(vector_database_url) as conn:
        row = conn.execute("SELECT status, reason, expected_requests, tokens FROM cache_warms").fetchone()
    assert row[:3] == ("warmed", "calendar", 4.0) and row[3] > 0


def test_no_warm_while_a_user_request_is_in_flight(gateways, ollama, vector_database_url: str, tmp_path) -> None:
    ollama.load(MODEL)
    gateway = gateways(**{"cache.shared": True, "cache.warmer.idle_seconds": 0.3})
    ollama.token_delay = 0.4  # a slow answer: about 4 s in flight
    slow = threading.Thread(target=chat, args=(gateway.gateway_url, [{"role": "user", "content": "Slow one"}]))
    slow.start()
    cache = gateway.exporter.gateway.cache_service.cache
    wait_for(lambda: cache.in_flight == 1)
    planner = warmer(tmp_path, ollama, vector_database_url)
    planner.queue(planner.clock())
    planner.close()
    with psycopg.connect(vector_database_url, autocommit=True) as conn:
        while slow.is_alive():  # every look while the user waits: the warm is still queued
            assert conn.execute("SELECT status FROM cache_warms").fetchone()[0] == "queued"
            slow.join(0.2)
        ollama.token_delay = 0.0
        wait_for(lambda: conn.execute("SELECT status FROM cache_warms").fetchone()[0] == "warmed",
                 what="the warm once idle")


def test_a_database_away_at_start_is_tried_again_and_the_cache_comes_up_when_it_answers(
        ollama, vector_database_url: str) -> None:
    def away(exporter) -> None:
        exporter.gateway.cache_service._database_url = lambda: "postgresql://nobody@127.0.0.1:1/gone?connect_timeout=1"

    gateway = build(ollama, vector_database_url, prepare=away)
    try:
        assert chat(gateway.gateway_url).headers[HEADER] == "bypass"
        cache = gateway.exporter.gateway.cache_service
        cache._database_url = lambda: vector_database_url
        wait_for(lambda: cache.cache.ready and not cache.cache.is_down(), timeout=60, what="the cache up")
        chat(gateway.gateway_url)
        stored(gateway)
        assert chat(gateway.gateway_url).headers[HEADER] == "hit"
    finally:
        gateway.__exit__(None, None, None)
