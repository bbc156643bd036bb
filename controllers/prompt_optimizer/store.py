"""The optimiser's and the ``prompts`` command's side of migration 0012: prompts by id or name, enabling, candidates,
experiment counts and the log. Every change takes the prompt's row lock first, so that the controller and an
operator acting at the same moment are serialised."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from singularity_ops.controllers.prompt_optimizer.sequential import Counts
from singularity_ops.errors import SingularityError
from singularity_ops.prompt_ab import CANDIDATE, CONTROL, FAILURE, SUCCESSES, UNKNOWN, short_id

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEX = re.compile(r"^[0-9a-f]{4,64}$")


class PromptError(SingularityError):
    pass


@dataclass(frozen=True)
class Prompt:
    id: str
    name: str | None
    enabled: bool
    first_seen: datetime
    last_seen: datetime
    request_count: int
    models: list[str]
    preview: str | None
    original_text: str | None
    live_candidate: int | None

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "short_id": short_id(self.id), "first_seen": self.first_seen.isoformat(),
                "last_seen": self.last_seen.isoformat()}

    @property
    def label(self) -> str:
        return self.name or short_id(self.id)


@dataclass(frozen=True)
class Candidate:
    id: int
    parent_id: int | None
    created_at: datetime
    text: str
    optimizer_model: str | None
    offline_score: float | None
    baseline_score: float | None
    status: str

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": self.created_at.isoformat()}


_PROMPT = ("SELECT id, name, enabled, first_seen, last_seen, request_count, models, preview, original_text, "
           "live_candidate FROM prompts")
_CANDIDATE = ("SELECT id, parent_id, created_at, text, optimizer_model, offline_score, baseline_score, status "
              "FROM prompt_candidates")


def list_prompts(conn: psycopg.Connection) -> list[Prompt]:
    return [Prompt(*row) for row in conn.execute(_PROMPT + " ORDER BY last_seen DESC, id").fetchall()]


def resolve(conn: psycopg.Connection, ref: str, *, lock: bool = False) -> Prompt:
    """A prompt by its name, or by its id or a unique prefix of it (4 hex digits or more)."""
    suffix = " FOR UPDATE" if lock else ""
    row = conn.execute(_PROMPT + " WHERE name = %s" + suffix, (ref,)).fetchone()
    if row is None and HEX.match(ref.lower()):
        rows = conn.execute(_PROMPT + " WHERE id LIKE %s ORDER BY id LIMIT 2" + suffix, (ref.lower() + "%",)).fetchall()
        if len(rows) > 1:
            raise PromptError(f"{ref!r} is the start of more than one prompt id; give more of it")
        row = rows[0] if rows else None
    if row is None:
        raise PromptError(f"no prompt {ref!r}: give a name or an id from `singularity-ops prompts list`")
    return Prompt(*row)


def lock(conn: psycopg.Connection, prompt_id: str) -> Prompt:
    return resolve(conn, prompt_id, lock=True)


def log_event(conn: psycopg.Connection, prompt_id: str, event: str, actor: str, details: dict[str, Any], *,
              at: datetime, experiment_id: int | None = None, candidate_id: int | None = None) -> None:
    conn.execute("INSERT INTO prompt_optimization_logs (at, prompt_id, experiment_id, candidate_id, event, actor, "
                 "details) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 (at, prompt_id, experiment_id, candidate_id, event, actor, Jsonb(details)))


def enable(conn: psycopg.Connection, ref: str, name: str, actor: str, at: datetime) -> Prompt:
    if not NAME.match(name):
        raise PromptError(f"name {name!r}: letters, digits, '_', '.' and '-', at most 64, starting with a letter "
                          "or digit (it becomes the `prompt` label of the metrics)")
    with conn.transaction():
        prompt = resolve(conn, ref, lock=True)
        other = conn.execute("SELECT id FROM prompts WHERE name = %s AND id <> %s", (name, prompt.id)).fetchone()
        if other:
            raise PromptError(f"the name {name!r} is taken by prompt {short_id(other[0])}")
        conn.execute("UPDATE prompts SET enabled = true, name = %s, enabled_at = %s, updated_at = %s WHERE id = %s",
                     (name, at, at, prompt.id))
        log_event(conn, prompt.id, "enabled", actor, {"name": name, "was": prompt.name}, at=at)
    return resolve(conn, prompt.id)


def candidates(conn: psycopg.Connection, prompt_id: str) -> list[Candidate]:
    return [Candidate(*row) for row in conn.execute(
        _CANDIDATE + " WHERE prompt_id = %s ORDER BY id", (prompt_id,)).fetchall()]


def candidate(conn: psycopg.Connection, prompt_id: str, candidate_id: int) -> Candidate:
    row = conn.execute(_CANDIDATE + " WHERE prompt_id = %s AND id = %s", (prompt_id, candidate_id)).fetchone()
    if row is None:
        raise PromptError(f"prompt {short_id(prompt_id)} has no candidate {candidate_id} (see `prompts show`)")
    return Candidate(*row)


def add_candidate(conn: psycopg.Connection, prompt_id: str, parent_id: int | None, text: str, model: str | None,
                  offline: float | None, baseline: float | None, evaluation: list[dict[str, Any]], actor: str,
                  at: datetime) -> int:
    (new_id,) = conn.execute(
        "INSERT INTO prompt_candidates (prompt_id, parent_id, created_at, text, optimizer_model, offline_score, "
        "baseline_score, evaluation) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (prompt_id, parent_id, at, text, model, offline, baseline, Jsonb(evaluation))).fetchone()
    log_event(conn, prompt_id, "candidate_created", actor, {
        "parent_id": parent_id, "text": text, "optimizer_model": model, "offline_score": offline,
        "baseline_score": baseline}, at=at, candidate_id=new_id)
    return new_id


def current_text(conn: psycopg.Connection, prompt: Prompt) -> str | None:
    """What everyone is served now: the promoted candidate's text, else the original."""
    if prompt.live_candidate is not None:
        return candidate(conn, prompt.id, prompt.live_candidate).text
    return prompt.original_text


