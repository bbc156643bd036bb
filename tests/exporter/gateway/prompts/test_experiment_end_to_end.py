"""Optimisation and experiments end to end: candidates from a deterministic optimiser behind the Ollama stand-in,
a simulated experiment where the candidate satisfies more users (promoted once approved by hand) and one where it
does not (rolled back), a rollback that takes effect at once, and the log of every step."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime

import psycopg
import pytest

from singularity_ops.config import load_config
from singularity_ops.controllers.prompt_optimizer.controller import PromptOptimizer
from tests.exporter.gateway.prompts.support import OPTIMIZER, PID, SYSTEM, upstream_systems
from tests.helpers import wait_for

GOOD = "You are the support assistant of Example Ltd. Always give opening times and the phone number."
PLAIN = "You are the assistant of Example Ltd."


def optimiser_standin(ollama):
    """``ollama.answer``: the optimiser proposes GOOD and PLAIN; a replayed answer is good when its system prompt
    asks for the phone number; the judge (the optimiser model too) scores a good answer 9, another 5."""

    def answer(model: str, prompt: str) -> str | None:
        if model == OPTIMIZER and prompt.startswith("You are grading"):
            graded = re.search(r"Answer:\n<<<\n(.*?)\n>>>", prompt, re.S).group(1)
            return json.dumps({"score": 9 if "555" in graded else 5, "reason": "against the reference"})
        if model == OPTIMIZER:
            return f"PATTERNS:\n- users want the number\n<prompt>{GOOD}</prompt>\n<prompt>{PLAIN}</prompt>"
        path, body = ollama.received[-1]
        system = json.loads(body)["messages"][0]["content"] if path == "/api/chat" else ""
        return "Open 9 to 5, call 555-0100." if "phone number" in system else "We are open on weekdays."

    return answer


def satisfied_dialogues(stack, count: int) -> None:
    for index in range(count):
        client = f"10.9.0.{index}"
        reply = stack.chat(client, f"When are you open? ({index})")
        assert stack.feedback(client, reply.headers["X-Request-Id"], 1).status_code == 200
    wait_for(lambda: stack.rows("SELECT count(*) FROM prompt_dialogues WHERE outcome = 'success'")[0][0] == count,
             what="the satisfied dialogues written")


def test_candidates_come_from_the_optimiser_and_the_winner_is_tested(stack, ollama) -> None:
    stack.chat("10.0.0.9", "first sight")
    stack.enable()
    satisfied_dialogues(stack, 3)
    ollama.answer = optimiser_standin(ollama)
    code, dry = stack.cli("optimize", "support", "--dry-run", "--json")
    assert code == 0 and [c["offline_score"] for c in dry["candidates"]] == [9.0, 5.0]
    assert stack.rows("SELECT count(*) FROM prompt_candidates") == [(0,)]
    code, report = stack.cli("optimize", "support", "--json")
    assert code == 0 and report["baseline"]["offline_score"] == 5.0
    assert [(c["text"], c["offline_score"]) for c in report["candidates"]] == [(GOOD, 9.0), (PLAIN, 5.0)]
    assert report["patterns"] == "- users want the number" and report["experiment_id"] is not None
    stack.synced(lambda managed: managed[PID].experiment is not None, "the experiment reaching the gateway")
    code, shown = stack.cli("show", "support", "--json")
    assert shown["experiment"]["candidate_id"] == report["candidates"][0]["id"]
    assert shown["experiment"]["share"] == 0.2 and shown["experiment"]["state"] == "running"
    assert {c["status"] for c in shown["candidates"]} == {"testing", "proposed"}


def start_experiment(stack, text: str) -> int:
    stack.chat("10.0.0.9", "first sight")
    stack.enable()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        (candidate,) = conn.execute("INSERT INTO prompt_candidates (prompt_id, created_at, text, offline_score) "
                                    "VALUES (%s, now(), %s, 8) RETURNING id", (PID, text)).fetchone()
    assert stack.cli("experiment", "start", "support", "--share", "0.5")[0] == 0
    stack.synced(lambda managed: managed[PID].experiment is not None, "the experiment reaching the gateway")
    return candidate


def simulate(stack, rates: dict[str, float], clients: int = 120) -> dict[str, int]:
    """Each client asks once and rates the answer +1 with its variant's probability, else -1."""
    rng = random.Random(14)
    seen = {"control": 0, "candidate": 0}
    for index in range(clients):
        client = f"10.5.{index // 200}.{index % 200}"
        reply = stack.chat(client, "Where is my parcel?")
        variant = reply.headers["X-Singularity-Variant"]
        seen[variant] += 1
        rating = 1 if rng.random() < rates[variant] else -1
        assert stack.feedback(client, reply.headers["X-Request-Id"], rating).status_code == 200
    wait_for(lambda: stack.rows("SELECT count(*) FROM prompt_dialogues WHERE outcome_reason = 'feedback'")[0][0]
             == clients, timeout=20, what="every rating written")
    return seen


