"""The prompt layer on a real PostgreSQL: what it records of every system prompt, what it keeps and changes only
for enabled ones, sticky variants, feedback, and writes that survive a database outage."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import psycopg

from singularity_ops.controllers.prompt_optimizer import experiments, store
from singularity_ops.prompt_ab import CANDIDATE, prompt_id
from tests.exporter.gateway.prompts.conftest import AT, apply, chat, rows
from tests.helpers import series

SYSTEM = "You are the support assistant of Example Ltd. Answer in two sentences."
PID = prompt_id(SYSTEM)


def enable(url: str, name: str = "support") -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        store.enable(conn, PID[:8], name, "test", AT)


def test_every_system_prompt_is_recorded_by_hash_with_counts_models_and_a_preview(make_layer, migrated, loop) -> None:
    layer = make_layer()
    for minute, model in enumerate(["llama3.2:3b", "phi4:14b", "llama3.2:3b"]):
        tracked, changed = apply(layer, chat(SYSTEM, "hello", model=model), "alice", model,
                                       AT + timedelta(minutes=minute))
        assert (tracked, changed) == (None, b"")
    apply(layer, chat(None, "no system prompt"), "alice", "llama3.2:3b", AT)
    assert loop.run_until_complete(layer.sync_once())
    assert rows(migrated, "SELECT id, first_seen, last_seen, request_count, models, preview, original_text, enabled "
                          "FROM prompts") == [
        (PID, AT, AT + timedelta(minutes=2), 3, ["llama3.2:3b", "phi4:14b"], SYSTEM[:60], None, False)]
    apply(layer, chat(SYSTEM, "again"), "bob", "llama3.2:3b", AT + timedelta(hours=1))
    loop.run_until_complete(layer.sync_once())
    assert rows(migrated, "SELECT request_count, last_seen FROM prompts") == [(4, AT + timedelta(hours=1))]


def test_with_previews_off_only_the_hash_is_kept_and_earlier_previews_go(make_layer, migrated, loop) -> None:
    before = make_layer()
    apply(before, chat("Another prompt", "x"), "alice", "llama3.2:3b", AT)
    loop.run_until_complete(before.sync_once())
    assert rows(migrated, "SELECT preview FROM prompts") == [("Another prompt",)]
    layer = make_layer(preview_chars=0)
    apply(layer, chat(SYSTEM, "hello"), "alice", "llama3.2:3b", AT)
    loop.run_until_complete(layer.sync_once())
    assert rows(migrated, "SELECT id, preview FROM prompts ORDER BY id") == sorted(
        [(prompt_id("Another prompt"), None), (PID, None)])


def test_a_prompt_that_is_not_enabled_is_neither_kept_nor_changed(make_layer, migrated, loop) -> None:
    layer = make_layer()
    payload = chat(SYSTEM, "what are your opening hours?")
    before = repr(payload)
    assert apply(layer, payload, "alice", "llama3.2:3b", AT) == (None, b"")
    assert repr(payload) == before
    loop.run_until_complete(layer.sync_once())
    assert rows(migrated, "SELECT count(*) FROM prompt_dialogues") == [(0,)]


def test_an_enabled_prompt_keeps_its_dialogues_and_its_text(make_layer, migrated, loop) -> None:
    layer = make_layer()
    apply(layer, chat(SYSTEM, "first sight"), "alice", "llama3.2:3b", AT)
    loop.run_until_complete(layer.sync_once())
    enable(migrated)
    loop.run_until_complete(layer.sync_once())
    payload = chat(SYSTEM, "what are your opening hours?")
    tracked, changed = apply(layer, payload, "alice", "llama3.2:3b", AT)
    assert tracked is not None and not changed
    layer.finish(tracked, 200, "From 9 to 5.", None, 0.25)
    loop.run_until_complete(layer.sync_once())
    ((messages, answer, model, latency, outcome, variant, client),) = rows(
        migrated, "SELECT messages, answer, model, latency_seconds, outcome, variant, client_hash "
                  "FROM prompt_dialogues WHERE request_id = %s", uuid.UUID(tracked.request_id))
    assert messages == payload["messages"] and answer == "From 9 to 5."
    assert (model, latency, outcome, variant) == ("llama3.2:3b", 0.25, "unknown", None)
    assert client and client != "alice"
    assert rows(migrated, "SELECT original_text, name FROM prompts") == [(SYSTEM, "support")]
    scraped = series(_exposition(layer), "llm_prompt_requests_total")
    assert scraped == {'{prompt="support"}': 1.0}


def test_errors_and_empty_answers_are_failures_and_a_regenerate_fails_the_one_before(make_layer, migrated,
                                                                                     loop) -> None:
    enable_first(make_layer, migrated, loop)
    layer = make_layer()
    first, _ = apply(layer, chat(SYSTEM, "why?"), "alice", "llama3.2:3b", AT)
    layer.finish(first, 200, "Because.", None, 0.1)
    layer.clock.now += 30
    second, _ = apply(layer, chat(SYSTEM, "why?"), "alice", "llama3.2:3b", AT)
    layer.finish(second, 200, "", None, 0.1)
    third, _ = apply(layer, chat(SYSTEM, "how?"), "alice", "llama3.2:3b", AT)
    layer.finish(third, 502, None, "cannot reach Ollama", 0.1)
    loop.run_until_complete(layer.sync_once())
    found = dict(((rid, (o, r)) for rid, o, r in rows(
        migrated, "SELECT request_id::text, outcome, outcome_reason FROM prompt_dialogues")))
    assert found == {first.request_id: ("failure", "regenerate"), second.request_id: ("failure", "empty"),
                     third.request_id: ("failure", "error")}


def enable_first(make_layer, migrated: str, loop) -> None:
    layer = make_layer()
    apply(layer, chat(SYSTEM, "first sight"), "alice", "llama3.2:3b", AT)
    loop.run_until_complete(layer.sync_once())
    enable(migrated)


def candidate(url: str, text: str, share: float) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        new = store.add_candidate(conn, PID, None, text, None, 8.0, 6.0, [], "test", AT)
        experiments.start(conn, PID, new, share, "test", AT)
    return new


def test_in_an_experiment_a_sticky_share_of_clients_gets_the_candidate(make_layer, migrated, loop) -> None:
    enable_first(make_layer, migrated, loop)
    candidate_id = candidate(migrated, "You are the support assistant. Answer in one friendly sentence.", 0.3)
    layer = make_layer()
    clients = [f"10.1.{i // 200}.{i % 200}" for i in range(1000)]
    got = {}
    for client in clients:
        payload = chat(SYSTEM, "hello")
        tracked, changed = apply(layer, payload, client, "llama3.2:3b", AT)
        got[client] = tracked.variant
        assert bool(changed) == (tracked.variant == CANDIDATE)
        sent = json.loads(changed or json.dumps(payload))
        assert sent["messages"][0]["content"] == payload["messages"][0]["content"] == (
            "You are the support assistant. Answer in one friendly sentence." if changed else SYSTEM)
        assert tracked.served_candidate == (candidate_id if changed else None)
        assert tracked.messages[0]["content"] == SYSTEM  # kept as the client sent it
    share = sum(v == CANDIDATE for v in got.values()) / len(clients)
    assert 0.25 < share < 0.35  # binomial sd 0.0145 at n = 1000
    for client in clients[:100]:
        assert apply(layer, chat(SYSTEM, "again"), client, "llama3.2:3b", AT)[0].variant == got[client]
    scraped = series(_exposition(layer), "llm_prompt_experiment_requests_total")
    assert sum(scraped.values()) == 1100


def test_feedback_settles_a_dialogue_for_its_own_client_only(make_layer, migrated, loop) -> None:
    enable_first(make_layer, migrated, loop)
    layer = make_layer()
    tracked, _ = apply(layer, chat(SYSTEM, "hello"), "alice", "llama3.2:3b", AT)
    layer.finish(tracked, 200, "Hi!", None, 0.1)
    assert loop.run_until_complete(layer.rate(tracked.request_id, "mallory", "failure", 0.0)) == "forbidden"
    found = loop.run_until_complete(layer.rate(tracked.request_id, "alice", "success", 1.0))
    assert found.name == "support"
    loop.run_until_complete(layer.sync_once())
    assert rows(migrated, "SELECT outcome, outcome_reason, rating FROM prompt_dialogues") == [
        ("success", "feedback", 1.0)]
    later = make_layer()  # another gateway, or this one restarted: the request is found in the database
    answer = loop.run_until_complete(later.rate(tracked.request_id, "alice", "failure", 0.0))
    assert not isinstance(answer, str), answer
    assert answer.prompt_id == PID
    loop.run_until_complete(later.sync_once())
    assert rows(migrated, "SELECT outcome, rating FROM prompt_dialogues") == [("failure", 0.0)]
    missing = loop.run_until_complete(later.rate(str(uuid.uuid4()), "alice", "success", 1.0))
    assert isinstance(missing, str) and "enabled" in missing


def test_what_waits_survives_a_database_outage(make_layer, migrated, loop) -> None:
    enable_first(make_layer, migrated, loop)
    down = {"now": False}

    def connect() -> psycopg.Connection:
        if down["now"]:
            raise psycopg.OperationalError("connection refused")
        return psycopg.connect(migrated, autocommit=True)

    layer = make_layer(connect=connect)
    layer._kept.close()
    down["now"] = True
    tracked, _ = apply(layer, chat(SYSTEM, "during the outage"), "alice", "llama3.2:3b", AT)
    layer.finish(tracked, 200, "answer", None, 0.1)
    assert not loop.run_until_complete(layer.sync_once())
    assert layer.managed  # the enabled prompts stay as last read
    down["now"] = False
    assert loop.run_until_complete(layer.sync_once())
    assert rows(migrated, "SELECT request_id::text FROM prompt_dialogues") == [(tracked.request_id,)]


def _exposition(layer) -> str:
    from prometheus_client import generate_latest

    return generate_latest(layer.metrics.registry).decode()


def test_retention_drops_old_and_excess_dialogues_but_not_an_open_experiments(make_layer, migrated, loop) -> None:
    enable_first(make_layer, migrated, loop)
    layer = make_layer()
    old, _ = apply(layer, chat(SYSTEM, "last month"), "alice", "llama3.2:3b", AT - timedelta(days=40))
    layer.finish(old, 200, "answer", None, 0.1)
    for index in range(3):
        recent, _ = apply(layer, chat(SYSTEM, f"recent {index}"), "bob", "llama3.2:3b",
                                AT + timedelta(minutes=index))
        layer.finish(recent, 200, "answer", None, 0.1)
    loop.run_until_complete(layer.sync_once())
    candidate(migrated, "Be brief.", 1.0)
    loop.run_until_complete(layer.sync_once())
    tested, _ = apply(layer, chat(SYSTEM, "in the experiment"), "alice", "llama3.2:3b", AT - timedelta(days=40))
    layer.finish(tested, 200, "answer", None, 0.1)
    loop.run_until_complete(layer.sync_once())
    make_layer(max_dialogues_per_prompt=2)  # its first sync prunes
    kept = {text for (text,) in rows(migrated, "SELECT messages->-1->>'content' FROM prompt_dialogues")}
    assert kept == {"in the experiment", "recent 1", "recent 2"}
