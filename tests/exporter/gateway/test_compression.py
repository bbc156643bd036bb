"""Chat history over a model's token budget: system messages and the newest turns are kept."""

from __future__ import annotations

import json

import httpx

from singularity_ops.exporter.gateway.compression import (
    SUMMARY_PREFIX,
    compress,
    estimate_tokens,
    message_tokens,
)

MODEL = "llama3.2:3b"


def turn(role: str, words: int, tag: str = "") -> dict:
    return {"role": role, "content": f"{tag} " + "word " * words}


def test_the_estimator_is_bytes_over_four_plus_framing() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2
    assert estimate_tokens("é" * 4) == 2  # utf-8 bytes, not characters
    assert message_tokens({"role": "user", "content": "abcd"}) == 5


def test_under_budget_nothing_changes_and_the_ratio_is_one() -> None:
    messages = [turn("system", 5), turn("user", 5)]
    result = compress(messages, budget=1000)
    assert result.messages == messages and result.ratio == 1.0 and result.dropped == 0


def test_over_budget_keeps_system_messages_and_the_newest_turns() -> None:
    messages = [turn("system", 10, "S"), *[turn(r, 40, f"T{i}") for i, r in
                                           enumerate(["user", "assistant"] * 5)]]
    result = compress(messages, budget=200)
    assert result.messages[0] == messages[0]
    assert result.messages[-1] == messages[-1]
    kept_tags = [m["content"].split()[0] for m in result.messages[1:]]
    assert kept_tags == [f"T{i}" for i in range(10 - len(kept_tags), 10)], "a contiguous run of the newest turns"
    assert result.sent_tokens <= 200 < result.original_tokens
    assert result.ratio == result.original_tokens / result.sent_tokens > 1
    assert result.dropped == 10 - len(kept_tags)


def test_the_newest_message_is_kept_even_alone_over_budget() -> None:
    result = compress([turn("user", 10), turn("user", 500, "LAST")], budget=20)
    assert [m["content"].split()[0] for m in result.messages] == ["LAST"]


def test_a_tool_result_is_not_kept_without_its_call() -> None:
    messages = [turn("user", 50), {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]},
                {"role": "tool", "content": "result " * 5}, turn("user", 5, "NEW")]
    result = compress(messages, budget=30)  # room for the tool result and the last turn, not for the call
    assert result.messages == [messages[-1]]
    assert compress(messages, budget=45).messages == messages[1:]  # room for the call too: all three kept


def test_the_gateway_sends_the_compressed_history_and_reports_the_ratio(make_gateway, ollama) -> None:
    gateway = make_gateway(**{"gateway.context_budgets": {MODEL: 100}})
    history = [turn("system", 5, "SYS"), *[turn("user" if i % 2 == 0 else "assistant", 60, f"T{i}")
                                           for i in range(6)]]
    reply = httpx.post(gateway.gateway_url + "/api/chat", json={"model": MODEL, "messages": history, "stream": False})
    assert reply.status_code == 200
    sent = json.loads(ollama.received[-1][1])["messages"]
    assert sent[0]["content"].startswith("SYS") and sent[-1] == history[-1] and len(sent) < len(history)
    label = f'{{model="{MODEL}"}}'
    assert gateway.value("llm_context_compression_ratio_count", label) == 1
    assert gateway.value("llm_context_compression_ratio_sum", label) > 2

    other = "qwen2.5-coder:1.5b"  # no budget: passes as it is, ratio 1
    httpx.post(gateway.gateway_url + "/api/chat", json={"model": other, "messages": history, "stream": False})
    assert json.loads(ollama.received[-1][1])["messages"] == history
    assert gateway.value("llm_context_compression_ratio_sum", f'{{model="{other}"}}') == 1.0


def test_a_summariser_model_summarises_what_is_dropped(make_gateway, ollama) -> None:
    gateway = make_gateway(**{"gateway.context_budgets": {"*": 100}, "gateway.summariser_model": "qwen2.5-coder:1.5b"})
    history = [turn("system", 5, "SYS"), *[turn("user", 60, f"T{i}") for i in range(4)]]
    httpx.post(gateway.gateway_url + "/api/chat", json={"model": MODEL, "messages": history, "stream": False})
    summarise, forwarded = (json.loads(body) for _, body in ollama.received[-2:])
    assert summarise["model"] == "qwen2.5-coder:1.5b" and "T0" in summarise["messages"][1]["content"]
    assert forwarded["model"] == MODEL
    assert forwarded["messages"][1]["role"] == "system"
    assert forwarded["messages"][1]["content"].startswith(SUMMARY_PREFIX)
