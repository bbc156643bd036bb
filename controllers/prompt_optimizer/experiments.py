"""An experiment's life: started (by the optimiser or by hand), its share changed, looked at every tick by the
sequential test, decided, approved, stopped, rolled back. Each step is one transaction under the prompt's row lock
and one or more rows of ``prompt_optimization_logs``; the gateway picks the result up at its next sync.

States: ``running`` (the gateway splits traffic) → ``awaiting_approval`` (the test found the candidate better and
``prompt_optimizer.approval`` is manual: traffic is back on the control until ``prompts approve``) → ``promoted``;
or → ``rolled_back`` (the candidate is worse, the test timed out, or ``prompts rollback``); or → ``stopped`` (by
hand, or the prompt was disabled).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from singularity_ops.config.prompt_optimizer import PromptOptimizerConfig
from singularity_ops.controllers.prompt_optimizer import store
from singularity_ops.controllers.prompt_optimizer.sequential import PROMOTE, Look, look
from singularity_ops.controllers.prompt_optimizer.store import Prompt, PromptError
from singularity_ops.prompt_ab import short_id

OPEN = ("running", "awaiting_approval")


@dataclass(frozen=True)
class Experiment:
    id: int
    prompt_id: str
    candidate_id: int
    control_candidate: int | None
    share: float
    state: str
    started_at: datetime
    started_by: str
    decision: str | None
    reason: str | None
    statistic: float | None
    threshold: float | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "candidate_id": self.candidate_id, "control_candidate": self.control_candidate,
                "share": self.share, "state": self.state, "started_at": self.started_at.isoformat(),
                "started_by": self.started_by, "decision": self.decision, "reason": self.reason,
                "statistic": self.statistic, "threshold": self.threshold}


_SELECT = ("SELECT id, prompt_id, candidate_id, control_candidate, share, state, started_at, started_by, decision, "
           "reason, statistic, threshold FROM prompt_experiments")


def open_experiment(conn: psycopg.Connection, prompt_id: str) -> Experiment | None:
    row = conn.execute(_SELECT + " WHERE prompt_id = %s AND state IN ('running', 'awaiting_approval')",
                       (prompt_id,)).fetchone()
    return Experiment(*row) if row else None


def latest(conn: psycopg.Connection, prompt_id: str) -> Experiment | None:
    row = conn.execute(_SELECT + " WHERE prompt_id = %s ORDER BY id DESC LIMIT 1", (prompt_id,)).fetchone()
    return Experiment(*row) if row else None


def running(conn: psycopg.Connection) -> list[Experiment]:
    return [Experiment(*row) for row in conn.execute(_SELECT + " WHERE state = 'running' ORDER BY id").fetchall()]


def _candidate_status(conn: psycopg.Connection, candidate_id: int, status: str) -> None:
    conn.execute("UPDATE prompt_candidates SET status = %s WHERE id = %s", (status, candidate_id))


def _close(conn: psycopg.Connection, experiment: Experiment, state: str, decision: str | None, reason: str,
           at: datetime) -> None:
    conn.execute("UPDATE prompt_experiments SET state = %s, decision = coalesce(%s, decision), reason = %s, "
                 "stopped_at = %s, updated_at = %s WHERE id = %s", (state, decision, reason, at, at, experiment.id))


def start(conn: psycopg.Connection, ref: str, candidate_id: int | None, share: float, actor: str,
          at: datetime) -> tuple[Experiment, str]:
    """A new experiment for the prompt, or a new share for the one running; (experiment, what was done)."""
    if not 0 < share <= 1:
        raise PromptError(f"share {share:g}: give a fraction of clients above 0 and at most 1, e.g. 0.2")
    with conn.transaction():
        prompt = store.resolve(conn, ref, lock=True)
        if not prompt.enabled:
            raise PromptError(f"prompt {prompt.label} is not enabled: `prompts enable {short_id(prompt.id)} "
                              "--name NAME` first")
        current = open_experiment(conn, prompt.id)
        if current is not None and current.state == "awaiting_approval":
            raise PromptError(f"experiment {current.id} of {prompt.label} waits for approval: `prompts approve "
                              f"{prompt.label}`, or `prompts rollback {prompt.label}`")
        if current is not None:
            if candidate_id is not None and candidate_id != current.candidate_id:
                raise PromptError(f"experiment {current.id} of {prompt.label} runs candidate {current.candidate_id}; "
                                  f"stop it first (`prompts experiment stop {prompt.label}`)")
            conn.execute("UPDATE prompt_experiments SET share = %s, updated_at = %s WHERE id = %s",
                         (share, at, current.id))
            store.log_event(conn, prompt.id, "share_changed", actor, {"from": current.share, "to": share}, at=at,
                            experiment_id=current.id, candidate_id=current.candidate_id)
            return open_experiment(conn, prompt.id), "share_changed"  # type: ignore[return-value]
        chosen = _choose(conn, prompt, candidate_id)
        (new_id,) = conn.execute(
            "INSERT INTO prompt_experiments (prompt_id, candidate_id, control_candidate, share, started_at, "
            "started_by, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (prompt.id, chosen.id, prompt.live_candidate, share, at, actor, at)).fetchone()
        _candidate_status(conn, chosen.id, "testing")
        store.log_event(conn, prompt.id, "experiment_started", actor, {
            "share": share, "control_candidate": prompt.live_candidate, "offline_score": chosen.offline_score,
            "baseline_score": chosen.baseline_score}, at=at, experiment_id=new_id, candidate_id=chosen.id)
        return open_experiment(conn, prompt.id), "started"  # type: ignore[return-value]


def _choose(conn: psycopg.Connection, prompt: Prompt, candidate_id: int | None) -> store.Candidate:
    if candidate_id is not None:
        chosen = store.candidate(conn, prompt.id, candidate_id)
        if chosen.id == prompt.live_candidate:
            raise PromptError(f"candidate {chosen.id} is what {prompt.label} serves already")
        return chosen
    proposed = [c for c in store.candidates(conn, prompt.id) if c.status == "proposed" and c.offline_score is not None]
    if not proposed:
        raise PromptError(f"prompt {prompt.label} has no scored candidate waiting: `prompts optimize {prompt.label}` "
                          "makes some")
    return max(proposed, key=lambda c: (c.offline_score, c.id))


def stop(conn: psycopg.Connection, ref: str, actor: str, at: datetime, reason: str = "stopped by hand") -> Experiment:
    with conn.transaction():
        prompt = store.resolve(conn, ref, lock=True)
        current = open_experiment(conn, prompt.id)
        if current is None:
            raise PromptError(f"prompt {prompt.label} has no experiment running")
        _close(conn, current, "stopped", "stopped", reason, at)
        _candidate_status(conn, current.candidate_id, "proposed")
        store.log_event(conn, prompt.id, "experiment_stopped", actor, {"reason": reason}, at=at,
                        experiment_id=current.id, candidate_id=current.candidate_id)
    return current


def disable(conn: psycopg.Connection, ref: str, actor: str, at: datetime) -> Prompt:
    """Requests carry the client's own prompt again at once; an experiment stops, a promotion is kept for later."""
    with conn.transaction():
        prompt = store.resolve(conn, ref, lock=True)
        current = open_experiment(conn, prompt.id)
        if current is not None:
            _close(conn, current, "stopped", "stopped", "the prompt was disabled", at)
            _candidate_status(conn, current.candidate_id, "proposed")
            store.log_event(conn, prompt.id, "experiment_stopped", actor, {"reason": "the prompt was disabled"},
                            at=at, experiment_id=current.id, candidate_id=current.candidate_id)
        conn.execute("UPDATE prompts SET enabled = false, updated_at = %s WHERE id = %s", (at, prompt.id))
        store.log_event(conn, prompt.id, "disabled", actor, {"name": prompt.name}, at=at)
    return store.resolve(conn, prompt.id)


