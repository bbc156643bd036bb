"""A stored answer is written back in the shape of the endpoint that asked: compared here, field by field and in
order, with what the Ollama stand-in (Ollama's own shapes) sends for the same request."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from singularity_ops.exporter.gateway.cache.answer import Answer, StreamCapture, read_whole
from singularity_ops.exporter.gateway.cache.replay import Replay, go_json

QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]
CASES = {
    "/api/generate": {"model": "llama3.2:3b", "prompt": "Why is the sky blue?"},
    "/api/chat": {"model": "llama3.2:3b", "messages": QUESTION},
    "/v1/chat/completions": {"model": "llama3.2:3b", "messages": QUESTION},
}


def shape(value: Any) -> Any:
    """Field names in order and value types, recursively: what a client's parser sees, less the values."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def events(body: bytes, openai: bool) -> list[Any]:
    if not openai:
        return [json.loads(line) for line in body.splitlines() if line.strip()]
    found = []
    for event in body.split(b"\n\n"):
        if event.startswith(b"data: "):
            data = event[6:]
            found.append(data.decode() if data == b"[DONE]" else json.loads(data))
    return found


def ask(ollama, path: str, stream: bool, include_usage: bool = False) -> httpx.Response:
    payload = dict(CASES[path], stream=stream)
    if include_usage:
        payload["stream_options"] = {"include_usage": True}
    return httpx.post(ollama.url + path, json=payload, timeout=10)


@pytest.mark.parametrize("path", CASES)
def test_a_whole_answer_replays_with_ollamas_fields_in_ollamas_order(ollama, path: str) -> None:
    openai = path.startswith("/v1/")
    real = ask(ollama, path, stream=False)
    answer = read_whole(real.content, openai)
    assert answer is not None and answer.text == "The sky is blue because of Rayleigh scattering."
    replay = Replay(answer, "llama3.2:3b", openai, "generate" if "generate" in path else "chat", time.perf_counter())
    body = replay.body(stream=False)
    assert replay.content_type(False) == real.headers["Content-Type"]
    mine, theirs = json.loads(body), real.json()
    if not openai:  # a hit loads nothing and evaluates no prompt: zero durations are left out, as Go's omitempty does
        theirs = {k: v for k, v in theirs.items() if k not in ("load_duration", "prompt_eval_duration", "context")}
    assert shape(mine) == shape(theirs)
    assert body.endswith(b"\n") == real.content.endswith(b"\n")


@pytest.mark.parametrize("path", CASES)
def test_a_stream_replays_chunk_by_chunk_in_the_endpoints_own_streaming_shape(ollama, path: str) -> None:
    openai = path.startswith("/v1/")
    real = ask(ollama, path, stream=True, include_usage=openai)
    capture = StreamCapture(openai)
    for piece in (real.content[:7], real.content[7:]):  # a chunk boundary inside a line
        capture.feed(piece)
    answer = capture.finish()
    assert answer is not None and answer.output_tokens == 8
    replay = Replay(answer, "llama3.2:3b", openai, "generate" if "generate" in path else "chat", time.perf_counter())
    body = replay.body(stream=True, include_usage=openai)
    assert replay.content_type(True) == real.headers["Content-Type"]
    mine, theirs = events(body, openai), events(real.content, openai)
    assert shape(mine[0]) == shape(theirs[0])
    last_mine, last_theirs = (mine[-2], theirs[-2]) if openai else (mine[-1], theirs[-1])
    if not openai:
        last_theirs = {k: v for k, v in last_theirs.items() if k not in ("load_duration", "prompt_eval_duration",
                                                                         "context")}
    assert shape(last_mine) == shape(last_theirs)
    if openai:
        assert mine[-1] == theirs[-1] == "[DONE]"
        assert mine[-3]["choices"][0]["finish_reason"] == "stop"
    assert _text(mine, openai) == _text(theirs, openai)


def _text(chunks: list[Any], openai: bool) -> str:
    if openai:
        return "".join(c["choices"][0]["delta"]["content"] for c in chunks if isinstance(c, dict) and c["choices"])
    return "".join(c.get("response", c.get("message", {}).get("content", "")) for c in chunks)


@pytest.mark.parametrize("openai", [False, True])
def test_an_incomplete_or_failed_stream_is_never_an_answer(ollama, openai: bool) -> None:
    path = "/v1/chat/completions" if openai else "/api/chat"
    whole = ask(ollama, path, stream=True).content
    cut = StreamCapture(openai)
    cut.feed(whole[: len(whole) // 2])
    assert cut.finish() is None
    failed = StreamCapture(openai)
    failed.feed(whole[: whole.index(b"\n") + 1] + b'{"error":"llama runner process has terminated"}\n')
    assert failed.finish() is None
    assert read_whole(b'{"error":"model not found"}', openai) is None


def test_json_is_written_as_gos_encoder_writes_it() -> None:
    assert go_json({"a": "<b> & é"}) == '{"a":"\\u003cb\\u003e \\u0026 é"}'.encode()


def test_thinking_and_tool_calls_are_kept_and_replayed() -> None:
    answer = Answer(text="", thinking="Let me think.", tool_calls=[{"function": {"name": "f", "arguments": {"x": 1}}}])
    native = json.loads(Replay(answer, "m", False, "chat", time.perf_counter()).body(False))
    assert native["message"]["thinking"] == "Let me think." and native["message"]["tool_calls"][0]["function"][
        "arguments"] == {"x": 1}
    openai = json.loads(Replay(answer, "m", True, "chat", time.perf_counter()).body(False))
    call = openai["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "f", "arguments": '{"x":1}'} and openai["choices"][0][
        "finish_reason"] == "tool_calls"
    assert Answer.from_json(answer.as_json()) == answer