def optimiser_tick(stack) -> None:
    """One tick of the prompt optimiser, as its controller process would run it against this stack."""
    config = load_config(config_file=stack.config_file, environ={"SINGULARITY_DATABASE_URL": stack.database_url,
                                                                  "SINGULARITY_HOME": str(stack.config_file.parent)})
    optimizer = PromptOptimizer(config, clock=lambda: datetime.now(UTC))
    try:
        optimizer.tick()
    finally:
        optimizer.close()


def serves(stack, ollama, expected: str) -> bool:
    before = len(upstream_systems(ollama))
    replies = [stack.chat(f"10.7.0.{i}", "hello") for i in range(6)]
    return upstream_systems(ollama)[before:] == [expected] * 6 and all(
        "X-Singularity-Variant" not in r.headers for r in replies)


@pytest.mark.slow
def test_a_better_candidate_is_promoted_once_approved_and_rolled_back_at_once(stack, ollama) -> None:
    candidate = start_experiment(stack, GOOD)
    seen = simulate(stack, {"control": 0.3, "candidate": 0.9})
    assert min(seen.values()) >= 30
    optimiser_tick(stack)
    assert stack.rows("SELECT state, decision FROM prompt_experiments") == [("awaiting_approval", "promote")]
    stack.synced(lambda managed: managed[PID].experiment is None, "the split ending")
    assert serves(stack, ollama, SYSTEM)  # waiting for the operator: everyone keeps the control
    numbers = stack.cli("show", "support", "--json")[1]["experiment"]
    assert numbers["statistic"] >= numbers["threshold"] and numbers["interval"][0] > 0
    assert numbers["success_rate"]["candidate"] > numbers["success_rate"]["control"]

    assert stack.cli("approve", "support")[0] == 0
    stack.synced(lambda managed: managed[PID].live_candidate == candidate, "the promotion reaching the gateway")
    assert serves(stack, ollama, GOOD)
    assert stack.cli("rollback", "support")[0] == 0
    stack.synced(lambda managed: managed[PID].live_candidate is None, "the rollback reaching the gateway")
    assert serves(stack, ollama, SYSTEM)

    log = stack.rows("SELECT event, actor, experiment_id IS NOT NULL FROM prompt_optimization_logs ORDER BY id")
    assert [event for event, _, _ in log] == ["enabled", "experiment_started", "counts", "decision", "approval",
                                              "promoted", "rolled_back"]
    assert {actor for event, actor, _ in log if event in ("counts", "decision")} == {"prompt-optimizer"}
    assert {actor for event, actor, _ in log if event in ("approval", "rolled_back")} == {
        actor for event, actor, _ in log if event == "enabled"}  # the operator, as cli:<user>
    ((details,),) = stack.rows("SELECT details FROM prompt_optimization_logs WHERE event = 'decision'")
    assert details["decision"] == "promote" and details["statistic"] >= details["threshold"]
    assert details["counts"]["candidate"]["requests"] == seen["candidate"]


@pytest.mark.slow
def test_a_candidate_that_satisfies_fewer_users_is_rolled_back(stack, ollama) -> None:
    start_experiment(stack, PLAIN)
    simulate(stack, {"control": 0.9, "candidate": 0.3})
    optimiser_tick(stack)
    assert stack.rows("SELECT state, decision FROM prompt_experiments") == [("rolled_back", "roll_back")]
    assert stack.rows("SELECT status FROM prompt_candidates") == [("rejected",)]
    stack.synced(lambda managed: managed[PID].experiment is None, "the split ending")
    assert serves(stack, ollama, SYSTEM)
