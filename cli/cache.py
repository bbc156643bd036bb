"""``singularity-ops cache stats | clear | warm``: the semantic cache and the warmer's predictions by hand."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from singularity_ops.cli.tables import print_table
from singularity_ops.config import Config


def add_parser(subparsers: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    cache = subparsers.add_parser("cache", help="the semantic cache: stats, clear, and the warmer's predictions")
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    stats = actions.add_parser("stats", help="entries, hits, misses and hit ratio per model")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    clear = actions.add_parser("clear", help="delete cache entries (all, or one model's)")
    clear.add_argument("--model", metavar="NAME", help="only this model's entries")
    warm = actions.add_parser("warm", help="the next window's predicted requests; without --dry-run, warm them now")
    warm.add_argument("--dry-run", action="store_true", help="only print the window and its predictions")
    warm.add_argument("--at", metavar="ISO-8601", help="predict for the window starting then (default now); without "
                      "an offset it is read in cache.warmer.timezone")
    warm.add_argument("--json", action="store_true", help="print the result as JSON")
    for parser in (stats, clear, warm):
        common(parser)


def run(config: Config, args: argparse.Namespace) -> int:
    return {"stats": cmd_stats, "clear": cmd_clear, "warm": cmd_warm}[args.cache_command](config, args)


def _database(config: Config) -> Any:
    from singularity_ops.store import Database

    return Database.open_migrated(config.database, config.home)


def stats(conn: Any) -> dict[str, Any]:
    models: dict[str, dict[str, Any]] = {}
    for model, entries, warmed, hits in conn.execute(
            "SELECT model, count(*), count(*) FILTER (WHERE origin = 'warmer'), coalesce(sum(hits), 0) "
            "FROM cache_entries GROUP BY model").fetchall():
        models[model] = {"entries": entries, "warmer_entries": warmed, "entry_hits": int(hits)}
    for model, hits, semantic, misses in conn.execute(
            "SELECT model, count(*) FILTER (WHERE result = 'hit'), count(*) FILTER (WHERE result = 'semantic'), "
            "count(*) FILTER (WHERE result = 'miss') FROM cache_requests GROUP BY model").fetchall():
        models.setdefault(model, {"entries": 0, "warmer_entries": 0, "entry_hits": 0})
        models[model].update(hits=hits, semantic_hits=semantic, misses=misses)
    for figures in models.values():
        figures.setdefault("hits", 0), figures.setdefault("semantic_hits", 0), figures.setdefault("misses", 0)
        looked_up = figures["hits"] + figures["semantic_hits"] + figures["misses"]
        figures["hit_ratio"] = round((figures["hits"] + figures["semantic_hits"]) / looked_up, 4) if looked_up else None
    totals = {k: sum(f[k] for f in models.values()) for k in ("entries", "hits", "semantic_hits", "misses")}
    looked_up = totals["hits"] + totals["semantic_hits"] + totals["misses"]
    totals["hit_ratio"] = round((totals["hits"] + totals["semantic_hits"]) / looked_up, 4) if looked_up else None
    return {"total": totals, "models": dict(sorted(models.items()))}


def cmd_stats(config: Config, args: argparse.Namespace) -> int:
    with _database(config).connect(autocommit=True) as conn:
        figures = stats(conn)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    if not config.cache.enabled:
        print("the cache is disabled (cache.enabled: false); figures are from when it was on")
    rows = [["MODEL", "ENTRIES", "WARMED", "HITS", "SEMANTIC", "MISSES", "HIT RATIO"]]
    for model, f in [*figures["models"].items(), ("total", {**figures["total"], "warmer_entries": ""})]:
        ratio = "-" if f["hit_ratio"] is None else f"{f['hit_ratio']:.1%}"
        rows.append([model, str(f["entries"]), str(f["warmer_entries"]), str(f["hits"]), str(f["semantic_hits"]),
                     str(f["misses"]), ratio])
    print_table(rows)
    return 0


def cmd_clear(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.cache_key import canonical_model

    with _database(config).connect(autocommit=True) as conn:
        if args.model:
            deleted = conn.execute("DELETE FROM cache_entries WHERE model = %s", (canonical_model(args.model),))
        else:
            deleted = conn.execute("DELETE FROM cache_entries")
    print(f"deleted {deleted.rowcount} entr{'y' if deleted.rowcount == 1 else 'ies'}"
          + (f" of {args.model}" if args.model else ""))
    return 0


def cmd_warm(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.cli.models import parse_at
    from singularity_ops.controllers.cache_warmer.controller import CacheWarmer

    database = _database(config)
    warmer = CacheWarmer(config, database=database)
    try:
        at = parse_at(args.at, config.cache.warmer.timezone) if args.at else warmer.clock()
        if args.dry_run:
            window, predictions = warmer.preview(at)
            outcomes: dict[str, str] = {}
        else:
            window, predictions = warmer.preview(at)
            queued = warmer.queue(at)
            outcomes = asyncio.run(warm_now(config, warmer, database.url, len(queued))) if queued else {}
    finally:
        warmer.close()
    result = {"window": window.as_json(), "predictions": [
        {**p.as_json(), **({"outcome": outcomes.get(p.key, "not run: " + _why_not(p))} if not args.dry_run else {})}
        for p in predictions]}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"window {window.start.isoformat(timespec='minutes')} - {window.end.isoformat(timespec='minutes')}")
    if not predictions:
        print("no predictions")
        return 0
    rows = [["MODEL", "EXPECTED", "REASON", "CACHED", "MODEL STATE", "PROMPT"] + ([] if args.dry_run else ["OUTCOME"])]
    for p in result["predictions"]:
        prompt = p["prompt"] if len(p["prompt"]) <= 50 else p["prompt"][:47] + "..."
        rows.append([p["model"], f"{p['expected_requests']:.2f}", p["reason"], "yes" if p["cached"] else "no",
                     p["model_state"] or "-", prompt] + ([] if args.dry_run else [p["outcome"]]))
    print_table(rows)
    return 0


def _why_not(prediction: Any) -> str:
    if prediction.cached:
        return "cached"
    return prediction.ready or "not queued"


async def warm_now(config: Config, warmer: Any, url: str, queued: int) -> dict[str, str]:
    """The queued warms, carried out here and now (an operator's command: no idle rule); key -> outcome."""
    import aiohttp
    from prometheus_client import CollectorRegistry

    from singularity_ops.exporter.gateway.cache.embed import Embedder
    from singularity_ops.exporter.gateway.cache.metrics import CacheMetrics
    from singularity_ops.exporter.gateway.cache.store import CacheStore, Connections
    from singularity_ops.exporter.gateway.cache.warm import WarmRunner
    from singularity_ops.ollama_api import upstream_headers

    settings = config.cache
    snapshot = warmer.snapshot()
    digests = {m.name: m.digest for m in snapshot.installed}
    loaded = {m.name for m in snapshot.loaded}
    metrics = CacheMetrics(CollectorRegistry())
    headers = upstream_headers(config)

    async def address() -> str:
        return url

    async with aiohttp.ClientSession() as session:
        store = CacheStore(Connections(address, 1, config.database.connect_timeout_seconds))
        try:
            await store.setup()
            embedder = Embedder(config.ollama.host, settings.embedding_model, settings.embedding_timeout_seconds,
                                metrics, lambda: session, headers)
            runner = WarmRunner(settings, store, embedder, metrics, config.ollama.host, lambda: session,
                                digests.get, lambda: loaded, headers)
            outcomes: dict[str, str] = {}
            for _ in range(queued):  # the most expected first; a spent budget ends it
                done = await runner.run_next()
                if done is None:
                    break
                warm, status, outcome = done
                outcomes[warm.key] = status + (f": {outcome}" if outcome else "")
        finally:
            await store.db.close()
    return outcomes