def decide(conn: psycopg.Connection, experiment_id: int, settings: PromptOptimizerConfig, at: datetime,
           actor: str = "prompt-optimizer") -> Look | None:
    """One look of the sequential test at a running experiment: the statistic stored, counts logged when they
    changed, and a decision carried out. None: the experiment is no longer running."""
    test = settings.test
    with conn.transaction():
        row = conn.execute("SELECT prompt_id FROM prompt_experiments WHERE id = %s", (experiment_id,)).fetchone()
        if row is None:
            return None
        prompt = store.lock(conn, row[0])
        experiment = Experiment(*conn.execute(_SELECT + " WHERE id = %s", (experiment_id,)).fetchone())
        if experiment.state != "running":
            return None
        counts = store.variant_counts(conn, experiment.id)
        found = look(counts.test_counts(), alpha=test.alpha, tau=test.tau, min_outcomes=test.min_outcomes,
                     max_outcomes=test.max_outcomes, elapsed_days=(at - experiment.started_at).total_seconds() / 86400,
                     max_days=test.max_days)
        conn.execute("UPDATE prompt_experiments SET statistic = %s, threshold = %s, updated_at = %s WHERE id = %s "
                     "AND state = 'running'", (found.log_lr, found.threshold, at, experiment.id))
        figures = {"counts": counts.as_json(), "statistic": found.log_lr, "threshold": found.threshold,
                   "difference": found.difference, "interval": found.interval}
        last = conn.execute("SELECT details->'counts' FROM prompt_optimization_logs WHERE experiment_id = %s AND "
                            "event = 'counts' ORDER BY id DESC LIMIT 1", (experiment.id,)).fetchone()
        if last is None or last[0] != figures["counts"]:
            store.log_event(conn, prompt.id, "counts", actor, figures, at=at, experiment_id=experiment.id,
                            candidate_id=experiment.candidate_id)
        if found.decision == "continue":
            return found
        conn.execute("UPDATE prompt_experiments SET decision = %s, reason = %s, decided_at = %s WHERE id = %s",
                     (found.decision, found.reason, at, experiment.id))
        store.log_event(conn, prompt.id, "decision", actor, {"decision": found.decision, "reason": found.reason,
                                                             **figures}, at=at, experiment_id=experiment.id,
                        candidate_id=experiment.candidate_id)
        if found.decision != PROMOTE:
            _close(conn, experiment, "rolled_back", found.decision, found.reason, at)
            _candidate_status(conn, experiment.candidate_id, "rejected")
        elif settings.approval == "manual":
            conn.execute("UPDATE prompt_experiments SET state = 'awaiting_approval', updated_at = %s WHERE id = %s",
                         (at, experiment.id))
            _candidate_status(conn, experiment.candidate_id, "winner")
        else:
            _promote(conn, prompt, experiment, "auto", at, found.reason)
    return found


