"""What the model manager reads from and writes to PostgreSQL: demand from the gateway's history, the
demotion hook, its decisions and its current wants, and the advisory lock that lets one replica act."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import datetime

import psycopg

log = logging.getLogger(__name__)

LOCK_KEY = 0x4D_4F_44_4C  # "MODL": one advisory lock id for every model manager


@dataclass(frozen=True)
class Event:
    at: datetime
    profile: str | None
    action: str  # profile, load, unload, refresh, skip
    model: str | None
    result: str  # ok, error, refused, or the skip kind
    reason: str
    need_bytes: int | None = None
    available_bytes: int | None = None


def recent_demand(conn: psycopg.Connection, since: datetime, until: datetime) -> dict[str, datetime]:
    """Models requested through the gateway in (since, until] → their last request."""
    rows = conn.execute(
        "SELECT model, max(at) FROM requests WHERE at > %s AND at <= %s AND model <> 'other' GROUP BY model",
        (since, until)).fetchall()
    return dict(rows)


def last_used(conn: psycopg.Connection, models: Sequence[str], until: datetime) -> dict[str, datetime]:
    """Each model's last request through the gateway up to ``until`` (absent: none in the history)."""
    rows = conn.execute("SELECT model, max(at) FROM requests WHERE model = ANY(%s) AND at <= %s GROUP BY model",
                        (list(models), until)).fetchall()
    return dict(rows)


def demoted_models(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT model, reason FROM model_status WHERE status = 'demoted'").fetchall())


def set_status(conn: psycopg.Connection, model: str, status: str, reason: str) -> bool:
    """Set a model's status; ``since`` moves only when the status changes. True when it changed."""
    with conn.transaction():
        row = conn.execute("SELECT status FROM model_status WHERE model = %s FOR UPDATE", (model,)).fetchone()
        previous = row[0] if row else "active"
        conn.execute(
            """INSERT INTO model_status (model, status, reason, since) VALUES (%s, %s, %s, now())
               ON CONFLICT (model) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason,
               since = CASE WHEN model_status.status = EXCLUDED.status THEN model_status.since ELSE now() END""",
            (model, status, reason))
    return previous != status


def record(conn: psycopg.Connection, events: Sequence[Event]) -> None:
    if not events:
        return
    with conn.transaction(), conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO model_manager_events (at, profile, action, model, result, reason, need_bytes, "
            "available_bytes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", [astuple(e) for e in events])


def write_state(conn: psycopg.Connection, at: datetime, profile: str | None, desired: Sequence[str],
                installed: Sequence[str]) -> None:
    with conn.transaction():
        conn.execute(
            """INSERT INTO model_manager_state (id, at, profile, desired, installed) VALUES (true, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at, profile = EXCLUDED.profile,
               desired = EXCLUDED.desired, installed = EXCLUDED.installed""",
            (at, profile, list(desired), list(installed)))
