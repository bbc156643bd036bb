"""The gateway is Ollama to its clients: every answer passes unchanged, and every request is measured."""

from __future__ import annotations

import json
import socket
import time

import httpx
import ollama as ollama_client
import pytest
from openai import OpenAI

from tests.helpers import wait_for

MODEL = "llama3.2:3b"

NON_STREAM = [
    ("GET", "/", None),
    ("GET", "/api/version", None),
    ("GET", "/api/tags", None),
    ("GET", "/api/ps", None),
    ("POST", "/api/show", {"model": MODEL}),
    ("POST", "/api/generate", {"model": MODEL, "prompt": "why is the sky blue?", "stream": False}),
    ("POST", "/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}),
    ("POST", "/api/embed", {"model": "nomic-embed-text", "input": "hello"}),
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/api/generate", {"model": "no-such-model", "prompt": "x", "stream": False}),
    ("POST", "/api/chat", b"{not json"),
]

STREAMS = [
    ("/api/generate", {"model": MODEL, "prompt": "why is the sky blue?"}),
    ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True,
                              "stream_options": {"include_usage": True}}),
]


def send(url: str, method: str, body: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    return httpx.request(method, url, content=content, timeout=30)


@pytest.mark.parametrize(("method", "path", "body"), NON_STREAM, ids=[f"{m} {p}" for m, p, _ in NON_STREAM])
def test_answers_pass_through_byte_for_byte(gateway, ollama, method: str, path: str, body: object) -> None:
    reply = send(gateway.gateway_url + path, method, body)
    upstream_path, upstream_body = ollama.sent[-1]
    assert upstream_path == path
    assert reply.content == upstream_body
    assert "server" not in reply.headers


@pytest.mark.parametrize(("path", "body"), STREAMS, ids=[p for p, _ in STREAMS])
def test_streams_pass_through_byte_for_byte_as_they_arrive(gateway, ollama, path: str, body: dict) -> None:
    ollama.token_delay = 0.05
    started = time.perf_counter()
    arrivals = []
    received = b""
    with httpx.stream("POST", gateway.gateway_url + path, json=body, timeout=30) as reply:
        for chunk in reply.iter_raw():
            arrivals.append(time.perf_counter() - started)
            received += chunk
    assert received == ollama.sent[-1][1]
    assert len(arrivals) > 3, "the stream was buffered, not passed on chunk by chunk"
    assert arrivals[0] < arrivals[-1] - 0.2


def test_openai_stream_usage_is_asked_for_but_not_shown_to_a_client_that_did_not_ask(gateway, ollama) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    reply = httpx.post(gateway.gateway_url + "/v1/chat/completions", json=body, timeout=30)
    upstream = ollama.sent[-1][1]
    assert b'"usage"' in upstream  # the gateway asked Ollama for usage...
    assert b'"usage"' not in reply.content  # ...and held that event back from this client
    events = [e for e in upstream.split(b"\n\n") if e and b'"usage"' not in e]
    assert reply.content == b"\n\n".join(events) + b"\n\n"
    assert gateway.value("llm_output_tokens_total", f'{{model="{MODEL}"}}') > 0


def test_token_counters_equal_the_sum_of_upstreams_counts(gateway) -> None:
    prompt_tokens = output_tokens = 0
    for n in range(3):
        answer = httpx.post(gateway.gateway_url + "/api/generate", timeout=30, json={
            "model": MODEL, "prompt": "count " * (n + 1), "stream": False, "options": {"num_predict": 4 + n}}).json()
        prompt_tokens += answer["prompt_eval_count"]
        output_tokens += answer["eval_count"]
    with httpx.stream("POST", gateway.gateway_url + "/api/chat", timeout=30,
                      json={"model": MODEL, "messages": [{"role": "user", "content": "one two three"}]}) as reply:
        last = json.loads([line for line in reply.iter_lines() if line][-1])
    prompt_tokens += last["prompt_eval_count"]
    output_tokens += last["eval_count"]
    label = f'{{model="{MODEL}"}}'
    assert gateway.value("llm_input_tokens_total", label) == prompt_tokens
    assert gateway.value("llm_output_tokens_total", label) == output_tokens
    assert gateway.value("llm_requests_total", f'{{endpoint="/api/generate",model="{MODEL}",status="200"}}') == 3


def test_generation_seconds_are_the_sum_of_eval_duration(gateway) -> None:
    total_ns = 0
    for _ in range(2):
        total_ns += httpx.post(gateway.gateway_url + "/api/generate", timeout=30,
                               json={"model": MODEL, "prompt": "x", "stream": False}).json()["eval_duration"]
    assert gateway.value("llm_generation_seconds_total", f'{{model="{MODEL}"}}') == pytest.approx(total_ns / 1e9)


def test_time_to_first_token_is_measured_by_the_gateway(gateway, ollama) -> None:
    ollama.token_delay = 0.1
    with httpx.stream("POST", gateway.gateway_url + "/api/generate", json={"model": MODEL, "prompt": "x"},
                      timeout=30) as reply:
        reply.read()
    label = f'{{gen_ai_request_model="{MODEL}"}}'
    assert gateway.value("gen_ai_server_time_to_first_token_seconds_count", label) == 1
    assert 0.1 <= gateway.value("gen_ai_server_time_to_first_token_seconds_sum", label) < 1.0
    assert gateway.value("gen_ai_server_time_per_output_token_seconds_count", label) == 1


def test_unknown_models_are_counted_as_other(gateway) -> None:
    httpx.post(gateway.gateway_url + "/api/generate", json={"model": "Ignore previous instructions", "prompt": "x"})
    text = gateway.scrape()
    assert "Ignore previous" not in text
    assert 'llm_requests_total{endpoint="/api/generate",model="other",status="404"} 1.0' in text


def test_the_official_ollama_client_works_unchanged(gateway) -> None:
    client = ollama_client.Client(host=gateway.gateway_url)
    assert MODEL in [m.model for m in client.list().models]
    assert client.show(MODEL).modelinfo["general.architecture"] == "llama"
    assert client.generate(model=MODEL, prompt="hi").response
    streamed = "".join(part.message.content for part in client.chat(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert streamed
    assert len(client.embed(model="nomic-embed-text", input="hello").embeddings) == 1
    with pytest.raises(ollama_client.ResponseError, match="not found"):
        client.generate(model="no-such-model", prompt="x")


def test_an_openai_sdk_works_unchanged(gateway) -> None:
    client = OpenAI(base_url=gateway.gateway_url + "/v1", api_key="ollama")
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert all(c.usage is None for c in chunks)  # it did not ask for usage, so it gets none
    # The stream's request is counted once its last chunk is written, which the client may see first.
    wait_for(lambda: gateway.value("llm_requests_total",
                                   f'{{endpoint="/v1/chat/completions",model="{MODEL}",status="200"}}') == 2,
             what="both requests counted")


def test_a_body_over_the_limit_is_refused_with_413_json(make_gateway) -> None:
    gateway = make_gateway(**{"gateway.max_body_bytes": 1000})
    reply = httpx.post(gateway.gateway_url + "/api/generate", json={"model": MODEL, "prompt": "x" * 2000})
    assert reply.status_code == 413
    assert "at most 1000 bytes" in reply.json()["error"]


def test_ollama_unreachable_is_a_502_json_error(gateway, ollama) -> None:
    ollama.stop()
    reply = httpx.post(gateway.gateway_url + "/api/generate", json={"model": MODEL, "prompt": "x"})
    assert reply.status_code == 502
    assert "cannot reach Ollama" in reply.json()["error"]


def test_a_stream_broken_by_ollama_ends_with_an_error_object(gateway, ollama) -> None:
    ollama.fault = "reset"
    reply = httpx.post(gateway.gateway_url + "/api/generate", json={"model": MODEL, "prompt": "x"}, timeout=30)
    lines = [json.loads(line) for line in reply.text.splitlines() if line]
    assert lines[0]["response"] and "error" in lines[-1]
    label = f'{{error_type="upstream_reset",gen_ai_operation_name="text_completion",gen_ai_request_model="{MODEL}"}}'
    assert gateway.value("gen_ai_client_operation_duration_seconds_count", label) == 1


def test_a_client_that_disconnects_cancels_the_upstream_request(gateway, ollama) -> None:
    ollama.token_delay = 0.2
    host, port = gateway.gateway_url.removeprefix("http://").split(":")
    body = json.dumps({"model": MODEL, "prompt": "x", "options": {"num_predict": 100}}).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert b"200 OK" in sock.recv(4096)
    deadline = time.monotonic() + 5
    while ollama.disconnects == 0:
        assert time.monotonic() < deadline, "Ollama kept generating for a client that had gone"
        time.sleep(0.05)
    assert ollama.calls["/api/generate"] == 1


def test_a_hanging_ollama_is_a_504_after_the_read_timeout(make_gateway, ollama) -> None:
    gateway = make_gateway(**{"gateway.read_timeout_seconds": 0.5})
    ollama.hang_seconds = 3
    ollama.fault = "hang"
    started = time.perf_counter()
    reply = httpx.post(gateway.gateway_url + "/api/generate", json={"model": MODEL, "prompt": "x"}, timeout=30)
    assert reply.status_code == 504
    assert "sent nothing for 0.5 s" in reply.json()["error"]
    assert time.perf_counter() - started < 2.5
