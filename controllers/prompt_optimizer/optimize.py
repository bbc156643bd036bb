"""One optimisation of an enabled prompt: the OPRO-style meta-prompt to the optimiser model, K candidates back, each
scored offline, and an experiment started for a candidate that beats the current prompt.

Offline score: the prompt's best dialogues are replayed — their messages up to the last user turn, with the
candidate (or the current prompt, for the baseline) as the system message, to the model each dialogue used, at
temperature 0 — and the validator's ``judge`` scorer grades each new answer 0-10 against the answer the user was
satisfied with (``prompt_optimizer.judge_model``, default the optimiser model). A candidate whose mean beats the
baseline's by ``prompt_optimizer.min_offline_gain`` starts an experiment at ``prompt_optimizer.share``. The judge's
prompt and reply for every replayed turn are stored with the candidate.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import psycopg

from singularity_ops.config.prompt_optimizer import PromptOptimizerConfig
from singularity_ops.controllers.prompt_optimizer import experiments, store
from singularity_ops.controllers.prompt_optimizer.meta_prompt import Example, build, parse
from singularity_ops.controllers.prompt_optimizer.store import Prompt, PromptError
from singularity_ops.controllers.validator.scorers import Judge
from singularity_ops.errors import OllamaError

log = logging.getLogger(__name__)
OPTIMIZER_TEMPERATURE = 1.0  # OPRO samples its optimiser at 1.0: varied candidates
RUBRIC = ("Judge whether the answer serves the user at least as well as the reference answer below, which the user "
          "was satisfied with. Score 10 when it is as good or better, 5 when it is somewhat worse, 0 when it is "
          "wrong or useless.\nReference answer:\n<<<\n{reference}\n>>>")


class Models(Protocol):
    def chat(self, model: str, messages: list[dict[str, Any]], temperature: float) -> str: ...

    def judge(self, prompt: str) -> str: ...


@dataclass(frozen=True)
class Dialogue:
    request_id: str
    model: str
    messages: list[Any]
    answer: str | None

    def example(self) -> Example:
        return Example(self.messages, self.answer or "(no answer: the request failed)")


@dataclass
class Scored:
    text: str
    score: float | None
    evaluation: list[dict[str, Any]]
    id: int | None = None


@dataclass
class Report:
    prompt: str
    prompt_id: str
    dry_run: bool
    optimizer_model: str
    judge_model: str
    patterns: str = ""
    baseline: Scored | None = None
    candidates: list[Scored] = field(default_factory=list)
    experiment_id: int | None = None
    outcome: str = ""

    def as_json(self) -> dict[str, Any]:
        def scored(s: Scored | None) -> dict[str, Any] | None:
            return None if s is None else {"id": s.id, "text": s.text, "offline_score": s.score,
                                           "replayed": len(s.evaluation)}

        return {"prompt": self.prompt, "prompt_id": self.prompt_id, "dry_run": self.dry_run,
                "optimizer_model": self.optimizer_model, "judge_model": self.judge_model, "patterns": self.patterns,
                "baseline": scored(self.baseline), "candidates": [scored(c) for c in self.candidates],
                "experiment_id": self.experiment_id, "outcome": self.outcome}


_DIALOGUE = "SELECT request_id::text, model, messages, answer FROM prompt_dialogues WHERE prompt_id = %s "


def best_dialogues(conn: psycopg.Connection, prompt_id: str, limit: int) -> list[Dialogue]:
    return [Dialogue(*row) for row in conn.execute(
        _DIALOGUE + "AND outcome IN ('success', 'weak_success') AND coalesce(answer, '') <> '' "
        "ORDER BY (outcome = 'success') DESC, rating DESC NULLS LAST, at DESC LIMIT %s", (prompt_id, limit))]


def worst_dialogues(conn: psycopg.Connection, prompt_id: str, limit: int) -> list[Dialogue]:
    return [Dialogue(*row) for row in conn.execute(
        _DIALOGUE + "AND outcome = 'failure' ORDER BY (outcome_reason = 'feedback') DESC, at DESC LIMIT %s",
        (prompt_id, limit))] if limit else []


def new_successes(conn: psycopg.Connection, prompt_id: str) -> int:
    """Successful dialogues since the prompt's last optimisation (all of them before the first)."""
    (count,) = conn.execute(
        "SELECT count(*) FROM prompt_dialogues WHERE prompt_id = %s AND outcome IN ('success', 'weak_success') "
        "AND at > coalesce((SELECT max(at) FROM prompt_optimization_logs WHERE prompt_id = %s "
        "AND event = 'optimization'), '-infinity')", (prompt_id, prompt_id)).fetchone()
    return count


def scored_history(conn: psycopg.Connection, prompt: Prompt) -> list[tuple[str, float | None]]:
    """Every text this prompt has served or had proposed, with its measured success rate (None: never served)."""
    rates: dict[int | None, float] = {}
    for served, good, bad in conn.execute(
            "SELECT served_candidate, count(*) FILTER (WHERE outcome IN ('success', 'weak_success')), "
            "count(*) FILTER (WHERE outcome = 'failure') FROM prompt_dialogues WHERE prompt_id = %s "
            "GROUP BY served_candidate", (prompt.id,)).fetchall():
        if good + bad:
            rates[served] = good / (good + bad)
    history: list[tuple[str, float | None]] = []
    if prompt.original_text is not None:
        history.append((prompt.original_text, rates.get(None)))
    history += [(c.text, rates.get(c.id)) for c in store.candidates(conn, prompt.id)]
    return history


