"""What a validation run measures and keeps: per-model figures, the quality score, the demotion rule, and the
``validation_runs`` / ``model_validation_results`` / ``model_validation_cases`` tables (migration 0008).

The demotion table is the model manager's ``model_status``: a demoted model is never preloaded and never routed
to. The validator only promotes back what it demoted itself (the reason starts with ``validation``); a model
demoted by hand stays demoted until ``models promote``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from singularity_ops.controllers.model_manager.store import set_status

REASON_PREFIX = "validation"
LOCK_KEY = 0x56_41_4C_44  # "VALD": one validation run at a time, the controller's and the command's
# quality_score = ACCURACY_WEIGHT · accuracy + LATENCY_WEIGHT · latency term + SPEED_WEIGHT · speed term
ACCURACY_WEIGHT, LATENCY_WEIGHT, SPEED_WEIGHT = 0.8, 0.1, 0.1
LATENCY_REFERENCE_SECONDS = 5.0  # a median answer time of 5 s halves the latency term
SPEED_REFERENCE_TOKENS_PER_SECOND = 20.0  # 20 tokens/s halves the speed term


@dataclass
class CaseResult:
    case_id: str
    weight: float
    answer: str = ""
    latency_seconds: float | None = None
    output_tokens: int | None = None
    generation_seconds: float | None = None
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    passed: bool = False
    error: str | None = None


@dataclass
class ModelResult:
    model: str
    digest: str | None
    status: str  # ok, demoted, promoted, skipped, failed
    reason: str = ""
    cases: list[CaseResult] = field(default_factory=list)
    accuracy: float | None = None
    passed: int = 0
    latency_p50_seconds: float | None = None
    latency_p95_seconds: float | None = None
    tokens_per_second: float | None = None
    quality_score: float | None = None
    at: datetime | None = None
    row_id: int | None = None

    def summarise(self) -> None:
        """Accuracy, latency percentiles, tokens/s and the quality score from the case results."""
        answered = [c for c in self.cases if c.error is None]
        total_weight = sum(c.weight for c in self.cases)
        self.passed = sum(1 for c in self.cases if c.passed)
        self.accuracy = round(sum(c.weight for c in self.cases if c.passed) / total_weight, 6) if total_weight else None
        latencies = sorted(c.latency_seconds for c in answered if c.latency_seconds is not None)
        self.latency_p50_seconds = percentile(latencies, 0.5)
        self.latency_p95_seconds = percentile(latencies, 0.95)
        tokens = sum(c.output_tokens or 0 for c in answered)
        seconds = sum(c.generation_seconds or 0.0 for c in answered)
        self.tokens_per_second = round(tokens / seconds, 3) if tokens and seconds > 0 else None
        if self.accuracy is not None:
            self.quality_score = quality_score(self.accuracy, self.latency_p50_seconds, self.tokens_per_second)

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "status": self.status, "accuracy": self.accuracy, "cases": len(self.cases),
                "passed": self.passed, "latency_p50_seconds": self.latency_p50_seconds,
                "latency_p95_seconds": self.latency_p95_seconds, "tokens_per_second": self.tokens_per_second,
                "quality_score": self.quality_score, "reason": self.reason}


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    value = sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
    return round(value, 6)


def quality_score(accuracy: float, latency_p50_seconds: float | None, tokens_per_second: float | None) -> float:
    """0..1: mostly accuracy, with answer time and generation speed as smaller terms. Every term is absolute (no
    comparison with the other models of the run), so scores of one suite compare across runs."""
    latency = 1 / (1 + latency_p50_seconds / LATENCY_REFERENCE_SECONDS) if latency_p50_seconds is not None else 0.0
    speed = tokens_per_second / (tokens_per_second + SPEED_REFERENCE_TOKENS_PER_SECOND) if tokens_per_second else 0.0
    return round(ACCURACY_WEIGHT * accuracy + LATENCY_WEIGHT * latency + SPEED_WEIGHT * speed, 4)


@dataclass(frozen=True)
class Decision:
    status: str  # ok, demoted, promoted
    model_status: str | None  # what to write to model_status (None: leave it)
    reason: str


def decide(accuracy: float, min_accuracy: float, promote_margin: float, current: tuple[str, str] | None,
           run_id: int, demote: bool) -> Decision:
    """The demotion rule with hysteresis: demoted below ``min_accuracy``; promoted back (only from a demotion by
    validation) at ``min_accuracy + promote_margin`` or more; in between, a demoted model stays demoted."""
    status, why = current or ("active", "")
    by_validation = status == "demoted" and why.startswith(REASON_PREFIX)
    figures = f"accuracy {accuracy:.1%}"
    if status == "demoted" and not by_validation:
        return Decision("demoted", None, f"{figures}; demoted by hand ({why or 'no reason given'}): left as it is")
    promote_at = min(1.0, min_accuracy + promote_margin)
    if accuracy < min_accuracy:
        reason = f"{REASON_PREFIX} run {run_id}: {figures} < {min_accuracy:.0%}"
        if not demote:
            return Decision("demoted" if by_validation else "ok", None, f"{reason}; --no-demote: nothing changed")
        return Decision("demoted", "demoted", reason)
    if by_validation and accuracy < promote_at:
        return Decision("demoted", None, f"{figures} ≥ {min_accuracy:.0%} but < {promote_at:.0%} needed to promote "
                                         f"back: stays demoted ({why})")
    if by_validation:
        reason = f"{REASON_PREFIX} run {run_id}: {figures} ≥ {promote_at:.0%}"
        if not demote:
            return Decision("demoted", None, f"{reason}; --no-demote: nothing changed")
        return Decision("promoted", "active", reason)
    return Decision("ok", None, f"{figures} ≥ {min_accuracy:.0%}")


# --- the tables --------------------------------------------------------------------------------------------------


def fail_interrupted(conn: psycopg.Connection) -> int:
    """Runs still 'running' while the caller holds the validation lock were interrupted (a crash, a kill)."""
    return conn.execute("UPDATE validation_runs SET status = 'failed', finished_at = now(), error = 'interrupted' "
                        "WHERE status = 'running'").rowcount


def start_run(conn: psycopg.Connection, at: datetime, trigger: str, suite_name: str, suite_hash: str,
              demote: bool) -> int:
    row = conn.execute("INSERT INTO validation_runs (started_at, trigger, suite_name, suite_hash, status, demote) "
                       "VALUES (%s, %s, %s, %s, 'running', %s) RETURNING id",
                       (at, trigger, suite_name, suite_hash, demote)).fetchone()
    assert row is not None
    return int(row[0])


def record_model(conn: psycopg.Connection, run_id: int, suite_hash: str, result: ModelResult,
                 excerpt_chars: int) -> int:
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO model_validation_results (run_id, at, model, model_digest, suite_hash, status, accuracy,
               cases, passed, latency_p50_seconds, latency_p95_seconds, tokens_per_second, quality_score, reason)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            (run_id, result.at, result.model, result.digest, suite_hash, result.status, result.accuracy,
             len(result.cases), result.passed, result.latency_p50_seconds, result.latency_p95_seconds,
             result.tokens_per_second, result.quality_score, result.reason)).fetchone()
        assert row is not None
        result_id = int(row[0])
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO model_validation_cases (result_id, case_id, passed, weight, latency_seconds, "
                "output_tokens, answer_excerpt, verdicts, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(result_id, c.case_id, c.passed, c.weight, c.latency_seconds, c.output_tokens,
                  c.answer[:excerpt_chars], Jsonb(c.verdicts), c.error) for c in result.cases])
    result.row_id = result_id
    return result_id


def update_status(conn: psycopg.Connection, result: ModelResult) -> None:
    conn.execute("UPDATE model_validation_results SET status = %s, reason = %s WHERE id = %s",
                 (result.status, result.reason, result.row_id))


def apply_decision(conn: psycopg.Connection, model: str, decision: Decision) -> None:
    if decision.model_status is not None:
        set_status(conn, model, decision.model_status, decision.reason)


def current_status(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    return {model: (status, reason) for model, status, reason in
            conn.execute("SELECT model, status, reason FROM model_status").fetchall()}


def finish_run(conn: psycopg.Connection, run_id: int, at: datetime, status: str, error: str | None = None) -> None:
    conn.execute("UPDATE validation_runs SET status = %s, finished_at = %s, error = %s WHERE id = %s",
                 (status, at, error, run_id))


def prune(conn: psycopg.Connection, now: datetime, retention_days: int) -> int:
    """Runs (with their model and case rows) that started more than ``retention_days`` ago."""
    return conn.execute("DELETE FROM validation_runs WHERE started_at < %s",
                        (now - timedelta(days=retention_days),)).rowcount


def validated_digests(conn: psycopg.Connection) -> dict[str, str]:
    """Each model's digest at its latest validation in a finished run (skipped and failed rows do not count)."""
    rows = conn.execute(
        """SELECT DISTINCT ON (r.model) r.model, r.model_digest FROM model_validation_results r
           JOIN validation_runs v ON v.id = r.run_id
           WHERE v.status = 'ok' AND r.status IN ('ok', 'demoted', 'promoted') AND r.model_digest IS NOT NULL
           ORDER BY r.model, r.at DESC""").fetchall()
    return dict(rows)


def last_scheduled_start(conn: psycopg.Connection) -> datetime | None:
    row = conn.execute("SELECT max(started_at) FROM validation_runs WHERE trigger = 'schedule'").fetchone()
    return row[0] if row else None
