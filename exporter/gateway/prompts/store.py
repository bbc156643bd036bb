"""The gateway's side of migration 0012, on a plain (sync) connection in an executor thread, never on the request
path: what it saw (``prompts``), the dialogues of enabled prompts and their outcomes (``prompt_dialogues``) in one
transaction per batch, the enabled prompts and running experiments read back, and the retention."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

MAX_MODELS = 32
OPEN_STATES = ("running", "awaiting_approval")


@dataclass
class Seen:
    first: datetime
    last: datetime
    count: int = 0
    models: set[str] = field(default_factory=set)
    preview: str | None = None

    def merge(self, other: Seen) -> None:
        self.first, self.last = min(self.first, other.first), max(self.last, other.last)
        self.count += other.count
        self.models |= other.models
        self.preview = other.preview if other.preview is not None else self.preview


@dataclass(frozen=True)
class Settlement:
    request_id: str
    outcome: str
    reason: str
    at: datetime
    rating: float | None = None


@dataclass
class Batch:
    seen: dict[str, Seen] = field(default_factory=dict)
    originals: dict[str, str] = field(default_factory=dict)
    dialogues: list[dict[str, Any]] = field(default_factory=list)
    settlements: list[Settlement] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.seen or self.originals or self.dialogues or self.settlements)


@dataclass(frozen=True)
class Experiment:
    id: int
    candidate_id: int
    candidate_text: str
    share: float
    statistic: float | None
    threshold: float | None


@dataclass(frozen=True)
class Managed:
    """An enabled prompt as the gateway serves it."""

    prompt_id: str
    name: str
    live_candidate: int | None  # None: the original text, as clients send it
    live_text: str | None
    has_original: bool
    experiment: Experiment | None


_SEEN = """
INSERT INTO prompts AS p (id, first_seen, last_seen, request_count, models, preview)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    first_seen = least(p.first_seen, EXCLUDED.first_seen),
    last_seen = greatest(p.last_seen, EXCLUDED.last_seen),
    request_count = p.request_count + EXCLUDED.request_count,
    models = (SELECT coalesce(array_agg(m ORDER BY m), '{}') FROM (
        SELECT DISTINCT m FROM unnest(p.models || EXCLUDED.models) AS m ORDER BY m LIMIT %s) AS kept),
    preview = EXCLUDED.preview
"""
_DIALOGUE = """
INSERT INTO prompt_dialogues (request_id, prompt_id, at, client_hash, model, endpoint, messages, answer,
    latency_seconds, status, experiment_id, variant, served_candidate, outcome, outcome_reason, settled_at)
SELECT %(request_id)s::uuid, %(prompt_id)s, %(at)s, %(client_hash)s, %(model)s, %(endpoint)s, %(messages)s, %(answer)s,
    %(latency_seconds)s, %(status)s, %(experiment_id)s, %(variant)s, %(served_candidate)s, %(outcome)s,
    %(outcome_reason)s, %(settled_at)s
WHERE EXISTS (SELECT 1 FROM prompts WHERE id = %(prompt_id)s)
ON CONFLICT (request_id) DO NOTHING
"""
# Heuristics settle only a dialogue nothing has settled yet; explicit feedback settles any, and again.
_SETTLE = """
UPDATE prompt_dialogues SET outcome = %s, outcome_reason = %s, rating = coalesce(%s, rating), settled_at = %s
WHERE request_id = %s::uuid AND (outcome = 'unknown' OR %s = 'feedback')
"""
_LOAD = """
SELECT p.id, p.name, p.live_candidate, live.text, p.original_text IS NOT NULL,
       e.id, e.candidate_id, cand.text, e.share, e.statistic, e.threshold
FROM prompts p
LEFT JOIN prompt_candidates live ON live.id = p.live_candidate
LEFT JOIN prompt_experiments e ON e.prompt_id = p.id AND e.state = 'running'
LEFT JOIN prompt_candidates cand ON cand.id = e.candidate_id
WHERE p.enabled
"""
_KEEP_OPEN = ("(d.experiment_id IS NULL OR NOT EXISTS (SELECT 1 FROM prompt_experiments e "
              "WHERE e.id = d.experiment_id AND e.state IN ('running', 'awaiting_approval')))")


def write(conn: psycopg.Connection, batch: Batch) -> None:
    with conn.transaction(), conn.cursor() as cur:
        if batch.seen:
            cur.executemany(_SEEN, [(pid, s.first, s.last, s.count, sorted(s.models)[:MAX_MODELS], s.preview,
                                     MAX_MODELS) for pid, s in sorted(batch.seen.items())])
        for pid, text in batch.originals.items():
            cur.execute("UPDATE prompts SET original_text = %s, updated_at = now() "
                        "WHERE id = %s AND enabled AND original_text IS NULL", (text, pid))
        if batch.dialogues:
            cur.executemany(_DIALOGUE, [{**d, "messages": Jsonb(d["messages"])} for d in batch.dialogues])
        if batch.settlements:
            cur.executemany(_SETTLE, [(s.outcome, s.reason, s.rating, s.at, s.request_id, s.reason)
                                      for s in batch.settlements])


def load(conn: psycopg.Connection) -> dict[str, Managed]:
    managed = {}
    for (pid, name, live, live_text, has_original, eid, candidate, candidate_text, share, statistic,
         threshold) in conn.execute(_LOAD).fetchall():
        experiment = Experiment(eid, candidate, candidate_text, share, statistic, threshold) if eid else None
        managed[pid] = Managed(pid, name, live, live_text, has_original, experiment)
    return managed


def clear_previews(conn: psycopg.Connection) -> int:
    """With previews turned off, the ones kept before go too."""
    return conn.execute("UPDATE prompts SET preview = NULL WHERE preview IS NOT NULL").rowcount


def prune(conn: psycopg.Connection, retention_days: int, max_per_prompt: int) -> int:
    """Dialogues older than the retention, and beyond the newest ``max_per_prompt`` of a prompt; never those of an
    experiment still running or waiting for approval (its test counts them)."""
    with conn.transaction():
        old = conn.execute(f"DELETE FROM prompt_dialogues d WHERE d.at < now() - make_interval(days => %s) "
                           f"AND {_KEEP_OPEN}", (retention_days,)).rowcount
        extra = conn.execute(f"""
            DELETE FROM prompt_dialogues d USING (
                SELECT request_id FROM (SELECT request_id, row_number() OVER (PARTITION BY prompt_id ORDER BY at DESC)
                                        AS newest FROM prompt_dialogues) AS ranked WHERE newest > %s) AS beyond
            WHERE d.request_id = beyond.request_id AND {_KEEP_OPEN}""", (max_per_prompt,)).rowcount
    return old + extra


@dataclass(frozen=True)
class Recorded:
    prompt_id: str
    name: str | None
    client_hash: str | None
    experiment_id: int | None
    variant: str | None


def find(conn: psycopg.Connection, request_id: str) -> Recorded | None:
    try:
        key = uuid.UUID(request_id)
    except ValueError:
        return None
    row = conn.execute("SELECT d.prompt_id, p.name, d.client_hash, d.experiment_id, d.variant "
                       "FROM prompt_dialogues d JOIN prompts p ON p.id = d.prompt_id WHERE d.request_id = %s",
                       (key,)).fetchone()
    return Recorded(*row) if row else None
