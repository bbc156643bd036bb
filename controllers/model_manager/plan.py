"""The model manager's plan: which models to load, unload and keep, which to skip, and why.

A pure function of Ollama's state, the memory budget, the active profile, recent demand and the demoted
models, so that ``singularity-ops models plan`` shows exactly what a tick would do. Needs come from the one
estimator (``singularity_ops.memory``); nothing is planned that the budget cannot hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from singularity_ops.config import MemoryConfig, ProfileConfig
from singularity_ops.memory import MemoryBudget, estimate_need, human_bytes
from singularity_ops.ollama_api import LoadedModel
from singularity_ops.ollama_state import OllamaSnapshot
from singularity_ops.schedule import WEEKDAYS, week_windows

NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Skip:
    model: str
    kind: str  # memory, refused, demoted, not_installed, backoff
    reason: str
    need_bytes: int | None = None
    available_bytes: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "reason": self.reason, "need_bytes": self.need_bytes,
                "available_bytes": self.available_bytes}


@dataclass
class Plan:
    profile: str | None
    exclusive: bool = False
    load: list[str] = field(default_factory=list)
    unload: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)  # model → why it is loaded, unloaded or kept
    need_bytes: dict[str, int] = field(default_factory=dict)  # estimated need of every model to load
    available_bytes: dict[str, int] = field(default_factory=dict)  # what could be made available for it

    @property
    def desired(self) -> list[str]:
        """What the manager wants loaded once the plan is carried out."""
        return self.keep + self.load

    def as_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "load": self.load, "unload": self.unload, "keep": self.keep,
                "skipped": [skip.as_json() for skip in self.skipped]}


def describe_profile(profile: ProfileConfig) -> str:
    days = "every day" if len(profile.days) == len(WEEKDAYS) else ",".join(profile.days)
    return f"{profile.name} ({profile.hours} {days}{', exclusive' if profile.exclusive else ''})"


def active_profile(profiles: Sequence[ProfileConfig], moment: datetime, zone: tzinfo | None) -> ProfileConfig | None:
    """The first profile whose days and hours hold ``moment`` in ``zone`` (None: the host's zone)."""
    local = moment.astimezone(zone)
    minute = local.weekday() * 24 * 60 + local.hour * 60 + local.minute
    for profile in profiles:
        if any(start <= minute < end for start, end in week_windows(profile.hours, profile.days)):
            return profile
    return None


def resolve(name: str, installed: Sequence[str]) -> str | None:
    """Ollama's name matching: ``:latest`` when no tag is given, case-insensitive."""
    wanted = name.strip().lower()
    if ":" not in wanted.rsplit("/", 1)[-1]:
        wanted += ":latest"
    return next((n for n in installed if n.lower() == wanted), None)


def build_plan(
    snapshot: OllamaSnapshot,
    budget: MemoryBudget,
    settings: MemoryConfig,
    reserve_bytes: int,
    profile: ProfileConfig | None,
    demand: Mapping[str, datetime],
    last_used: Mapping[str, datetime],
    demoted: Mapping[str, str],
    held_back: Mapping[str, Skip],
) -> Plan:
    """``demand``: models requested recently → their last request; ``last_used``: loaded models → their last
    request ever (absent: never through the gateway); ``demoted``: model → reason; ``held_back``: models the
    manager will not try again yet (a failed or refused load), with the skip to report."""
    plan = Plan(profile.name if profile else None, bool(profile and profile.exclusive))
    installed = {m.name: m for m in snapshot.installed}
    loaded = {m.name: m for m in snapshot.loaded}

    wanted: dict[str, str] = {}
    for priority, name in enumerate(profile.models if profile else [], start=1):
        found = resolve(name, list(installed))
        if found is None:
            plan.skipped.append(Skip(name, "not_installed", f"not installed; pull it with: ollama pull {name}"))
        else:
            wanted.setdefault(found, f"profile {plan.profile}, priority {priority}")
    if not plan.exclusive:
        for name, at in sorted(demand.items(), key=lambda item: item[1], reverse=True):
            if name in installed:
                wanted.setdefault(name, f"requested through the gateway at {at.isoformat(timespec='seconds')}")
    for name in list(wanted):
        skip = None
        if name in demoted:
            skip = Skip(name, "demoted", f"demoted ({demoted[name] or 'no reason given'}): never preloaded")
        elif name in held_back and name not in loaded:
            skip = held_back[name]
        if skip is not None:
            plan.skipped.append(skip)
            del wanted[name]

    free = budget.available_bytes - reserve_bytes
    plan.keep = [name for name in wanted if name in loaded]
    for name in plan.keep:
        plan.why[name] = wanted[name]
    idle = sorted((m for m in snapshot.loaded if m.name not in wanted),
                  key=lambda m: (last_used.get(m.name, NEVER), m.expires_at or NEVER))

    def unload(model: LoadedModel, why: str) -> None:
        nonlocal free
        plan.unload.append(model.name)
        plan.why[model.name] = why
        free += model.size_bytes

    if plan.exclusive:
        for model in idle:
            unload(model, f"not in exclusive profile {plan.profile}")
        idle = []
    planned = 0
    for name, why in wanted.items():
        if name in loaded:
            continue
        model = installed[name]
        need = estimate_need(model.size_bytes, snapshot.details_for(model.digest), settings).total_bytes
        obtainable = free + sum(m.size_bytes for m in idle)
        if need > obtainable:
            ahead = f" - {human_bytes(planned)} for the models loaded before it" if planned else ""
            idle_bytes = obtainable - (budget.available_bytes - reserve_bytes - planned)  # unloaded ones included
            plan.skipped.append(Skip(
                name, "memory",
                f"not enough memory: needs {human_bytes(need)}, at most {human_bytes(max(0, obtainable))} can be made "
                f"available ({human_bytes(budget.available_bytes)} free + {human_bytes(idle_bytes)} held by "
                f"idle models - reserve {human_bytes(reserve_bytes)}{ahead}); wanted models are never unloaded for it",
                need, max(0, obtainable)))
            continue
        while free < need:
            unload(idle.pop(0), f"least recently used; makes room for {name}")
        plan.load.append(name)
        plan.why[name] = why
        plan.need_bytes[name] = need
        plan.available_bytes[name] = obtainable
        free -= need
        planned += need
    while free < 0 and idle:  # memory safety: something else filled the box; idle models go first, oldest first
        unload(idle.pop(0), f"memory safety: {human_bytes(budget.available_bytes)} free is below the reserve "
                            f"{human_bytes(reserve_bytes)}")
    return plan
