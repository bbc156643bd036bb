"""The per-model circuit breaker seen from a client of the gateway."""

from __future__ import annotations

import httpx

from tests.helpers import FakeClock

MODEL = "llama3.2:3b"
POLICY = {"gateway.breaker.minimum_calls": 3, "gateway.breaker.open_seconds": 1,
          "gateway.breaker.half_open_calls": 2}


def generate(gateway, model: str = MODEL, **extra: object) -> httpx.Response:
    return httpx.post(gateway.gateway_url + "/api/generate", timeout=30,
                      json={"model": model, "prompt": "x", "stream": False, **extra})


def with_clock(gateway) -> FakeClock:
    """The gateway's breakers on a clock the test moves (set before the first request creates a breaker)."""
    clock = FakeClock()
    gateway.exporter.gateway.breakers.clock = clock
    return clock


def state(gateway, model: str = MODEL) -> str:
    text = gateway.scrape()
    return next(line.split('state="')[1].split('"')[0] for line in text.splitlines()
                if line.startswith(f'llm_circuit_breaker_state{{breaker="{model}"') and line.endswith(" 1.0"))


def test_opens_answers_503_fast_then_half_opens_and_closes(make_gateway, ollama) -> None:
    gateway = make_gateway(**POLICY)
    clock = with_clock(gateway)
    ollama.fault = "error500"
    assert [generate(gateway).status_code for _ in range(3)] == [500, 500, 500]
    assert state(gateway) == "open"

    calls = ollama.calls["/api/generate"]
    refused = generate(gateway)  # how fast it answers: bench/gateway.py, "refused by an open breaker"
    assert refused.status_code == 503
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    assert MODEL in refused.json()["error"] and "retry in" in refused.json()["error"]
    assert ollama.calls["/api/generate"] == calls, "an open breaker must not reach Ollama"

    other_model = generate(gateway, "qwen2.5-coder:1.5b")
    assert other_model.status_code == 500, "each model has its own breaker"

    clock.advance(1.1)
    ollama.fault = None
    assert state(gateway) == "half_open"
    assert [generate(gateway).status_code for _ in range(2)] == [200, 200]
    assert state(gateway) == "closed"
    text = gateway.scrape()
    for edge in ('from_state="closed",to_state="open"', 'from_state="open",to_state="half_open"',
                 'from_state="half_open",to_state="closed"'):
        assert f'llm_circuit_breaker_transitions_total{{breaker="{MODEL}",{edge}}} 1.0' in text


def test_a_failed_probe_opens_it_again(make_gateway, ollama) -> None:
    gateway = make_gateway(**POLICY)
    clock = with_clock(gateway)
    ollama.fault = "error500"
    for _ in range(3):
        generate(gateway)
    clock.advance(1.1)
    assert [generate(gateway).status_code for _ in range(2)] == [500, 500]  # both probes fail
    assert state(gateway) == "open"
    assert generate(gateway).status_code == 503


def test_a_storm_of_client_errors_leaves_it_closed(make_gateway, ollama) -> None:
    gateway = make_gateway(**POLICY)
    statuses = {generate(gateway, keep_alive="300").status_code for _ in range(20)}
    assert statuses == {400}
    assert state(gateway) == "closed"
    assert generate(gateway).status_code == 200


def test_ollama_down_opens_the_breaker(make_gateway, ollama) -> None:
    gateway = make_gateway(**POLICY)
    generate(gateway)
    ollama.stop()
    # 1 success + 2 connection failures = 67 % over 3 calls: open from the next request on.
    assert [generate(gateway).status_code for _ in range(3)] == [502, 502, 503]


def test_breakers_command_shows_the_running_gateway(make_gateway, ollama) -> None:
    import json
    import os
    import subprocess
    import sys

    gateway = make_gateway(**POLICY)
    with_clock(gateway)  # stays open however long the two subprocesses take to start
    ollama.fault = "error500"
    for _ in range(3):
        generate(gateway)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SINGULARITY_", "OLLAMA_"))}
    listen = gateway.exporter.config.exporter.metrics_listen
    result = subprocess.run([sys.executable, "-m", "singularity_ops.cli", "breakers", "--json",
                             "--metrics-listen", listen], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["breakers"]
    assert (row["name"], row["state"], row["failure_rate"]) == (MODEL, "open", 1.0)
    table = subprocess.run([sys.executable, "-m", "singularity_ops.cli", "breakers", "--metrics-listen", listen],
                           env=env, capture_output=True, text=True, timeout=30).stdout
    assert table.splitlines()[0].split()[:2] == ["BREAKER", "STATE"]
    assert MODEL in table and "open" in table
