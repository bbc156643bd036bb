"""``singularity-ops models plan | apply | demote | promote | routes``: the model manager by hand, and what the
gateway's routes (``gateway.routes``) choose now."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import datetime

from singularity_ops.cli.tables import print_table
from singularity_ops.config import Config
from singularity_ops.errors import OllamaError, SingularityError


def add_parser(subparsers: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``models`` and its actions to the CLI; ``common`` adds the shared configuration flags to each."""
    models = subparsers.add_parser("models", help="the model manager by hand: plan, apply, demote, promote; "
                                   "routes")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    plan = actions.add_parser("plan", help="what the model manager would load, unload, keep and skip, and why")
    plan.add_argument("--at", metavar="ISO-8601", help="plan for this time (profile and demand window) instead of now; "
                      "without an offset it is read in model_manager.timezone")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    apply = actions.add_parser("apply", help="carry out the plan once now (refused while another manager acts)")
    apply.add_argument("--json", action="store_true", help="print the recorded decisions as JSON")
    demote = actions.add_parser("demote", help="never preload this model")
    demote.add_argument("model", metavar="NAME")
    demote.add_argument("--reason", default="demoted by hand", help="recorded with the status")
    promote = actions.add_parser("promote", help="let the model manager preload this model again")
    promote.add_argument("model", metavar="NAME")
    routes = actions.add_parser("routes", help="each virtual model of gateway.routes: its current choice, and why")
    routes.add_argument("--json", action="store_true", help="print the choices as JSON")
    for parser in (plan, apply, demote, promote, routes):
        common(parser)


def parse_at(text: str, timezone: str | None) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SingularityError(f"--at {text!r} is not an ISO-8601 time; write e.g. 2025-06-02T07:30 or "
                               "2025-06-02T07:30+03:00") from None
    if moment.tzinfo is None:
        from zoneinfo import ZoneInfo

        moment = moment.replace(tzinfo=ZoneInfo(timezone)) if timezone else moment.astimezone()
    return moment




def cmd_plan(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.controllers.model_manager.controller import ModelManager
    from singularity_ops.controllers.model_manager.plan import describe_profile

    manager = ModelManager(config)
    try:
        at = parse_at(args.at, config.model_manager.timezone) if args.at else manager.clock()
        plan = manager.plan(at)
    finally:
        manager.close()
    if args.json:
        print(json.dumps(plan.as_json(), indent=2))
        return 0
    profile = next((p for p in config.model_manager.profiles if p.name == plan.profile), None)
    local = at.astimezone(manager.zone)
    print(f"at {local.isoformat(timespec='minutes')}: profile "
          f"{describe_profile(profile) if profile else 'none (outside every profile: only memory safety)'}")
    rows = [["ACTION", "MODEL", "WHY"]]
    rows += [["unload", name, plan.why[name]] for name in plan.unload]
    rows += [["load", name, plan.why[name]] for name in plan.load]
    rows += [["keep", name, plan.why[name]] for name in plan.keep]
    rows += [["skip", skip.model, skip.reason] for skip in plan.skipped]
    if len(rows) == 1:
        print("nothing to do")
    else:
        print_table(rows)
    return 0


def cmd_apply(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.controllers.model_manager.controller import ModelManager

    manager = ModelManager(config)
    try:
        events = manager.apply_once()
    finally:
        manager.close()
    if args.json:
        print(json.dumps({"events": [{"action": e.action, "model": e.model, "result": e.result, "reason": e.reason,
                                      "need_bytes": e.need_bytes, "available_bytes": e.available_bytes}
                                     for e in events]}, indent=2))
    elif events:
        print_table([["ACTION", "MODEL", "RESULT", "WHY"],
                *([e.action, e.model or "-", e.result, e.reason] for e in events)])
    else:
        print("nothing to do")
    return 1 if any(e.result == "error" for e in events) else 0


def _installed_name(config: Config, name: str) -> str:
    """The installed model's own name; an error naming the installed ones when it is not installed. With Ollama
    unreachable the name is taken as given (the status is only a database row)."""
    from singularity_ops.controllers.model_manager.plan import resolve
    from singularity_ops.ollama_api import client_for

    with client_for(config) as client:
        try:
            installed = [m.name for m in client.installed()]
        except OllamaError:
            return name
    found = resolve(name, installed)
    if found is None:
        known = ", ".join(installed) or "none"
        raise SingularityError(f"model '{name}' is not installed in Ollama (installed: {known}); check the name")
    return found


def _set_status(config: Config, name: str, status: str, reason: str) -> bool:
    from singularity_ops.controllers.model_manager.store import set_status
    from singularity_ops.store import Database

    database = Database.open_migrated(config.database, config.home)
    with database.connect(autocommit=True) as conn:
        return set_status(conn, name, status, reason)


def cmd_demote(config: Config, args: argparse.Namespace) -> int:
    name = _installed_name(config, args.model)
    changed = _set_status(config, name, "demoted", args.reason)
    print(f"{name} {'demoted' if changed else 'was already demoted (reason updated)'}: the model manager never "
          "preloads it")
    return 0


def cmd_promote(config: Config, args: argparse.Namespace) -> int:
    name = _installed_name(config, args.model)
    changed = _set_status(config, name, "active", "promoted by hand")
    print(f"{name} {'promoted' if changed else 'was not demoted'}: the model manager may preload it")
    return 0


def _open_breakers(config: Config) -> set[str] | None:
    """Open breakers of the running gateway (its exporter's /breakers); None when it cannot be asked."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{config.exporter.metrics_listen}/breakers", timeout=2) as response:
            return {b["name"] for b in json.loads(response.read())["breakers"] if b.get("state") == "open"}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cmd_routes(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.exporter.gateway.model_names import canonical
    from singularity_ops.exporter.gateway.routing import candidates_for, rank, read_validation
    from singularity_ops.ollama_api import client_for
    from singularity_ops.ollama_state import OllamaState
    from singularity_ops.store import Database

    routes = {name: [canonical(m) for m in models] for name, models in config.gateway.routes.items()}
    if not routes:
        print(json.dumps({"routes": []}) if args.json else "no routes: set gateway.routes (docs/MODEL_VALIDATION.md)")
        return 0
    with client_for(config) as client:
        snapshot = OllamaState(client, 0).snapshot()
    if not snapshot.up:
        raise OllamaError(snapshot.error or f"Ollama at {config.ollama.host} is unavailable")
    database = Database.open_migrated(config.database, config.home)
    try:
        with database.connect() as conn:
            scores, demoted = read_validation(conn, sorted({m for listed in routes.values() for m in listed}))
    finally:
        database.close()
    opened = _open_breakers(config)
    installed, loaded = {m.name for m in snapshot.installed}, {m.name for m in snapshot.loaded}
    choices = [rank(name, candidates_for(listed, installed, loaded, scores, demoted, opened or set()),
                    config.gateway.route_loaded_margin) for name, listed in routes.items()]
    if args.json:
        print(json.dumps({"routes": [c.as_json() for c in choices], "breakers_known": opened is not None}, indent=2))
        return 0
    rows = [["ROUTE", "MODEL", "WHY"]] + [[c.route, c.model or "-", c.why] for c in choices]
    print_table(rows)
    if opened is None:
        print(f"(breaker states unknown: no gateway answered at {config.exporter.metrics_listen}/breakers)")
    return 0


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "plan": cmd_plan,
    "apply": cmd_apply,
    "demote": cmd_demote,
    "promote": cmd_promote,
    "routes": cmd_routes,
}


def run(config: Config, args: argparse.Namespace) -> int:
    return COMMANDS[args.models_command](config, args)
