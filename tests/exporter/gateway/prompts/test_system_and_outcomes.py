"""Where a request carries its system prompt and how it is swapped; the outcome heuristics on their own clock."""

from __future__ import annotations

import json

from singularity_ops.exporter.gateway.endpoints import INFERENCE
from singularity_ops.exporter.gateway.prompts.outcomes import Followups, Settled, immediate
from singularity_ops.exporter.gateway.prompts.system import (
    dialogue_messages,
    find_system,
    replace_system,
    substituted_body,
    user_texts,
)

CHAT, OPENAI, GENERATE, EMBED = (INFERENCE[p] for p in ("/api/chat", "/v1/chat/completions", "/api/generate",
                                                         "/api/embed"))


def test_the_first_system_message_of_a_chat_is_the_prompt() -> None:
    payload = {"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "Be brief."},
                            {"role": "system", "content": "second"}]}
    found = find_system(CHAT, payload)
    assert (found.text, found.index) == ("Be brief.", 1)


def test_openai_text_parts_count_and_other_parts_do_not() -> None:
    parts = {"messages": [{"role": "system", "content": [{"type": "text", "text": "Be "},
                                                        {"type": "text", "text": "brief."}]}]}
    assert find_system(OPENAI, parts).text == "Be brief."
    image = {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    assert find_system(OPENAI, image) is None


def test_generate_carries_it_in_system_and_embeddings_carry_none() -> None:
    assert find_system(GENERATE, {"prompt": "q", "system": "Be brief."}).index == -1
    assert find_system(GENERATE, {"prompt": "q"}) is None
    assert find_system(EMBED, {"input": "x", "system": "Be brief."}) is None
    assert find_system(CHAT, {"messages": [{"role": "user", "content": "no system"}]}) is None


def test_replacing_leaves_what_the_client_sent_in_the_captured_copy() -> None:
    payload = {"messages": [{"role": "system", "content": "old"}, {"role": "user", "content": "q"}]}
    captured = dialogue_messages(CHAT, payload)
    replace_system(payload, find_system(CHAT, payload), "new")
    assert payload["messages"][0] == {"role": "system", "content": "new"}
    assert captured[0] == {"role": "system", "content": "old"}
    generate = {"prompt": "q", "system": "old"}
    assert dialogue_messages(GENERATE, generate) == [{"role": "system", "content": "old"},
                                                     {"role": "user", "content": "q"}]
    replace_system(generate, find_system(GENERATE, generate), "new")
    assert generate["system"] == "new"


def test_user_texts_are_in_order() -> None:
    assert user_texts([{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
                       {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]) == ["a", "c"]


def test_an_error_or_an_empty_answer_is_a_failure_at_once() -> None:
    assert immediate(500, None, "text") == ("failure", "error")
    assert immediate(200, "stream interrupted", "partial") == ("failure", "error")
    assert immediate(200, None, "  \n") == ("failure", "empty")
    assert immediate(200, None, None) == ("failure", "empty")
    assert immediate(200, None, "an answer") is None


def test_the_same_question_again_within_the_window_is_a_regenerate() -> None:
    followups = Followups(regenerate_seconds=60)
    followups.remember("alice", "p", "r1", ["why?"], now=100.0)
    assert followups.observe("alice", "p", ["why?"], now=159.0) == [Settled("r1", "failure", "regenerate")]


def test_the_same_question_after_the_window_or_from_someone_else_settles_nothing() -> None:
    followups = Followups(regenerate_seconds=60)
    followups.remember("alice", "p", "r1", ["why?"], now=100.0)
    assert followups.observe("bob", "p", ["why?"], now=101.0) == []
    assert followups.observe("alice", "other prompt", ["why?"], now=101.0) == []
    assert followups.observe("alice", "p", ["why?"], now=161.0) == []


def test_a_conversation_that_goes_on_is_a_weak_success_and_settles_once() -> None:
    followups = Followups(regenerate_seconds=60)
    followups.remember("alice", "p", "r1", ["why?"], now=0.0)
    assert followups.observe("alice", "p", ["why?", "and then?"], now=3600.0) == [
        Settled("r1", "weak_success", "continued")]
    assert followups.observe("alice", "p", ["why?", "and then?"], now=3601.0) == []


def test_saying_the_same_again_inside_one_conversation_is_no_regenerate() -> None:
    followups = Followups(regenerate_seconds=60)
    followups.remember("alice", "p", "r1", ["ok"], now=0.0)
    assert followups.observe("alice", "p", ["ok", "ok"], now=5.0) == [Settled("r1", "weak_success", "continued")]


def test_several_conversations_of_one_client_are_told_apart() -> None:
    followups = Followups(regenerate_seconds=60)
    followups.remember("front-end", "p", "r1", ["first topic"], now=0.0)
    followups.remember("front-end", "p", "r2", ["second topic"], now=1.0)
    assert followups.observe("front-end", "p", ["first topic", "more"], now=2.0) == [
        Settled("r1", "weak_success", "continued")]
    assert followups.observe("front-end", "p", ["second topic"], now=3.0) == [Settled("r2", "failure", "regenerate")]


def test_a_forgotten_dialogue_is_left_alone() -> None:
    followups = Followups(regenerate_seconds=60)
    followups.remember("alice", "p", "r1", ["why?"], now=0.0)
    followups.forget("r1", "alice", "p")
    assert followups.observe("alice", "p", ["why?"], now=1.0) == []


def test_the_body_is_changed_in_place_in_either_json_form() -> None:
    for ensure_ascii in (True, False):
        payload = {"model": "m", "messages": [{"role": "system", "content": "Sé bref."},
                                              {"role": "user", "content": "q"}]}
        body = json.dumps(payload, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()
        changed = substituted_body(body, "Sé bref.", 'Be "brief".')
        assert json.loads(changed)["messages"][0]["content"] == 'Be "brief".'
        assert json.loads(changed)["messages"][1] == {"role": "user", "content": "q"}


def test_a_text_found_twice_or_not_at_all_is_left_to_full_serialisation() -> None:
    twice = json.dumps({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "x"}]}).encode()
    assert substituted_body(twice, "x", "y") is None
    parts = json.dumps({"messages": [{"role": "system", "content": [{"type": "text", "text": "a"},
                                                                    {"type": "text", "text": "b"}]}]}).encode()
    assert substituted_body(parts, "ab", "y") is None
