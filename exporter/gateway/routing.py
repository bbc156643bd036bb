"""Quality-aware routing: a virtual model name from ``gateway.routes`` goes to its best candidate model.

The rule (docs/MODEL_VALIDATION.md, "Routing"): candidates that are not installed, demoted (``model_status``) or
whose circuit breaker is open are skipped; the rest are ordered by their latest ``quality_score`` from a finished
validation run, highest first, unscored ones after the scored in the order listed; a loaded candidate whose score
is within ``gateway.route_loaded_margin`` of the best goes first, since a cold load costs more than that much
quality. Scores, demotions and what is loaded are read every few seconds off the request path; breakers are looked
at per request. The request's ``model`` is rewritten to the choice and the response says
``X-Singularity-Route: NAME -> model``; metrics and history see only the real model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from aiohttp import web

from singularity_ops.exporter.gateway.breaker import State
from singularity_ops.exporter.gateway.model_names import canonical
from singularity_ops.ollama_state import OllamaSnapshot
from singularity_ops.store import KeptConnection

log = logging.getLogger(__name__)
ROUTE_KEY = web.RequestKey("singularity_route", str)
HEADER = "X-Singularity-Route"
LISTINGS = ("/api/tags", "/v1/models")


@dataclass(frozen=True)
class Candidate:
    model: str
    installed: bool = True
    demoted: str | None = None  # the reason, when demoted
    score: float | None = None
    loaded: bool = False
    breaker_open: bool = False


@dataclass(frozen=True)
class Choice:
    route: str
    model: str | None  # None: no candidate can take the request
    why: str
    order: tuple[str, ...]  # eligible candidates, preferred first (breakers aside)
    candidates: tuple[Candidate, ...]

    def as_json(self) -> dict[str, Any]:
        return {"route": self.route, "model": self.model, "why": self.why, "order": list(self.order),
                "candidates": [{"model": c.model, "installed": c.installed, "demoted": c.demoted is not None,
                                "demoted_reason": c.demoted, "quality_score": c.score, "loaded": c.loaded,
                                "breaker_open": c.breaker_open} for c in self.candidates]}


def _skip_reason(candidate: Candidate) -> str | None:
    if not candidate.installed:
        return "not installed"
    if candidate.demoted is not None:
        return f"demoted ({candidate.demoted or 'no reason given'})"
    if candidate.breaker_open:
        return "breaker open"
    return None


def rank(route: str, candidates: Sequence[Candidate], margin: float) -> Choice:
    """The route's choice and why, by the rule in this module's docstring."""
    skipped = [f"{c.model}: {why}" for c in candidates if (why := _skip_reason(c)) is not None]
    eligible = [c for c in candidates if _skip_reason(c) is None]
    order = sorted(eligible, key=lambda c: (c.score is None, -(c.score or 0.0)))  # stable: listed order in ties
    why = ""
    if order and order[0].score is not None and not order[0].loaded:
        best = order[0]
        close = [c for c in order if c.loaded and c.score is not None and best.score - c.score <= margin + 1e-9]
        near = close[0] if close else None
        if near is not None:
            order.remove(near)
            order.insert(0, near)
            why = (f"loaded, quality {near.score:.3f} within {margin:g} of {best.model}'s {best.score:.3f} "
                   "(not loaded)")
    if order and not why:
        first = order[0]
        if first.score is None:
            why = "first listed; no candidate has a validation score" if not any(c.score is not None for c in
                                                                                    order) else "unscored"
        else:
            why = f"best quality {first.score:.3f}" + (", loaded" if first.loaded else "")
    if skipped:
        why = "; ".join(filter(None, [why, "skipped " + ", ".join(skipped)]))
    return Choice(route, order[0].model if order else None, why or "no candidate", tuple(c.model for c in order),
                  tuple(candidates))


def read_validation(conn: psycopg.Connection, models: Sequence[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Latest quality score per model (from runs that finished) and demoted models with their reason."""
    scores = dict(conn.execute(
        """SELECT DISTINCT ON (r.model) r.model, r.quality_score FROM model_validation_results r
           JOIN validation_runs v ON v.id = r.run_id
           WHERE v.status = 'ok' AND r.status IN ('ok', 'demoted', 'promoted') AND r.quality_score IS NOT NULL
             AND r.model = ANY(%s)
           ORDER BY r.model, r.at DESC""", (list(models),)).fetchall())
    demoted = dict(conn.execute("SELECT model, reason FROM model_status WHERE status = 'demoted' AND model = ANY(%s)",
                                (list(models),)).fetchall())
    return scores, demoted


def candidates_for(models: Sequence[str], installed: set[str], loaded: set[str], scores: dict[str, float],
                   demoted: dict[str, str], open_breakers: set[str] = frozenset()) -> list[Candidate]:
    return [Candidate(m, m in installed, demoted.get(m), scores.get(m), m in loaded, m in open_breakers)
            for m in models]


