"""Every request through the gateway becomes one row of history, even across a database outage."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.helpers import wait_for

MODEL = "llama3.2:3b"


@pytest.fixture
def gateway_with_history(make_gateway, database_url: str, tmp_path: Path):
    def make(**flags: object):
        gateway = make_gateway(with_history=True, **{"database.url": database_url, "home": str(tmp_path),
                                                     "cost.prices": {"*": {"input_per_million": 1.0,
                                                                           "output_per_million": 2.0}},
                                                     **flags})
        return gateway
    return make


def rows(database_url: str, query: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()


def flush(gateway) -> None:
    assert gateway.exporter.gateway.history.flush(timeout=20)


def test_a_request_is_recorded_with_its_measurements(gateway_with_history, database_url: str) -> None:
    gateway = gateway_with_history()
    with httpx.stream("POST", gateway.gateway_url + "/api/chat", timeout=30, json={
            "model": MODEL, "messages": [{"role": "user", "content": "why is the sky blue?"}]}) as reply:
        body = reply.read()
    # The row is handed to the writer after the last byte went out: wait for it to be written, not just flushed.
    wait_for(lambda: gateway.exporter.gateway.history.flush(timeout=5)
             and rows(database_url, "SELECT count(*) FROM requests")[0][0] >= 1, what="the request's row")
    ((model, endpoint, status, tokens_in, tokens_out, ttft, duration, tps, cost, prompt, response, client),) = rows(
        database_url, "SELECT model, endpoint, status, input_tokens, output_tokens, ttft_seconds, duration_seconds,"
                      " tokens_per_second, cost, prompt_text, response_text, client_hash FROM requests")
    assert (model, endpoint, status) == (MODEL, "/api/chat", 200)
    assert tokens_in > 0 and tokens_out > 0
    assert 0 < ttft <= duration and tps > 0
    assert cost == pytest.approx((tokens_in * 1.0 + tokens_out * 2.0) / 1e6)
    assert "why is the sky blue?" in prompt
    assert response and response.split()[0].encode() in body
    assert client and "127.0.0.1" not in client  # hashed, never the address itself


def test_texts_are_not_kept_when_store_text_is_off(gateway_with_history, database_url: str) -> None:
    gateway = gateway_with_history(**{"history.store_text": "false"})
    httpx.post(gateway.gateway_url + "/api/generate", json={"model": MODEL, "prompt": "secret", "stream": False})
    flush(gateway)
    assert rows(database_url, "SELECT prompt_text, response_text, prompt_hash IS NOT NULL FROM requests") == [
        (None, None, True)]


def test_breaker_transitions_are_recorded(gateway_with_history, database_url: str, ollama) -> None:
    gateway = gateway_with_history(**{"gateway.breaker.minimum_calls": 2})
    ollama.fault = "error500"
    for _ in range(2):
        httpx.post(gateway.gateway_url + "/api/generate", json={"model": MODEL, "prompt": "x", "stream": False})
    flush(gateway)
    ((breaker, from_state, to_state, rate, calls),) = rows(
        database_url, "SELECT breaker, from_state, to_state, failure_rate, window_calls FROM circuit_breaker_events")
    assert (breaker, from_state, to_state, rate, calls) == (MODEL, "closed", "open", 1.0, 2)


@pytest.mark.slow
def test_a_database_outage_loses_no_request(gateway_with_history, database_url: str,
                                            postgres_server_url: str) -> None:
    gateway = gateway_with_history()
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    httpx.post(gateway.gateway_url + "/api/generate", json={"model": MODEL, "prompt": "before", "stream": False})
    flush(gateway)
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        for n in range(40):  # served normally while the history cannot be written
            reply = httpx.post(gateway.gateway_url + "/api/generate", timeout=30,
                               json={"model": MODEL, "prompt": f"during {n}", "stream": False})
            assert reply.status_code == 200
        time.sleep(2)
        assert gateway.value("singularity_history_queue_rows") >= 40
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    flush(gateway)
    counts = rows(database_url, "SELECT count(*), count(DISTINCT id) FROM requests")
    assert counts == [(41, 41)]
    assert gateway.value("singularity_history_queue_rows") == 0


def test_per_minute_rollups_reach_real_time_metrics(gateway_with_history, database_url: str) -> None:
    gateway = gateway_with_history()
    for _ in range(3):
        httpx.post(gateway.gateway_url + "/api/generate", json={"model": MODEL, "prompt": "x", "stream": False})
    gateway.__exit__(None, None, None)  # stopping closes the minute in progress and flushes it
    ((model, requests, tokens_per_second, cost_per_response),) = rows(
        database_url, "SELECT model, requests, tokens_per_second, cost_per_response FROM real_time_metrics")
    assert (model, requests) == (MODEL, 3)
    assert tokens_per_second > 0 and cost_per_response > 0