def _promote(conn: psycopg.Connection, prompt: Prompt, experiment: Experiment, actor: str, at: datetime,
             reason: str | None) -> None:
    store.log_event(conn, prompt.id, "approval", actor, {"decision": PROMOTE, "reason": reason}, at=at,
                    experiment_id=experiment.id, candidate_id=experiment.candidate_id)
    _close(conn, experiment, "promoted", PROMOTE, reason or f"promoted by {actor}", at)
    if prompt.live_candidate is not None:
        _candidate_status(conn, prompt.live_candidate, "rolled_back")
    _candidate_status(conn, experiment.candidate_id, "promoted")
    conn.execute("UPDATE prompts SET live_candidate = %s, updated_at = %s WHERE id = %s",
                 (experiment.candidate_id, at, prompt.id))
    store.log_event(conn, prompt.id, "promoted", actor, {"previous": prompt.live_candidate}, at=at,
                    experiment_id=experiment.id, candidate_id=experiment.candidate_id)


def approve(conn: psycopg.Connection, ref: str, actor: str, at: datetime) -> Experiment:
    with conn.transaction():
        prompt = store.resolve(conn, ref, lock=True)
        current = open_experiment(conn, prompt.id)
        if current is None or current.state != "awaiting_approval":
            state = "is still running: the test has not decided" if current else "is waiting for approval"
            raise PromptError(f"no experiment of {prompt.label} {state}")
        _promote(conn, prompt, current, actor, at, current.reason)
    return current


def rollback(conn: psycopg.Connection, ref: str, actor: str, at: datetime) -> Prompt:
    """The original text for everyone at once; an open experiment ends as rolled back."""
    with conn.transaction():
        prompt = store.resolve(conn, ref, lock=True)
        current = open_experiment(conn, prompt.id)
        if current is not None:
            _close(conn, current, "rolled_back", None, f"rolled back by {actor}", at)
            _candidate_status(conn, current.candidate_id, "rejected")
        if prompt.live_candidate is not None:
            _candidate_status(conn, prompt.live_candidate, "rolled_back")
        if current is None and prompt.live_candidate is None:
            raise PromptError(f"prompt {prompt.label} serves its original text and runs no experiment: nothing "
                              "to roll back")
        conn.execute("UPDATE prompts SET live_candidate = NULL, updated_at = %s WHERE id = %s", (at, prompt.id))
        store.log_event(conn, prompt.id, "rolled_back", actor, {
            "previous": prompt.live_candidate, "experiment_id": current.id if current else None}, at=at,
            experiment_id=current.id if current else None, candidate_id=prompt.live_candidate)
    return store.resolve(conn, prompt.id)
