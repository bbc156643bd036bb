"""What the cache may answer, and which requests share an entry (docs/PREDICTIVE_CACHE_WARMING.md, "What is
cached")."""

from __future__ import annotations

from typing import Any

import pytest

from singularity_ops.cache_key import chat_material, generate_material, request_keys, tenant_of
from singularity_ops.config.cache import CacheConfig
from singularity_ops.exporter.gateway.cache.policy import Bypass, Cacheable, classify

SETTINGS = CacheConfig(enabled=True)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def cacheable(path: str, payload: dict[str, Any], settings: CacheConfig = SETTINGS,
              client: str | None = "10.0.0.1") -> Cacheable:
    found = classify(path, payload, settings, client)
    assert isinstance(found, Cacheable), found
    return found


def test_the_same_question_asked_through_api_chat_and_v1_shares_an_entry_when_ollama_runs_them_alike() -> None:
    native = cacheable("/api/chat", {"model": "llama3.2:3b", "messages": QUESTION,
                                     "options": {"temperature": 1.0, "top_p": 1.0}})
    openai = cacheable("/v1/chat/completions", {"model": "llama3.2:3b", "messages": QUESTION, "stream": True})
    assert native.key == openai.key
    assert openai.stream and not cacheable("/v1/chat/completions", {"model": "llama3.2:3b",
                                                                     "messages": QUESTION}).stream


def test_options_that_change_the_answer_are_in_the_key_and_placement_options_are_not() -> None:
    base = cacheable("/api/chat", {"model": "llama3.2", "messages": QUESTION})
    assert base.model == "llama3.2:latest"
    for changed in ({"temperature": 0}, {"seed": 7}, {"num_ctx": 8192}):
        assert cacheable("/api/chat", {"model": "llama3.2", "messages": QUESTION, "options": changed}).key != base.key
    placed = cacheable("/api/chat", {"model": "llama3.2", "messages": QUESTION, "stream": False, "keep_alive": "1h",
                                     "options": {"num_thread": 8, "num_gpu": 0}})
    assert placed.key == base.key
    assert cacheable("/api/chat", {"model": "llama3.2", "messages": QUESTION, "format": "json"}).key != base.key


def test_the_scope_is_everything_but_the_last_user_turn() -> None:
    one = cacheable("/api/chat", {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, *QUESTION]})
    other = cacheable("/api/chat", {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                                               {"role": "user", "content": "France's capital?"}]})
    assert one.scope == other.scope and one.key != other.key
    assert other.prompt == "France's capital?"
    verbose = cacheable("/api/chat", {"model": "m", "messages": [{"role": "system", "content": "Be verbose."},
                                                                 *QUESTION]})
    assert verbose.scope != one.scope


def test_entries_never_cross_clients_unless_the_cache_is_shared() -> None:
    payload = {"model": "m", "messages": QUESTION}
    assert cacheable("/api/chat", payload, client="key:alice").key != cacheable("/api/chat", payload,
                                                                              client="key:bob").key
    shared = CacheConfig(enabled=True, shared=True)
    assert cacheable("/api/chat", payload, shared, "key:alice").key == cacheable("/api/chat", payload, shared,
                                                                               "key:bob").key
    assert "alice" not in tenant_of("key:alice", False)


@pytest.mark.parametrize(("path", "payload", "settings", "reason"), [
    ("/api/embed", {"model": "m", "input": "x"}, SETTINGS, "endpoint"),
    ("/api/chat", {"model": "m", "messages": QUESTION, "tools": [{"type": "function"}]}, SETTINGS, "tools"),
    ("/api/chat", {"model": "m", "messages": [{**QUESTION[0], "images": ["aGk="]}]}, SETTINGS, "images"),
    ("/api/generate", {"model": "m", "prompt": ""}, SETTINGS, "no_prompt"),
    ("/api/chat", {"model": "m", "messages": [*QUESTION, {"role": "assistant", "content": "Paris"}]}, SETTINGS,
     "last_turn_not_user"),
    ("/v1/chat/completions", {"model": "m", "messages": QUESTION, "n": 2}, SETTINGS, "n"),
    ("/api/chat", {"model": "m", "messages": QUESTION, "options": {"temperature": 1.2}},
     CacheConfig(enabled=True, max_temperature=1.0), "temperature"),
    ("/api/chat", {"model": "other", "messages": QUESTION}, CacheConfig(enabled=True, models=["m"]), "model"),
])
def test_what_is_not_cached_says_why(path: str, payload: dict[str, Any], settings: CacheConfig, reason: str) -> None:
    assert classify(path, payload, settings, None) == Bypass(reason)


def test_tools_and_images_are_cached_when_allowed_images_by_exact_match_only() -> None:
    allowed = CacheConfig(enabled=True, cache_tools=True, cache_images=True)
    with_image = cacheable("/api/chat", {"model": "m", "messages": [{**QUESTION[0], "images": ["aGk="]}]}, allowed)
    assert not with_image.semantic
    assert with_image.key != cacheable("/api/chat", {"model": "m", "messages": [{**QUESTION[0],
                                                                                 "images": ["aG8="]}]}, allowed).key
    assert cacheable("/api/chat", {"model": "m", "messages": QUESTION, "tools": [{"type": "function"}]}, allowed)


def test_the_warmer_builds_the_same_material_a_plain_client_sends() -> None:
    chat = cacheable("/api/chat", {"model": "llama3.2:3b", "messages": [{"role": "system", "content": "Brief."},
                                                                        *QUESTION]})
    assert (chat.key, chat.scope) == request_keys(chat_material("llama3.2:3b", QUESTION[0]["content"], "Brief."),
                                                  chat.tenant)
    generate = cacheable("/api/generate", {"model": "llama3.2:3b", "prompt": "Why is the sky blue?", "system": "X"})
    assert generate.key == request_keys(generate_material("llama3.2:3b", "Why is the sky blue?", "X"),
                                        generate.tenant)[0]
