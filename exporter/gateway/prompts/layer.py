"""The prompt layer as the proxy calls it: ``apply`` before a request goes upstream, ``finish`` when it is over, and
``feedback`` for ``POST /singularity/v1/feedback``.

``apply`` notes every system prompt in the registry (hash, models, counts; a preview unless turned off) and, for an
enabled prompt only, keeps the dialogue and serves what the operator chose: the promoted text for everyone, and
during an experiment the candidate to the clients whose sticky hash falls within its share. Nothing here waits on
the database: what was seen and the dialogues wait in memory and are written every
``prompt_optimizer.sync_seconds`` from an executor thread, which also reads back the enabled prompts and running
experiments (that is how ``prompts enable``, ``experiment start``, ``approve`` and ``rollback`` reach the gateway).
While the database is away the writes are retried; beyond ``MAX_BUFFERED`` dialogues the oldest are dropped and
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from singularity_ops.config.prompt_optimizer import PromptOptimizerConfig
from singularity_ops.exporter.gateway.endpoints import Endpoint
from singularity_ops.exporter.gateway.prompts import store
from singularity_ops.exporter.gateway.prompts.metrics import PromptMetrics
from singularity_ops.exporter.gateway.prompts.outcomes import Followups, immediate
from singularity_ops.exporter.gateway.prompts.store import Batch, Managed, Seen, Settlement
from singularity_ops.exporter.gateway.prompts.system import (
    dialogue_messages,
    find_system,
    replace_system,
    substituted_body,
    user_texts,
)
from singularity_ops.prompt_ab import CANDIDATE, prompt_id, variant_of
from singularity_ops.store import KeptConnection

log = logging.getLogger(__name__)
MAX_BUFFERED = 10_000  # dialogues (and outcomes, distinct prompts) waiting for the database
MAX_RECENT = 50_000  # request ids answered from memory by the feedback route
MAX_IDS = 4096  # prompt texts whose hash is remembered
PRUNE_SECONDS = 600.0


@dataclass
class Tracked:
    """A request of an enabled prompt, from ``apply`` to ``finish``."""

    request_id: str
    prompt: Managed
    client: str
    model: str
    endpoint: str
    at: datetime
    messages: list[Any]
    users: list[str]
    variant: str | None = None
    experiment_id: int | None = None
    served_candidate: int | None = None


@dataclass(frozen=True)
class Recent:
    prompt_id: str
    name: str
    client: str
    variant: str | None


@functools.lru_cache(maxsize=4096)
def client_hash(client: str) -> str | None:
    return hashlib.sha256(client.encode()).hexdigest() if client else None


class PromptLayer:
    def __init__(self, settings: PromptOptimizerConfig, registry: CollectorRegistry,
                 connect: Callable[[], psycopg.Connection], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.managed: dict[str, Managed] = {}
        self.metrics = PromptMetrics(registry, lambda: list(self.managed.values()))
        self.followups = Followups(settings.regenerate_seconds)
        self._kept = KeptConnection(connect)
        self._batch = Batch()
        self._ids: dict[str, str] = {}
        self._recent: OrderedDict[str, Recent] = OrderedDict()
        self._originals_sent: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._sync_lock: asyncio.Lock | None = None
        self._pruned_at = float("-inf")
        self._previews_cleared = False
        self._failing = False

    # --- the request path ------------------------------------------------------------------------------------

    def apply(self, endpoint: Endpoint, payload: dict[str, Any], body: bytes, client: str, model: str, at: datetime,
              request_id: str | None = None) -> tuple[Tracked | None, bytes]:
        """Note the request's system prompt; for an enabled one, substitute what is served and start tracking.
        Returns (tracked or None, the body to send). A substitution changes ``payload`` too, so that a later
        rewrite of the whole payload (compression) keeps it."""
        found = find_system(endpoint, payload)
        if found is None:
            return None, body
        pid = self._ids.get(found.text)
        if pid is None:
            if len(self._ids) >= MAX_IDS:
                self._ids.clear()
            pid = self._ids[found.text] = prompt_id(found.text)
        seen = self._batch.seen.get(pid)
        if seen is None and len(self._batch.seen) < MAX_BUFFERED:  # a flood of distinct prompts: noted up to this
            chars = self.settings.preview_chars
            seen = self._batch.seen[pid] = Seen(at, at, preview=found.text[:chars] if chars else None)
        if seen is not None:
            seen.last = at
            seen.count += 1
            seen.models.add(model)
        managed = self.managed.get(pid)
        if managed is None:
            return None, body
        if not managed.has_original and pid not in self._originals_sent:
            self._batch.originals[pid] = found.text
            self._originals_sent.add(pid)
        messages = dialogue_messages(endpoint, payload)  # before any substitution: what the client sent
        tracked = Tracked(request_id or str(uuid.uuid4()), managed, client, model, endpoint.path, at, messages,
                          user_texts(messages), served_candidate=managed.live_candidate)
        text = managed.live_text
        experiment = managed.experiment
        if experiment is not None:
            tracked.experiment_id = experiment.id
            tracked.variant = variant_of(client, experiment.id, experiment.share)
            if tracked.variant == CANDIDATE:
                text, tracked.served_candidate = experiment.candidate_text, experiment.candidate_id
            self.metrics.experiment_requests[managed.name, tracked.variant] += 1
        self.metrics.requests[managed.name,] += 1
        for settled in self.followups.observe(client, pid, tracked.users, self.clock()):
            self._settle(settled.request_id, settled.outcome, settled.reason, at)
        if text is not None and text != found.text:
            replace_system(payload, found, text)
            return tracked, substituted_body(body, found.text, text) or json.dumps(payload).encode()
        return tracked, body

    def finish(self, tracked: Tracked, status: int, answer: str | None, error: str | None,
               latency_seconds: float) -> None:
        """The request is over: its dialogue is queued for the database, its immediate outcome counted."""
        known = immediate(status, error, answer)
        outcome, reason = known if known is not None else ("unknown", None)
        prompt = tracked.prompt
        dialogues = self._batch.dialogues
        dialogues.append({
            "request_id": tracked.request_id, "prompt_id": prompt.prompt_id, "at": tracked.at,
            "client_hash": client_hash(tracked.client), "model": tracked.model, "endpoint": tracked.endpoint,
            "messages": tracked.messages, "answer": answer, "latency_seconds": latency_seconds, "status": status,
            "experiment_id": tracked.experiment_id, "variant": tracked.variant,
            "served_candidate": tracked.served_candidate, "outcome": outcome, "outcome_reason": reason,
            "settled_at": tracked.at if known is not None else None})
        if len(dialogues) > MAX_BUFFERED:
            del dialogues[0]
            self.metrics.dropped.inc()
        self._recent[tracked.request_id] = Recent(prompt.prompt_id, prompt.name, tracked.client, tracked.variant)
        if len(self._recent) > MAX_RECENT:
            self._recent.popitem(last=False)
        if known is not None:
            self._count(prompt.name, tracked.variant, outcome)
        else:
            self.followups.remember(tracked.client, prompt.prompt_id, tracked.request_id, tracked.users, self.clock())

    def _settle(self, request_id: str, outcome: str, reason: str, at: datetime, rating: float | None = None) -> None:
        settlements = self._batch.settlements
        settlements.append(Settlement(request_id, outcome, reason, at, rating))
        if len(settlements) > MAX_BUFFERED:
            del settlements[0]
        recent = self._recent.get(request_id)
        if recent is not None:
            self._count(recent.name, recent.variant, outcome)

    def _count(self, name: str, variant: str | None, outcome: str) -> None:
        self.metrics.outcomes[name, outcome] += 1
        if variant is not None:
            self.metrics.experiment_outcomes[name, variant, outcome] += 1

    # --- feedback ---------------------------------------------------------------------------------------------

    async def rate(self, request_id: str, client: str, outcome: str, rating: float) -> Recent | str:
        """Record explicit feedback on a request; the dialogue's prompt, or why not (a message for the client)."""
        recent = self._recent.get(request_id)
        if recent is None:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(None, self._kept.run, lambda conn: store.find(conn, request_id))
            if found is None:
                return (f"no dialogue recorded for request {request_id}: only requests whose system prompt is enabled "
                        "(singularity-ops prompts enable) are kept, for prompt_optimizer.retention_days")
            if found.client_hash != client_hash(client):
                return "forbidden"
            recent = Recent(found.prompt_id, found.name or found.prompt_id[:12], client, found.variant)
        elif recent.client != client:
            return "forbidden"
        self.followups.forget(request_id, client, recent.prompt_id)
        self._batch.settlements.append(Settlement(request_id, outcome, "feedback", datetime.now(UTC), rating))
        self._count(recent.name, recent.variant, outcome)
        return recent

    # --- the database, off the request path ---------------------------------------------------------------------

    async def start(self) -> None:
        self._sync_lock = asyncio.Lock()
        self._task = asyncio.create_task(self._forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sync_once()  # what is still in memory
        await asyncio.get_running_loop().run_in_executor(None, self._kept.close)

    async def _forever(self) -> None:
        while True:
            await self.sync_once()
            await asyncio.sleep(self.settings.sync_seconds)

    async def sync_once(self) -> bool:
        """Write what waits, read the enabled prompts back; False (and everything kept for the next try) on failure."""
        assert self._sync_lock is not None
        async with self._sync_lock:
            batch, self._batch = self._batch, Batch()
            prune = self.clock() - self._pruned_at >= PRUNE_SECONDS
            try:
                managed = await asyncio.get_running_loop().run_in_executor(None, self._sync, batch, prune)
            except Exception as exc:  # the loop must survive anything: retried at the next sync
                self._put_back(batch)
                self.metrics.write_failures.inc()
                if not self._failing:
                    log.warning("prompt layer: database unavailable (%s: %s); retrying every %g s", type(exc).__name__,
                                exc, self.settings.sync_seconds)
                self._failing = True
                return False
            if self._failing:
                log.info("prompt layer: database back")
            self._failing = False
            if prune:
                self._pruned_at = self.clock()
            self._originals_sent &= {pid for pid, m in managed.items() if not m.has_original}
            self.managed = managed
            return True

    def _sync(self, batch: Batch, prune: bool) -> dict[str, Managed]:
        def work(conn: psycopg.Connection) -> dict[str, Managed]:
            if batch:
                store.write(conn, batch)
            if not self.settings.preview_chars and not self._previews_cleared:
                store.clear_previews(conn)
                self._previews_cleared = True
            if prune:
                store.prune(conn, self.settings.retention_days, self.settings.max_dialogues_per_prompt)
            return store.load(conn)

        return self._kept.run(work)

    def _put_back(self, batch: Batch) -> None:
        newer, self._batch = self._batch, batch
        for pid, seen in newer.seen.items():
            if pid in batch.seen:
                batch.seen[pid].merge(seen)
            else:
                batch.seen[pid] = seen
        batch.originals.update(newer.originals)
        batch.dialogues.extend(newer.dialogues)
        batch.settlements.extend(newer.settlements)
        del batch.settlements[:-MAX_BUFFERED]
        excess = len(batch.dialogues) - MAX_BUFFERED
        if excess > 0:
            del batch.dialogues[:excess]
            self.metrics.dropped.inc(excess)