@dataclass(frozen=True)
class VariantCounts:
    requests: dict[str, int]
    outcomes: dict[str, dict[str, int]]  # variant -> outcome -> dialogues

    def test_counts(self) -> Counts:
        def side(variant: str) -> tuple[int, int]:
            found = self.outcomes.get(variant, {})
            return sum(n for o, n in found.items() if o in SUCCESSES), found.get(FAILURE, 0)

        return Counts(*side(CONTROL), *side(CANDIDATE))

    def as_json(self) -> dict[str, Any]:
        return {v: {"requests": self.requests.get(v, 0), **{o: n for o, n in self.outcomes.get(v, {}).items()}}
                for v in (CONTROL, CANDIDATE)}


def variant_counts(conn: psycopg.Connection, experiment_id: int) -> VariantCounts:
    requests: dict[str, int] = {}
    outcomes: dict[str, dict[str, int]] = {}
    for variant, outcome, count in conn.execute(
            "SELECT variant, outcome, count(*) FROM prompt_dialogues WHERE experiment_id = %s "
            "GROUP BY variant, outcome", (experiment_id,)).fetchall():
        requests[variant] = requests.get(variant, 0) + count
        if outcome != UNKNOWN:
            outcomes.setdefault(variant, {})[outcome] = count
    return VariantCounts(requests, outcomes)


def logs(conn: psycopg.Connection, prompt_id: str, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT at, event, actor, experiment_id, candidate_id, details FROM prompt_optimization_logs "
                        "WHERE prompt_id = %s ORDER BY id DESC LIMIT %s", (prompt_id, limit)).fetchall()
    return [{"at": at.isoformat(), "event": event, "actor": actor, "experiment_id": eid, "candidate_id": cid,
             "details": details} for at, event, actor, eid, cid, details in reversed(rows)]
