"""``singularity-ops prompts``: managed system prompts and their A/B experiments by hand (docs/PROMPT_OPTIMIZATION.md).

list / enable ID --name NAME / disable ID / optimize ID [--dry-run] / experiment start ID [--candidate C] [--share S]
/ experiment stop ID / approve ID / rollback ID / show ID. ID is a prompt's name or (a unique start of) its id.
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from singularity_ops.cli.tables import print_table
from singularity_ops.config import Config


def add_parser(subparsers: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    prompts = subparsers.add_parser("prompts", help="managed system prompts: list, enable, optimize, A/B "
                                    "experiments, approve, rollback")
    actions = prompts.add_subparsers(dest="prompts_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every system prompt the gateway has seen, with its id")
    enable = actions.add_parser("enable", help="manage a prompt: keep its dialogues, allow candidates and experiments")
    enable.add_argument("--name", required=True, help="the name metrics and commands use for it (never its text)")
    disable = actions.add_parser("disable", help="stop managing a prompt: clients' own text is served again at once")
    optimize = actions.add_parser("optimize", help="ask the optimiser model for candidates now, score them offline, "
                                  "start an experiment for one that wins")
    optimize.add_argument("--dry-run", action="store_true", help="score candidates, record and start nothing")
    experiment = actions.add_parser("experiment", help="start or stop a prompt's A/B experiment by hand")
    steps = experiment.add_subparsers(dest="experiment_command", metavar="STEP", required=True)
    start = steps.add_parser("start", help="test a candidate (default: the best-scored); on a running experiment, "
                             "set its share")
    start.add_argument("--candidate", type=int, metavar="CANDIDATE_ID", help="the candidate to test (prompts show)")
    start.add_argument("--share", type=float, metavar="S", help="fraction of clients that get the candidate "
                       "(default prompt_optimizer.share)")
    stop = steps.add_parser("stop", help="end the experiment: everyone gets the control again")
    approve = actions.add_parser("approve", help="promote the candidate an experiment found better (manual approval)")
    rollback = actions.add_parser("rollback", help="serve the original text to everyone at once; end any experiment")
    show = actions.add_parser("show", help="the live prompt, its candidates, the experiment and its numbers, the log")
    for parser in (enable, disable, optimize, start, stop, approve, rollback, show):
        parser.add_argument("id", metavar="ID", help="the prompt's name, or its id (a unique start of it)")
    for parser in (listing, enable, disable, optimize, start, stop, approve, rollback, show):
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        common(parser)


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this container
        return "cli"


def run(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.store import Database

    database = Database.open_migrated(config.database, config.home)
    try:
        with database.connect(autocommit=True) as conn:
            action = args.prompts_command
            if action == "experiment":
                action = f"experiment_{args.experiment_command}"
            result = ACTIONS[action](config, conn, args, datetime.now(UTC))
    finally:
        database.close()
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        PRINTERS.get(action, _print_line)(result)
    return 0


def cmd_list(config: Config, conn: Any, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from singularity_ops.controllers.prompt_optimizer import experiments, store

    found = []
    for prompt in store.list_prompts(conn):
        current = experiments.open_experiment(conn, prompt.id)
        item = {key: value for key, value in prompt.as_json().items() if key != "original_text"}
        found.append({**item, "experiment": current.state if current else None})
    return {"prompts": found}


def _print_list(result: dict[str, Any]) -> None:
    if not result["prompts"]:
        print("no system prompts seen yet (the gateway records each one it passes)")
        return
    rows = [["ID", "NAME", "ENABLED", "REQUESTS", "MODELS", "LAST SEEN", "EXPERIMENT", "PREVIEW"]]
    for p in result["prompts"]:
        preview = (p["preview"] or "-").replace("\n", " ")
        rows.append([p["short_id"], p["name"] or "-", "yes" if p["enabled"] else "no", str(p["request_count"]),
                     ",".join(p["models"]) or "-", p["last_seen"][:19].replace("T", " "), p["experiment"] or "-",
                     preview])
    print_table(rows)


def cmd_enable(config: Config, conn: Any, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from singularity_ops.controllers.prompt_optimizer import store

    prompt = store.enable(conn, args.id, args.name, actor(), now)
    return {"id": prompt.id, "name": prompt.name, "enabled": True,
            "message": f"prompt {prompt.id[:12]} enabled as {prompt.name}: the gateway keeps its dialogues from its "
                       f"next sync (prompt_optimizer.sync_seconds)"}


def cmd_disable(config: Config, conn: Any, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from singularity_ops.controllers.prompt_optimizer import experiments

    prompt = experiments.disable(conn, args.id, actor(), now)
    return {"id": prompt.id, "name": prompt.name, "enabled": False,
            "message": f"prompt {prompt.label} disabled: requests carry their own system prompt again"}


def cmd_optimize(config: Config, conn: Any, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from singularity_ops.controllers.prompt_optimizer.controller import OllamaModels
    from singularity_ops.controllers.prompt_optimizer.optimize import optimize

    models = OllamaModels(config, config.prompt_optimizer)
    try:
        return optimize(conn, args.id, config.prompt_optimizer, models, actor(), now, dry_run=args.dry_run).as_json()
    finally:
        models.close()


def _print_optimize(result: dict[str, Any]) -> None:
    print(f"prompt {result['prompt']}: optimiser {result['optimizer_model']}, judge {result['judge_model']}"
          + (" (dry run)" if result["dry_run"] else ""))
    if result["patterns"]:
        print("patterns:\n  " + result["patterns"].replace("\n", "\n  "))
    rows = [["CANDIDATE", "OFFLINE SCORE", "TEXT"]]
    if result["baseline"]:
        rows.append(["current", _score(result["baseline"]["offline_score"]), _excerpt(result["baseline"]["text"])])
    for c in result["candidates"]:
        rows.append([str(c["id"] or "-"), _score(c["offline_score"]), _excerpt(c["text"])])
    if len(rows) > 1:
        print_table(rows)
    print(result["outcome"])


def cmd_experiment_start(config: Config, conn: Any, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from singularity_ops.controllers.prompt_optimizer import experiments

    share = args.share if args.share is not None else config.prompt_optimizer.share
    experiment, done = experiments.start(conn, args.id, args.candidate, share, actor(), now)
    what = "share set to" if done == "share_changed" else f"started with candidate {experiment.candidate_id} at share"
    return {**experiment.as_json(), "done": done, "message": f"experiment {experiment.id} {what} {share:g}"}


def cmd_experiment_stop(config: Config, conn: Any, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from singularity_ops.controllers.prompt_optimizer import experiments

    experiment = experiments.stop(conn, args.id, actor(), now)
    return {"id": experiment.id, "state": "stopped", "message": f"experiment {experiment.id} stopped: everyone gets "
            "the control again"}


def cmd_approve(config: Config, conn: Any, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from singularity_ops.controllers.prompt_optimizer import experiments

    experiment = experiments.approve(conn, args.id, actor(), now)
    return {"id": experiment.id, "state": "promoted", "candidate_id": experiment.candidate_id,
            "message": f"candidate {experiment.candidate_id} promoted: served to everyone"}


def cmd_rollback(config: Config, conn: Any, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from singularity_ops.controllers.prompt_optimizer import experiments

    prompt = experiments.rollback(conn, args.id, actor(), now)
    return {"id": prompt.id, "name": prompt.name, "live_candidate": None,
            "message": f"prompt {prompt.label} rolled back: the original text is served to everyone"}


def cmd_show(config: Config, conn: Any, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from singularity_ops.controllers.prompt_optimizer import experiments, store
    from singularity_ops.controllers.prompt_optimizer.sequential import look

    prompt = store.resolve(conn, args.id)
    experiment = experiments.open_experiment(conn, prompt.id) or experiments.latest(conn, prompt.id)
    numbers = None
    if experiment is not None:
        counts = store.variant_counts(conn, experiment.id)
        test = config.prompt_optimizer.test
        found = look(counts.test_counts(), alpha=test.alpha, tau=test.tau, min_outcomes=test.min_outcomes,
                     max_outcomes=test.max_outcomes, max_days=test.max_days,
                     elapsed_days=(now - experiment.started_at).total_seconds() / 86400)
        control_rate, candidate_rate = counts.test_counts().rates()
        numbers = {"counts": counts.as_json(), "success_rate": {"control": control_rate, "candidate": candidate_rate},
                   "statistic": found.log_lr, "threshold": found.threshold, "difference": found.difference,
                   "interval": found.interval, "now": found.reason}
    return {"prompt": prompt.as_json(), "live_text": store.current_text(conn, prompt),
            "candidates": [c.as_json() for c in store.candidates(conn, prompt.id)],
            "experiment": {**experiment.as_json(), **(numbers or {})} if experiment else None,
            "log": store.logs(conn, prompt.id, 20)}


def _print_show(result: dict[str, Any]) -> None:
    p = result["prompt"]
    print(f"prompt {p['short_id']}  name {p['name'] or '-'}  enabled {'yes' if p['enabled'] else 'no'}  "
          f"requests {p['request_count']}  models {','.join(p['models']) or '-'}")
    live = p["live_candidate"]
    print(f"live: {'candidate ' + str(live) if live else 'the original'}")
    print("  " + (result["live_text"] or "(text not seen since enabled)").replace("\n", "\n  "))
    if result["candidates"]:
        rows = [["CANDIDATE", "STATUS", "OFFLINE", "BASELINE", "MODEL", "TEXT"]]
        for c in result["candidates"]:
            rows.append([str(c["id"]), c["status"], _score(c["offline_score"]), _score(c["baseline_score"]),
                         c["optimizer_model"] or "by hand", _excerpt(c["text"])])
        print_table(rows)
    e = result["experiment"]
    if e:
        print(f"experiment {e['id']}: {e['state']}, candidate {e['candidate_id']} at share {e['share']:g}, started "
              f"{e['started_at'][:19]} by {e['started_by']}" + (f"; {e['decision']}: {e['reason']}" if e["decision"]
                                                                 else ""))
        rates = e.get("success_rate", {})
        for variant, figures in e.get("counts", {}).items():
            rate = rates.get(variant)
            print(f"  {variant:<9} requests {figures['requests']:>6}  success rate "
                  f"{'-' if rate is None else f'{rate:.1%}'}  " + " ".join(
                      f"{k} {v}" for k, v in figures.items() if k != "requests"))
        if e.get("statistic") is not None:
            low, high = e["interval"]
            print(f"  log LR {e['statistic']:.2f} (decides at {e['threshold']:.2f}); difference "
                  f"{e['difference'] * 100:+.1f} points, always-valid interval [{low * 100:+.1f}, {high * 100:+.1f}]")
    for entry in result["log"][-10:]:
        print(f"  {entry['at'][:19]}  {entry['event']:<18} {entry['actor']}")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _excerpt(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _print_line(result: dict[str, Any]) -> None:
    print(result["message"])


ACTIONS: dict[str, Callable[[Config, Any, argparse.Namespace, datetime], dict[str, Any]]] = {
    "list": cmd_list, "enable": cmd_enable, "disable": cmd_disable, "optimize": cmd_optimize,
    "experiment_start": cmd_experiment_start, "experiment_stop": cmd_experiment_stop, "approve": cmd_approve,
    "rollback": cmd_rollback, "show": cmd_show,
}
PRINTERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "list": _print_list, "optimize": _print_optimize, "show": _print_show,
}
