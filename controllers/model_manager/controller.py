"""The model manager: each tick plans from Ollama's live state, the active profile, recent demand and the
memory budget, then acts — unloads to make room, loads in priority order — and records why.

One replica acts at a time (a PostgreSQL advisory lock); Ollama unreachable means no action (``ollama_up 0``
already alerts) and the next look is backed off; a load that fails is not retried before its own backoff, and
Ollama's "model requires more system memory" answer is an expected outcome, recorded and held back for an hour
or until the profile changes. See docs/AUTO_MODEL_MANAGEMENT.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import psycopg

from singularity_ops.alerting.push import AlertPusher
from singularity_ops.config import Config
from singularity_ops.controllers.leader import LeaderLock
from singularity_ops.controllers.model_manager.plan import (
    Plan,
    Skip,
    active_profile,
    build_plan,
    describe_profile,
    resolve,
)
from singularity_ops.controllers.model_manager.store import (
    LOCK_KEY,
    Event,
    demoted_models,
    last_used,
    recent_demand,
    record,
    write_state,
)
from singularity_ops.controllers.registry import register
from singularity_ops.errors import OllamaError, SingularityError
from singularity_ops.memory import MemoryBudget, human_bytes, measure_budget
from singularity_ops.ollama_api import client_for
from singularity_ops.ollama_state import OllamaSnapshot, OllamaState
from singularity_ops.store import Database, DatabaseOnDemand, KeptConnection

log = logging.getLogger(__name__)

MEMORY_REFUSAL = "model requires more system memory"
MAX_BACKOFF = timedelta(hours=1)
REALERT_AFTER = timedelta(minutes=30)  # a pushed alert lasts an hour; a skip that persists is pushed again
UNLOAD_WAIT_SECONDS = 30.0  # Ollama answers an unload at once and frees the memory when the runner exits
_UNSET = object()


def utc_now() -> datetime:
    return datetime.now(UTC)


class NotLeader(SingularityError):
    pass


@dataclass(frozen=True)
class Held:
    until: datetime
    failures: int
    skip: Skip


class ModelManager:
    name = "model-manager"

    def __init__(self, config: Config, *, database: Database | None = None, clock: Callable[[], datetime] = utc_now,
                 alerts: AlertPusher | None = None) -> None:
        self.config = config
        self.settings = config.model_manager
        self.interval_seconds = self.settings.interval_seconds
        self.zone: tzinfo | None = ZoneInfo(self.settings.timezone) if self.settings.timezone else None
        self.reserve_bytes = max(self.settings.reserve_bytes, config.memory.reserve_bytes)
        keep_alive = self.settings.keep_alive
        self.keep_alive: str | int = int(keep_alive) if keep_alive.lstrip("-").isdigit() else keep_alive
        self.clock = clock
        self.alerts = alerts
        self.client = client_for(config)
        self.loader = client_for(config, self.settings.load_timeout_seconds)
        self.state = OllamaState(self.client, 0)
        self._database = DatabaseOnDemand(config.database, config.home, database)
        self._kept = KeptConnection(self._connect)  # reopened after an error, on the next use
        self.lock = LeaderLock(self._connect, LOCK_KEY)
        self._held: dict[str, Held] = {}
        self._skipped: dict[str, str] = {}  # model → kind of the skip last recorded
        self._alerted: dict[str, datetime] = {}
        self._profile: str | object | None = _UNSET
        self._missing_warned: set[str] = set()
        self._ollama_failures = 0
        self._ollama_retry_at: datetime | None = None
        self._last_dry_plan: dict | None = None

    # --- the controller contract ---------------------------------------------------------------------

    def tick(self) -> None:
        if not self.settings.enabled:
            return
        now = self.clock()
        if self._ollama_retry_at is not None and now < self._ollama_retry_at:
            return
        if self.settings.dry_run:
            plan = self.plan(now)
            if plan.as_json() != self._last_dry_plan:
                log.info("model manager (dry run) would: %s", plan.as_json())
                self._last_dry_plan = plan.as_json()
            return
        if not self.lock.acting("model manager"):
            return
        try:
            self.act(now)
        except OllamaError as exc:
            self._ollama_down(now, exc)

    def close(self) -> None:
        self.lock.release()
        self._kept.close()
        self.client.close()
        self.loader.close()
        if self.alerts is not None:
            self.alerts.stop()

    # --- planning --------------------------------------------------------------------------------------

    def plan(self, at: datetime | None = None) -> Plan:
        """What a tick would do at ``at`` (default now), without acting. Raises OllamaError when it is down."""
        snapshot = self._snapshot()
        return self._plan(snapshot, at or self.clock())[0]

    def _snapshot(self) -> OllamaSnapshot:
        snapshot = self.state.snapshot()
        if not snapshot.up:
            raise OllamaError(snapshot.error or f"Ollama at {self.config.ollama.host} is unavailable")
        return snapshot

    def _plan(self, snapshot: OllamaSnapshot, now: datetime) -> tuple[Plan, MemoryBudget]:
        profile = active_profile(self.settings.profiles, now, self.zone)
        names = [m.name for m in snapshot.installed]
        if profile is not None:
            for name in profile.models:
                if resolve(name, names) is None and name not in self._missing_warned:
                    log.warning("model_manager profile %r lists %r, which is not installed in Ollama; it is skipped "
                                "until pulled (ollama pull %s)", profile.name, name, name)
                    self._missing_warned.add(name)
        since = now - timedelta(minutes=self.settings.demand_minutes)
        demand = self._kept.run(lambda conn: recent_demand(conn, since, now)) if self.settings.demand_minutes else {}
        used = self._kept.run(lambda conn: last_used(conn, [m.name for m in snapshot.loaded], now))
        demoted = self._kept.run(demoted_models)
        held = {name: h.skip for name, h in self._held.items() if now < h.until}
        budget = measure_budget(self.config.memory.ollama_memory_bytes, snapshot.loaded_bytes)
        plan = build_plan(snapshot, budget, self.config.memory, self.reserve_bytes, profile, demand, used, demoted,
                          held)
        return plan, budget

    # --- acting ----------------------------------------------------------------------------------------

    def apply_once(self) -> list[Event]:
        """``models apply``: act once now, if no other replica is acting."""
        if not self.lock.acquire():
            raise NotLeader("another model manager holds the lock and is acting (singularity-ops run or controller "
                            "model-manager); see what it does with: singularity-ops models plan")
        return self.act(self.clock())

    def act(self, now: datetime) -> list[Event]:
        """Plan, carry the plan out, record it; returns the events recorded. The caller holds the lock.
        Raises OllamaError, having done nothing, when Ollama is unavailable."""
        snapshot = self._snapshot()
        if self._ollama_failures:
            log.info("model manager: Ollama is available again")
        self._ollama_failures, self._ollama_retry_at = 0, None
        plan, _ = self._plan(snapshot, now)
        events: list[Event] = []
        if plan.profile != self._profile:
            before = "none" if self._profile in (None, _UNSET) else self._profile
            profile = next((p for p in self.settings.profiles if p.name == plan.profile), None)
            now_text = describe_profile(profile) if profile else "none: only memory safety"
            started = "manager started" if self._profile is _UNSET else f"switched from {before}"
            events.append(Event(now, plan.profile, "profile", None, "ok", f"{started}; profile {now_text}"))
            if self._profile is not _UNSET:
                self._held = {n: h for n, h in self._held.items() if h.skip.kind != "refused"}
            self._profile = plan.profile
        events += self._record_skips(plan, now)
        for name in plan.unload:
            events.append(self._unload(plan, name, now))
        if plan.unload:
            failed = {e.model for e in events if e.action == "unload" and e.result != "ok"}
            self._wait_unloaded(set(plan.unload) - failed)
        for name in plan.load:
            events.append(self._load(plan, name, now))
        events += self._refresh(plan, snapshot, now)
        installed = [m.name for m in snapshot.installed]
        self._kept.run(lambda conn: (record(conn, events),
                                     write_state(conn, now, plan.profile, plan.desired, installed)))
        for event in events:
            log.info("model manager: %s %s %s: %s", event.action, event.model or "-", event.result, event.reason)
        return events

    def _refresh(self, plan: Plan, snapshot: OllamaSnapshot, now: datetime) -> list[Event]:
        """Kept models about to expire get their keep-alive renewed (Ollama's clock, hence the real time), so a
        wanted model is not unloaded and cold-loaded again between two ticks."""
        events = []
        soon = utc_now() + timedelta(seconds=2 * self.interval_seconds)
        expiring = {m.name for m in snapshot.loaded if m.expires_at is not None and m.expires_at < soon}
        for name in [n for n in plan.keep if n in expiring]:
            try:
                self.loader.load(name, self.keep_alive)
            except OllamaError as exc:
                events.append(Event(now, plan.profile, "refresh", name, "error", f"{plan.why[name]}; {exc}"))
            else:
                events.append(Event(now, plan.profile, "refresh", name, "ok",
                                    f"{plan.why[name]}; keep-alive renewed to {self.settings.keep_alive}"))
        return events

    def _record_skips(self, plan: Plan, now: datetime) -> list[Event]:
        """A skip is recorded (and, for memory, alerted) when it starts or its kind changes, not every tick."""
        events = []
        current = {skip.model: skip for skip in plan.skipped}
        for name in [n for n in self._skipped if n not in current]:
            del self._skipped[name]
            self._resolve(name)
        for skip in plan.skipped:
            if self._skipped.get(skip.model) != skip.kind:
                self._skipped[skip.model] = skip.kind
                events.append(Event(now, plan.profile, "skip", skip.model, skip.kind, skip.reason, skip.need_bytes,
                                    skip.available_bytes))
            if skip.kind in ("memory", "refused"):
                self._alert(skip, plan.profile, now)
        return events

    def _alert(self, skip: Skip, profile: str | None, now: datetime) -> None:
        last = self._alerted.get(skip.model)
        if self.alerts is None or (last is not None and now - last < REALERT_AFTER):
            return
        self._alerted[skip.model] = now
        numbers = ""
        if skip.need_bytes is not None and skip.available_bytes is not None:
            numbers = f": needs {human_bytes(skip.need_bytes)}, {human_bytes(skip.available_bytes)} available"
        summary = f"Model {skip.model} not loaded for lack of memory{numbers}"
        self.alerts.push("ModelSkippedForMemory", "warning", summary, f"{skip.reason} (profile {profile or 'none'})",
                         {"model": skip.model})

    def _resolve(self, model: str) -> None:
        """End the model's memory alert now: it is loaded, or no longer wanted."""
        if self._alerted.pop(model, None) is not None and self.alerts is not None:
            self.alerts.push("ModelSkippedForMemory", "warning", f"Model {model} is no longer skipped for memory",
                             labels={"model": model}, resolved=True)

    def _unload(self, plan: Plan, name: str, now: datetime) -> Event:
        try:
            self.client.unload(name)
        except OllamaError as exc:
            return Event(now, plan.profile, "unload", name, "error", f"{plan.why[name]}; {exc}")
        return Event(now, plan.profile, "unload", name, "ok", plan.why[name])

    def _wait_unloaded(self, names: set[str]) -> None:
        deadline = time.monotonic() + UNLOAD_WAIT_SECONDS
        while names and time.monotonic() < deadline:
            try:
                if not names & {m.name for m in self.client.loaded()}:
                    return
            except OllamaError:
                return
            time.sleep(0.25)

    def _load(self, plan: Plan, name: str, now: datetime) -> Event:
        need, available = plan.need_bytes.get(name), plan.available_bytes.get(name)
        try:
            self.loader.load(name, self.keep_alive)
        except OllamaError as exc:
            held = self._held.get(name)
            failures = (held.failures if held else 0) + 1
            if MEMORY_REFUSAL in str(exc):
                skip = Skip(name, "refused", f"Ollama refused to load it: {str(exc).rpartition(': ')[2]}", need,
                            available)
                self._held[name] = Held(now + MAX_BACKOFF, failures, skip)
                self._skipped[name] = "refused"
                self._alert(skip, plan.profile, now)
                return Event(now, plan.profile, "load", name, "refused", skip.reason, need, available)
            wait = min(MAX_BACKOFF, timedelta(seconds=self.interval_seconds * 2 ** failures))
            reason = f"load failed {failures} time(s), next try after {(now + wait).isoformat(timespec='seconds')}"
            self._held[name] = Held(now + wait, failures, Skip(name, "backoff", f"{reason}: {exc}", need, available))
            self._skipped[name] = "backoff"
            return Event(now, plan.profile, "load", name, "error", f"{plan.why[name]}; {exc}", need, available)
        self._held.pop(name, None)
        self._resolve(name)
        return Event(now, plan.profile, "load", name, "ok", f"{plan.why[name]}; needs about {human_bytes(need or 0)}",
                     need, available)

    def _ollama_down(self, now: datetime, exc: OllamaError) -> None:
        self._ollama_failures += 1
        wait = min(MAX_BACKOFF / 12, timedelta(seconds=self.interval_seconds * 2 ** (self._ollama_failures - 1)))
        self._ollama_retry_at = now + wait
        if self._ollama_failures == 1:
            log.warning("model manager: no action while Ollama is unavailable (%s); looking again with backoff", exc)

    # --- database --------------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        return self._database.connect(autocommit=True)



@register("model-manager")
def build(config: Config) -> ModelManager:
    if not config.model_manager.enabled:
        log.info("model manager disabled (model_manager.enabled: false): it will not act")
    alerts = AlertPusher(config.alerts.alertmanager_url).start()
    return ModelManager(config, alerts=alerts)