class RouteTable:
    """The gateway's routes. ``refresh()`` (blocking, off the event loop) reads the database and Ollama's state;
    ``apply()`` and ``listing()`` run on the request path and only look at what ``refresh()`` left."""

    def __init__(self, routes: dict[str, list[str]], margin: float, connection: KeptConnection | None,
                 open_breakers: Callable[[], set[str]] = set) -> None:
        self.routes = {name: [canonical(m) for m in models] for name, models in routes.items()}
        self.margin = margin
        self.connection = connection
        self.open_breakers = open_breakers
        self._by_name = {canonical(name): name for name in routes}
        self._choices: dict[str, Choice] = {name: rank(name, candidates_for(models, set(models), set(), {}, {}),
                                                       margin) for name, models in self.routes.items()}
        self._entries: dict[str, dict[str, Any]] = {}  # model → its /api/tags entry, for the route's listing
        self._scores: dict[str, float] = {}
        self._demoted: dict[str, str] = {}

    def refresh(self, snapshot: OllamaSnapshot) -> None:
        models = sorted({m for listed in self.routes.values() for m in listed})
        if self.connection is not None:
            try:
                self._scores, self._demoted = self.connection.run(lambda conn: read_validation(conn, models))
            except psycopg.Error as exc:  # keep the last known scores and demotions
                log.debug("routing: cannot read validation results: %s", exc)
        if not snapshot.up:
            return
        installed = {m.name for m in snapshot.installed}
        loaded = {m.name for m in snapshot.loaded}
        self._choices = {name: rank(name, candidates_for(listed, installed, loaded, self._scores, self._demoted),
                                    self.margin) for name, listed in self.routes.items()}

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()

    def choices(self) -> list[Choice]:
        return list(self._choices.values())

    def route_of(self, requested: object) -> str | None:
        return self._by_name.get(canonical(requested)) if isinstance(requested, str) and requested else None

    def resolve(self, route: str) -> tuple[str | None, str]:
        """(model, "") or (None, why no candidate can take it), skipping candidates whose breaker is open now."""
        choice = self._choices[route]
        opened = self.open_breakers() if choice.order else set()
        model = next((m for m in choice.order if m not in opened), None)
        if model is not None:
            return model, ""
        if choice.order:
            return None, f"route {route}: every candidate's circuit breaker is open ({', '.join(choice.order)})"
        return None, f"route {route} has no available model: {choice.why}"

    async def add_header(self, request: web.Request, response: web.StreamResponse) -> None:
        """``on_response_prepare``: streamed and plain answers, and errors, all carry the route taken."""
        route = request.get(ROUTE_KEY)
        if route is not None:
            response.headers[HEADER] = route

    def apply(self, request: web.Request, payload: dict[str, Any], body: bytes) -> tuple[bytes, str | None]:
        """The body to forward (``model`` rewritten when it names a route) and an error when no candidate can
        take it. ``payload`` is updated in place, so the caller labels metrics with the real model."""
        route = self.route_of(payload.get("model"))
        if route is None:
            return body, None
        model, problem = self.resolve(route)
        if model is None:
            return body, problem
        payload["model"] = model
        request[ROUTE_KEY] = f"{route} -> {model}"
        return json.dumps(payload).encode(), None

    def listing(self, path: str, status: int, data: bytes) -> bytes:
        """``/api/tags`` and ``/v1/models`` with the route names added, each shown as its current choice."""
        if path not in LISTINGS or status != 200 or not self.routes:
            return data
        try:
            document = json.loads(data)
        except ValueError:
            return data
        if path == "/api/tags" and isinstance(document, dict) and isinstance(document.get("models"), list):
            listed = document["models"]
            by_name = {e.get("name"): e for e in listed if isinstance(e, dict)}
            for name, choice in self._choices.items():
                if name not in by_name:
                    entry = dict(by_name.get(choice.model) or {"size": 0, "digest": "", "details": {}})
                    listed.append({**entry, "name": name, "model": name})
        elif path == "/v1/models" and isinstance(document, dict):
            listed = document.get("data") if isinstance(document.get("data"), list) else []
            ids = {e.get("id"): e for e in listed if isinstance(e, dict)}
            for name, choice in self._choices.items():
                if name not in ids:
                    created = (ids.get(choice.model) or {}).get("created", 0)
                    listed.append({"id": name, "object": "model", "created": created, "owned_by": "singularity-ops"})
            document["data"] = listed
        else:
            return data
        return json.dumps(document).encode()


def open_breakers_of(registry: Any) -> Callable[[], set[str]]:
    """The names whose breaker is open now, from the gateway's BreakerRegistry, without creating breakers."""
    return lambda: {b.name for b in registry.breakers() if b.state is State.OPEN}