def with_system(messages: list[Any], text: str) -> list[dict[str, Any]]:
    """The conversation up to its last user turn, with ``text`` as its system message."""
    kept = [m for m in messages if isinstance(m, dict)]
    last_user = max((i for i, m in enumerate(kept) if m.get("role") == "user"), default=len(kept) - 1)
    turns = [dict(m) for m in kept[:last_user + 1] if m.get("role") != "system"]
    return [{"role": "system", "content": text}, *turns]


class _Judging:
    """``scorers.Helpers`` for the judge scorer, over the optimiser's judge model."""

    def __init__(self, models: Models) -> None:
        self.models = models

    def judge(self, prompt: str) -> str:
        return self.models.judge(prompt)

    def embed(self, texts: list[str]) -> list[list[float]]:  # pragma: no cover - the judge scorer never embeds
        raise NotImplementedError


def score(models: Models, text: str, dialogues: list[Dialogue]) -> Scored:
    helpers = _Judging(models)
    evaluation: list[dict[str, Any]] = []
    for dialogue in dialogues:
        messages = with_system(dialogue.messages, text)
        question = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        try:
            answer = models.chat(dialogue.model, messages, 0.0)
        except OllamaError as exc:
            evaluation.append({"request_id": dialogue.request_id, "error": str(exc)})
            continue
        verdict = Judge(RUBRIC.format(reference=dialogue.answer or "")).score(answer, str(question), helpers)
        evaluation.append({"request_id": dialogue.request_id, "question": question, "answer": answer,
                           "score": verdict.score if verdict.score is not None else 0.0, "detail": verdict.detail,
                           **verdict.extra})
    scores = [e["score"] for e in evaluation if "score" in e]
    return Scored(text, round(statistics.fmean(scores), 4) if scores else None, evaluation)


def optimize(conn: psycopg.Connection, ref: str, settings: PromptOptimizerConfig, models: Models, actor: str,
             at: datetime, *, dry_run: bool = False) -> Report:
    prompt = store.resolve(conn, ref)
    if not prompt.enabled:
        raise PromptError(f"prompt {prompt.label} is not enabled: `prompts enable ID --name NAME` first")
    if not settings.model:
        raise PromptError("prompt_optimizer.model is not set: name the installed Ollama model that writes candidates")
    current = store.current_text(conn, prompt)
    if current is None:
        raise PromptError(f"the gateway has not seen the text of {prompt.label} since it was enabled: it is kept "
                          "at the first request that carries it")
    report = Report(prompt.label, prompt.id, dry_run, settings.model, settings.judge_model or settings.model)
    good = best_dialogues(conn, prompt.id, settings.examples)
    if not good:
        raise PromptError(f"prompt {prompt.label} has no successful dialogue yet: the optimiser learns from them")
    bad = worst_dialogues(conn, prompt.id, settings.worst_examples)
    history = scored_history(conn, prompt)
    meta = build(history, [d.example() for d in good], [d.example() for d in bad], settings.candidates)
    answer = models.chat(settings.model, [{"role": "user", "content": meta}], OPTIMIZER_TEMPERATURE)
    proposal = parse(answer, settings.candidates, {text for text, _ in history} | {current})
    report.patterns = proposal.patterns
    if proposal.candidates:
        report.baseline = score(models, current, good)
        report.candidates = [score(models, text, good) for text in proposal.candidates]
    best = max((c for c in report.candidates if c.score is not None), key=lambda c: c.score or 0.0, default=None)
    baseline = report.baseline.score if report.baseline else None
    wins = best is not None and baseline is not None and best.score is not None and (
        best.score >= baseline + settings.min_offline_gain)
    if not proposal.candidates:
        report.outcome = "the optimiser's answer held no new <prompt> candidate"
    elif not wins:
        report.outcome = (f"no candidate beats the current prompt offline by {settings.min_offline_gain:g} "
                          f"(best {best.score if best else None} vs {baseline})")
    if dry_run:
        report.outcome = report.outcome or "a candidate beats the current prompt offline (dry run: nothing started)"
        return report
    with conn.transaction():
        store.lock(conn, prompt.id)
        store.log_event(conn, prompt.id, "optimization", actor, {
            "optimizer_model": settings.model, "judge_model": report.judge_model, "meta_prompt": meta,
            "answer": answer, "patterns": proposal.patterns, "examples": [d.request_id for d in good],
            "counter_examples": [d.request_id for d in bad], "baseline_score": baseline,
            "candidates": len(proposal.candidates),
            "baseline_evaluation": report.baseline.evaluation if report.baseline else []},
            at=at, candidate_id=prompt.live_candidate)
        for candidate in report.candidates:
            candidate.id = store.add_candidate(conn, prompt.id, prompt.live_candidate, candidate.text, settings.model,
                                               candidate.score, baseline, candidate.evaluation, actor, at)
    if wins and best is not None:
        if experiments.open_experiment(conn, prompt.id) is not None:
            report.outcome = f"candidate {best.id} beats the current prompt offline; an experiment is open already"
        else:
            started, _ = experiments.start(conn, prompt.id, best.id, settings.share, actor, at)
            report.experiment_id = started.id
            report.outcome = (f"candidate {best.id} beats the current prompt offline ({best.score} vs {baseline}): "
                              f"experiment {started.id} started at share {settings.share:g}")
    log.info("prompt optimizer: %s: %s", prompt.label, report.outcome)
    return report
