"""What the guard saw: every detection counted (``singularity_security_events_total``), written to the log and to
``security_events`` through the history writer (off the request path), at most once per client, kind and action
every ``guard.event_interval_seconds`` so that a flood makes one row a minute, not one per request. Admin calls are
an audit trail: each one is a row and a log line."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from singularity_ops.exporter.gateway.guard.injection import Finding, redact

log = logging.getLogger(__name__)

# Every (kind, action) a detection can have; all exposed from 0 so that increase() sees the first one.
KIND_ACTIONS: tuple[tuple[str, str], ...] = (
    ("rate", "throttle"), ("spike", "flag"), ("brute_force", "flag"), ("brute_force", "ban"),
    ("repeat", "flag"), ("repeat", "throttle"), ("repeat", "block"), ("injection", "flag"), ("injection", "block"),
    ("admin", "allow"), ("admin", "block"),
)
GLOBAL = "*"  # the client of events that concern all of them (spikes)


def prompt_hash(prompt: Any) -> str:
    """As ``requests.prompt_hash``, so that an event and its request can be joined."""
    return hashlib.sha256(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class EventLog:
    def __init__(self, interval: float, store_text: bool,
                 submit_history: Callable[[str, dict[str, Any]], None] | None) -> None:
        self.interval = interval
        self.store_text = store_text
        self.submit_history = submit_history
        self.counts: dict[tuple[str, str], int] = dict.fromkeys(KIND_ACTIONS, 0)

    def record(self, noted: dict[tuple[str, str], float] | None, client: str, kind: str, action: str, now: float, *,
               score: float | None = None, reason: str | None = None, prompt: Any = None,
               finding: Finding | None = None, level: int = logging.WARNING) -> None:
        """Count one detection. ``noted`` is the client's memory of when each (kind, action) was last written; None
        writes every time (bans, admin calls)."""
        self.counts[kind, action] += 1
        if noted is not None:
            last = noted.get((kind, action))
            if last is not None and now - last < self.interval:
                return
            noted[kind, action] = now
        log.log(level, "guard: %s %s client %s: %s%s", kind, action, client, reason or "",
                f" (score {score:.2f})" if score is not None and kind == "injection" else "")
        if self.submit_history is None:
            return
        excerpt = None
        if finding is not None and finding.excerpt and self.store_text:
            excerpt = redact(finding.excerpt)
        self.submit_history("security_events", {
            "id": uuid.uuid4(), "at": datetime.fromtimestamp(now, UTC), "client": client, "kind": kind,
            "action": action, "score": float(score) if score is not None else None, "reason": reason,
            "prompt_hash": prompt_hash(prompt) if prompt is not None else None, "excerpt": excerpt,
        })
