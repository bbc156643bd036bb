"""One optimisation with a deterministic optimiser, model and judge: the meta-prompt it gets, K candidates scored
offline by replaying the best dialogues and judging against their answers, an experiment for the winner."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from singularity_ops.controllers.prompt_optimizer import store
from singularity_ops.controllers.prompt_optimizer.optimize import optimize, with_system
from singularity_ops.controllers.prompt_optimizer.store import PromptError
from tests.controllers.prompt_optimizer.helpers import (
    GOOD_CANDIDATE,
    MODEL,
    NOW,
    OPTIMIZER,
    PID,
    PLAIN_CANDIDATE,
    SYSTEM,
    FakeModels,
    add_dialogues,
    make_config,
    migrate,
    rows,
    seed_prompt,
)


@pytest.fixture
def setup(tmp_path: Path, database_url: str):
    config = make_config(tmp_path, database_url, examples=4, worst_examples=2)
    migrate(config)
    seed_prompt(database_url)
    add_dialogues(database_url, {"success": 3, "weak_success": 3, "failure": 2, "unknown": 2})
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield config, conn


def test_candidates_are_scored_offline_and_the_winner_starts_an_experiment(setup, database_url: str) -> None:
    config, conn = setup
    models = FakeModels()
    report = optimize(conn, "support", config.prompt_optimizer, models, "cli:ops", NOW)
    assert report.baseline.score == 5.0
    assert [(c.text, c.score) for c in report.candidates] == [(GOOD_CANDIDATE, 9.0), (PLAIN_CANDIDATE, 5.0)]
    assert report.patterns == "- satisfied users got times and a number"
    assert rows(database_url, "SELECT text, offline_score, baseline_score, optimizer_model, status "
                              "FROM prompt_candidates ORDER BY id") == [
        (GOOD_CANDIDATE, 9.0, 5.0, OPTIMIZER, "testing"), (PLAIN_CANDIDATE, 5.0, 5.0, OPTIMIZER, "proposed")]
    assert rows(database_url, "SELECT candidate_id, share, state, started_by FROM prompt_experiments") == [
        (report.candidates[0].id, 0.2, "running", "cli:ops")]
    assert [e for (e,) in rows(database_url, "SELECT event FROM prompt_optimization_logs ORDER BY id")] == [
        "enabled", "optimization", "candidate_created", "candidate_created", "experiment_started"]


def test_the_optimiser_sees_the_history_the_best_and_the_worst_dialogues(setup) -> None:
    config, conn = setup
    models = FakeModels()
    optimize(conn, "support", config.prompt_optimizer, models, "cli:ops", NOW)
    ((_, messages, temperature),) = [c for c in models.calls if c[0] == OPTIMIZER]
    meta = messages[0]["content"]
    assert temperature == 1.0
    assert f'<prompt score="75">\n{SYSTEM}\n</prompt>' in meta  # 6 satisfied of the 8 with a signal
    assert meta.count("<dialogue>") == 4 + 2 and "write 3 new system prompts" in meta


def test_replays_use_each_dialogues_model_the_candidate_and_temperature_0(setup) -> None:
    config, conn = setup
    models = FakeModels()
    optimize(conn, "support", config.prompt_optimizer, models, "cli:ops", NOW)
    replays = [c for c in models.calls if c[0] != OPTIMIZER]
    assert len(replays) == 3 * 4  # baseline and two candidates, four best dialogues each
    assert {c[0] for c in replays} == {MODEL} and {c[2] for c in replays} == {0.0}
    assert {c[1][0]["content"] for c in replays} == {SYSTEM, GOOD_CANDIDATE, PLAIN_CANDIDATE}
    assert all(c[1][-1]["role"] == "user" for c in replays)


def test_each_judgement_is_kept_with_its_prompt_and_reply(setup, database_url: str) -> None:
    config, conn = setup
    optimize(conn, "support", config.prompt_optimizer, FakeModels(), "cli:ops", NOW)
    ((evaluation,),) = rows(database_url, "SELECT evaluation FROM prompt_candidates WHERE text = %s", GOOD_CANDIDATE)
    assert len(evaluation) == 4
    first = evaluation[0]
    assert first["score"] == 9.0 and "555-0100" in first["judge_prompt"] and '"score": 9' in first["judge_answer"]
    assert "Reference answer" in first["judge_prompt"] and first["question"].startswith("When are you open?")


def test_a_dry_run_records_nothing(setup, database_url: str) -> None:
    config, conn = setup
    report = optimize(conn, "support", config.prompt_optimizer, FakeModels(), "cli:ops", NOW, dry_run=True)
    assert report.dry_run and report.candidates[0].score == 9.0 and report.experiment_id is None
    assert rows(database_url, "SELECT count(*) FROM prompt_candidates") == [(0,)]
    assert rows(database_url, "SELECT count(*) FROM prompt_optimization_logs WHERE event <> 'enabled'") == [(0,)]


def test_no_winner_no_experiment_and_no_tags_no_candidates(setup, database_url: str) -> None:
    config, conn = setup
    report = optimize(conn, "support", config.prompt_optimizer, FakeModels(f"<prompt>{PLAIN_CANDIDATE}</prompt>"),
                      "prompt-optimizer", NOW)
    assert report.experiment_id is None and "no candidate beats" in report.outcome
    report = optimize(conn, "support", config.prompt_optimizer, FakeModels("Just be nicer."), "prompt-optimizer", NOW)
    assert report.candidates == [] and "no new <prompt>" in report.outcome
    assert rows(database_url, "SELECT count(*) FROM prompt_experiments") == [(0,)]


def test_it_refuses_clearly_without_a_model_text_or_successes(tmp_path: Path, database_url: str) -> None:
    config = make_config(tmp_path, database_url)
    migrate(config)
    seed_prompt(database_url, text_seen=False)
    with psycopg.connect(database_url, autocommit=True) as conn:
        with pytest.raises(PromptError, match="has not seen the text"):
            optimize(conn, "support", config.prompt_optimizer, FakeModels(), "cli:ops", NOW)
        conn.execute("UPDATE prompts SET original_text = %s", (SYSTEM,))
        with pytest.raises(PromptError, match="no successful dialogue"):
            optimize(conn, "support", config.prompt_optimizer, FakeModels(), "cli:ops", NOW)
        no_model = make_config(tmp_path, database_url, model=None)
        with pytest.raises(PromptError, match=r"prompt_optimizer\.model"):
            optimize(conn, "support", no_model.prompt_optimizer, FakeModels(), "cli:ops", NOW)
        assert store.resolve(conn, PID).enabled


def test_a_replayed_conversation_ends_at_its_last_user_turn_under_the_new_system_prompt() -> None:
    messages = [{"role": "system", "content": "old"}, {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
                {"role": "assistant", "content": "stray"}]
    assert with_system(messages, "new") == [{"role": "system", "content": "new"}, {"role": "user", "content": "a"},
                                            {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
