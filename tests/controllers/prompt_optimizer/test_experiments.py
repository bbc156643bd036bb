"""An experiment's life in the database: started with the best candidate, its share set, decided by the test on
simulated outcomes (promoted after a manual approval, or at once with approval auto; rolled back when worse or
when it times out), stopped, rolled back at once, and every step in prompt_optimization_logs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from singularity_ops.controllers.prompt_optimizer import experiments, store
from singularity_ops.controllers.prompt_optimizer.store import PromptError
from tests.controllers.prompt_optimizer.helpers import (
    NOW,
    PID,
    add_dialogues,
    make_config,
    migrate,
    rows,
    seed_prompt,
)


@pytest.fixture
def db(tmp_path: Path, database_url: str) -> str:
    migrate(make_config(tmp_path, database_url))
    seed_prompt(database_url)
    return database_url


@pytest.fixture
def conn(db: str):
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


def settings(tmp_path: Path, db: str, **changes):
    return make_config(tmp_path, db, **changes).prompt_optimizer


def candidates(conn, *scores: float) -> list[int]:
    return [store.add_candidate(conn, PID, None, f"candidate scored {s}", "opt", s, 5.0, [], "prompt-optimizer", NOW)
            for s in scores]


def events(db: str) -> list[tuple[str, str]]:
    return [(e, a) for e, a in rows(db, "SELECT event, actor FROM prompt_optimization_logs ORDER BY id")]


def test_start_takes_the_best_scored_candidate_and_a_second_start_sets_the_share(conn, db: str) -> None:
    _, best, _ = candidates(conn, 6.0, 8.5, 7.0)
    experiment, done = experiments.start(conn, "support", None, 0.2, "cli:ops", NOW)
    assert (done, experiment.candidate_id, experiment.share, experiment.state) == ("started", best, 0.2, "running")
    assert store.candidate(conn, PID, best).status == "testing"
    again, done = experiments.start(conn, PID[:6], None, 0.5, "cli:ops", NOW)
    assert (done, again.id, again.share) == ("share_changed", experiment.id, 0.5)
    with pytest.raises(PromptError, match="stop it first"):
        experiments.start(conn, "support", best - 1, 0.5, "cli:ops", NOW)
    with pytest.raises(PromptError, match="above 0 and at most 1"):
        experiments.start(conn, "support", None, 1.5, "cli:ops", NOW)


def test_a_prompt_without_candidates_or_not_enabled_cannot_start(conn, db: str) -> None:
    with pytest.raises(PromptError, match="prompts optimize"):
        experiments.start(conn, "support", None, 0.2, "cli:ops", NOW)
    experiments.disable(conn, "support", "cli:ops", NOW)
    with pytest.raises(PromptError, match="not enabled"):
        experiments.start(conn, "support", None, 0.2, "cli:ops", NOW)


def run_experiment(conn, db: str, control: tuple[int, int], candidate: tuple[int, int]) -> experiments.Experiment:
    (chosen,) = candidates(conn, 8.0)
    experiment, _ = experiments.start(conn, "support", chosen, 0.2, "prompt-optimizer", NOW)
    add_dialogues(db, {"success": control[0], "failure": control[1]}, experiment_id=experiment.id, variant="control")
    add_dialogues(db, {"weak_success": candidate[0], "failure": candidate[1], "unknown": 7},
                  experiment_id=experiment.id, variant="candidate", served=chosen)
    return experiment


def test_a_better_candidate_waits_for_manual_approval_then_is_promoted(conn, db: str, tmp_path: Path) -> None:
    experiment = run_experiment(conn, db, control=(1000, 1000), candidate=(330, 170))  # 50 % against 66 %
    found = experiments.decide(conn, experiment.id, settings(tmp_path, db), NOW + timedelta(hours=1))
    assert found.decision == "promote" and found.log_lr >= found.threshold
    assert experiments.open_experiment(conn, PID).state == "awaiting_approval"
    assert store.resolve(conn, PID).live_candidate is None  # nothing changes for users before the approval
    assert store.candidate(conn, PID, experiment.candidate_id).status == "winner"
    with pytest.raises(PromptError, match="waits for approval"):
        experiments.start(conn, "support", None, 0.2, "cli:ops", NOW)
    experiments.approve(conn, "support", "cli:ops", NOW + timedelta(hours=2))
    assert store.resolve(conn, PID).live_candidate == experiment.candidate_id
    assert rows(db, "SELECT state, decision FROM prompt_experiments") == [("promoted", "promote")]
    log = events(db)
    assert log == [("enabled", "cli:test"), ("candidate_created", "prompt-optimizer"),
                   ("experiment_started", "prompt-optimizer"), ("counts", "prompt-optimizer"),
                   ("decision", "prompt-optimizer"), ("approval", "cli:ops"), ("promoted", "cli:ops")]
    ((counts, statistic),) = rows(db, "SELECT details->'counts', (details->>'statistic')::float "
                                      "FROM prompt_optimization_logs WHERE event = 'decision'")
    assert counts == {"control": {"requests": 2000, "success": 1000, "failure": 1000},
                      "candidate": {"requests": 507, "weak_success": 330, "failure": 170}}
    assert statistic == pytest.approx(found.log_lr)


def test_with_approval_auto_the_winner_is_promoted_at_once(conn, db: str, tmp_path: Path) -> None:
    experiment = run_experiment(conn, db, control=(1000, 1000), candidate=(330, 170))
    experiments.decide(conn, experiment.id, settings(tmp_path, db, approval="auto"), NOW + timedelta(hours=1))
    assert store.resolve(conn, PID).live_candidate == experiment.candidate_id
    assert ("approval", "auto") in events(db) and ("promoted", "auto") in events(db)


def test_a_worse_candidate_is_rolled_back(conn, db: str, tmp_path: Path) -> None:
    experiment = run_experiment(conn, db, control=(1000, 1000), candidate=(170, 330))
    found = experiments.decide(conn, experiment.id, settings(tmp_path, db), NOW + timedelta(hours=1))
    assert found.decision == "roll_back"
    assert rows(db, "SELECT state, decision FROM prompt_experiments") == [("rolled_back", "roll_back")]
    assert store.candidate(conn, PID, experiment.candidate_id).status == "rejected"
    assert store.resolve(conn, PID).live_candidate is None


def test_no_difference_keeps_running_then_times_out(conn, db: str, tmp_path: Path) -> None:
    experiment = run_experiment(conn, db, control=(400, 400), candidate=(100, 100))
    looked = experiments.decide(conn, experiment.id, settings(tmp_path, db), NOW + timedelta(days=1))
    assert looked.decision == "continue"
    assert experiments.decide(conn, experiment.id, settings(tmp_path, db), NOW + timedelta(days=1)).decision == \
        "continue"
    assert [e for e, _ in events(db)].count("counts") == 1  # logged again only when they change
    timed_out = experiments.decide(conn, experiment.id, settings(tmp_path, db), NOW + timedelta(days=15))
    assert timed_out.decision == "timeout" and "14 days" in timed_out.reason
    assert rows(db, "SELECT state, decision FROM prompt_experiments") == [("rolled_back", "timeout")]
    assert experiments.decide(conn, experiment.id, settings(tmp_path, db), NOW + timedelta(days=16)) is None


def test_rollback_restores_the_original_at_once_and_says_who(conn, db: str, tmp_path: Path) -> None:
    experiment = run_experiment(conn, db, control=(1000, 1000), candidate=(330, 170))
    experiments.decide(conn, experiment.id, settings(tmp_path, db, approval="auto"), NOW)
    experiments.rollback(conn, "support", "cli:ops", NOW + timedelta(minutes=5))
    assert store.resolve(conn, PID).live_candidate is None
    assert store.candidate(conn, PID, experiment.candidate_id).status == "rolled_back"
    assert events(db)[-1] == ("rolled_back", "cli:ops")
    with pytest.raises(PromptError, match="nothing to roll back"):
        experiments.rollback(conn, "support", "cli:ops", NOW)


def test_rollback_during_an_experiment_ends_it(conn, db: str) -> None:
    (chosen,) = candidates(conn, 8.0)
    experiments.start(conn, "support", chosen, 0.2, "cli:ops", NOW)
    experiments.rollback(conn, "support", "cli:ops", NOW)
    assert rows(db, "SELECT state FROM prompt_experiments") == [("rolled_back",)]


def test_stop_and_disable_end_an_experiment_and_the_candidate_can_run_again(conn, db: str) -> None:
    (chosen,) = candidates(conn, 8.0)
    experiments.start(conn, "support", chosen, 0.2, "cli:ops", NOW)
    experiments.stop(conn, "support", "cli:ops", NOW)
    assert store.candidate(conn, PID, chosen).status == "proposed"
    with pytest.raises(PromptError, match="no experiment running"):
        experiments.stop(conn, "support", "cli:ops", NOW)
    experiments.start(conn, "support", None, 0.2, "cli:ops", NOW)
    experiments.disable(conn, "support", "cli:ops", NOW)
    assert rows(db, "SELECT state, reason FROM prompt_experiments ORDER BY id") == [
        ("stopped", "stopped by hand"), ("stopped", "the prompt was disabled")]
    assert rows(db, "SELECT enabled FROM prompts") == [(False,)]


def test_approve_needs_a_decided_experiment(conn, db: str) -> None:
    with pytest.raises(PromptError, match="waiting for approval"):
        experiments.approve(conn, "support", "cli:ops", NOW)
    experiments.start(conn, "support", candidates(conn, 8.0)[0], 0.2, "cli:ops", NOW)
    with pytest.raises(PromptError, match="still running"):
        experiments.approve(conn, "support", "cli:ops", NOW)


def test_prompts_are_found_by_name_or_a_unique_id_prefix(conn, db: str) -> None:
    assert store.resolve(conn, "support").id == PID
    assert store.resolve(conn, PID[:4].upper()).id == PID
    with pytest.raises(PromptError, match="no prompt 'nope'"):
        store.resolve(conn, "nope")
    with pytest.raises(PromptError, match="letters, digits"):
        store.enable(conn, PID, "has space", "cli:ops", NOW)
