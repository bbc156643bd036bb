"""What the warmer reads from and writes to PostgreSQL (migration 0009): the request record, the cache's entries,
the tokens its warms spent, and the queue of warms (``cache_warms``) a gateway carries out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from singularity_ops.controllers.cache_warmer.predict import Observed, Prediction, Window

WEEK = timedelta(days=7)


def first_record(conn: psycopg.Connection, since: datetime) -> datetime | None:
    row = conn.execute("SELECT min(at) FROM cache_requests WHERE at >= %s", (since,)).fetchone()
    return row[0] if row else None


def observe(conn: psycopg.Connection, window: Window, now: datetime, weeks: int,
            recency_hours: float) -> list[Observed]:
    """Per key: requests in each of the past ``weeks`` weeks' copies of the window, and in the recent hours."""
    weekly: dict[str, dict[int, int]] = defaultdict(dict)
    for key, week, count in conn.execute(
            "SELECT r.key, k, count(*) FROM generate_series(1, %(weeks)s) AS k JOIN cache_requests r "
            "ON r.at >= %(start)s - k * interval '7 days' AND r.at < %(end)s - k * interval '7 days' "
            "GROUP BY r.key, k", {"weeks": weeks, "start": window.start, "end": window.end}).fetchall():
        weekly[key][week] = count
    recent = dict(conn.execute("SELECT key, count(*) FROM cache_requests WHERE at >= %s AND at < %s GROUP BY key",
                               (now - timedelta(hours=recency_hours), now)).fetchall())
    keys = sorted(set(weekly) | set(recent))
    if not keys:
        return []
    latest = {key: (model, tenant, material) for key, model, tenant, material in conn.execute(
        "SELECT DISTINCT ON (key) key, model, tenant, material FROM cache_requests WHERE key = ANY(%s) "
        "ORDER BY key, at DESC", (keys,)).fetchall()}
    return [Observed(key, *latest[key], weekly.get(key, {}), recent.get(key, 0)) for key in keys if key in latest]


def mark_cached(conn: psycopg.Connection, predictions: Sequence[Prediction], window: Window) -> None:
    """``cached``: an entry of the key outlives the window."""
    keys = [p.key for p in predictions]
    lasting = {row[0] for row in conn.execute(
        "SELECT key FROM cache_entries WHERE key = ANY(%s) AND expires_at > %s", (keys, window.end)).fetchall()}
    for prediction in predictions:
        prediction.cached = prediction.key in lasting


def tokens_last_hour(conn: psycopg.Connection, now: datetime) -> int:
    row = conn.execute("SELECT coalesce(sum(tokens), 0) FROM cache_warms WHERE finished_at > %s",
                       (now - timedelta(hours=1),)).fetchone()
    return int(row[0]) if row else 0


def enqueue(conn: psycopg.Connection, prediction: Prediction, window: Window, planned: bool,
            reason: str | None = None) -> bool:
    """Queue a warm; False when the key is queued already."""
    row = conn.execute(
        "INSERT INTO cache_warms (model, key, tenant, prompt, material, reason, detail, expected_requests, "
        "window_start, window_end, planned) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (key) WHERE status = 'queued' DO NOTHING RETURNING id",
        (prediction.model, prediction.key, prediction.tenant, prediction.prompt, Jsonb(prediction.material),
         reason or prediction.reason, prediction.detail, prediction.expected_requests, window.start, window.end,
         planned)).fetchone()
    return row is not None
