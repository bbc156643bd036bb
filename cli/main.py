"""``singularity-ops``: a thin command line over the testable modules."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from singularity_ops.cli import cache as cache_cli  # light: imports its work when run
from singularity_ops.cli import processes
from singularity_ops.cli.tables import print_table
from singularity_ops.config import Config, load_config
from singularity_ops.errors import OllamaError, SingularityError
from singularity_ops.logs import setup_logging

log = logging.getLogger("singularity_ops")


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration (flags > environment > config file > defaults)")
    group.add_argument("--config", metavar="FILE", help="YAML config file (default: $SINGULARITY_CONFIG)")
    group.add_argument("--ollama-host", metavar="URL", help="upstream Ollama (default: $OLLAMA_HOST)")
    group.add_argument("--home", metavar="DIR", help="data directory (default: $SINGULARITY_HOME)")
    group.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="singularity-ops",
        description="Observability and autonomous operations for self-hosted LLM servers (Ollama).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="everything on one machine: migrate, then the exporter with the gateway")
    exporter = commands.add_parser("exporter", help="collectors and /metrics for Prometheus, and the gateway")
    for parser_ in (run, exporter):
        parser_.add_argument("--metrics-listen", metavar="HOST:PORT", help="default 127.0.0.1:9777")
        parser_.add_argument("--gateway-listen", metavar="HOST:PORT",
                             help="the Ollama-compatible gateway for clients (default 127.0.0.1:11435)")
        _common(parser_)

    stack = commands.add_parser("stack", help="Prometheus + Alertmanager from PATH with this repo's rules, on loopback")
    stack.add_argument("--metrics-listen", metavar="HOST:PORT", help="the exporter to scrape (default 127.0.0.1:9777)")
    stack.add_argument("--prometheus-listen", metavar="HOST:PORT", default="127.0.0.1:9090")
    stack.add_argument("--alertmanager-listen", metavar="HOST:PORT", default="127.0.0.1:9093")
    stack.add_argument("--scrape-interval", default="15s", help="also the rule evaluation interval (default 15s)")
    stack.add_argument("--group-wait", metavar="DURATION", help="Alertmanager's group_wait (default: its config)")
    stack.add_argument("--group-interval", metavar="DURATION",
                       help="Alertmanager's group_interval (default: its config)")
    stack.add_argument("--config-dir", metavar="DIR", help="folder holding prometheus/ and alertmanager/ "
                       "(default: this checkout)")
    _common(stack)

    breakers = commands.add_parser("breakers", help="circuit breaker state of the running gateway")
    breakers.add_argument("--json", action="store_true", help="print the result as JSON")
    breakers.add_argument("--metrics-listen", metavar="HOST:PORT",
                          help="where the exporter runs (default 127.0.0.1:9777)")
    _common(breakers)

    controller = commands.add_parser("controller", help="run one controller as its own process")
    # Not listed from the registry here: that would import every controller into every command's process.
    controller.add_argument("name", metavar="NAME", help="e.g. model-manager or backup (an unknown name lists all)")
    controller.add_argument("--dry-run", action="store_true", default=None,
                            help="decide and record, but change nothing (the model manager)")
    _common(controller)

    from singularity_ops.cli import models as models_cli

    models_cli.add_parser(commands, _common)

    from singularity_ops.cli import backup as backup_cli

    backup_cli.add_parser(commands, _common)

    from singularity_ops.cli import security as security_cli

    security_cli.add_parser(commands, _common)
    security_cli.add_keys_parser(commands, _common)

    from singularity_ops.cli import alerts as alerts_cli

    alerts_cli.add_parser(commands, _common)

    from singularity_ops.cli import validate as validate_cli

    validate_cli.add_parser(commands, _common)

    cache_cli.add_parser(commands, _common)

    from singularity_ops.cli import prompts as prompts_cli

    prompts_cli.add_parser(commands, _common)

    migrate = commands.add_parser("migrate", help="apply migrations/*.sql in order, once each")
    migrate.add_argument("--json", action="store_true", help="print the result as JSON")
    _common(migrate)

    check = commands.add_parser("check-memory", help="per installed model: memory needed, and whether it fits")
    check.add_argument("--model", metavar="NAME", help="only this model")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.add_argument("--fail-on-misfit", action="store_true", help="exit 1 when a model does not fit")
    _common(check)
    return parser


def config_from(args: argparse.Namespace) -> Config:
    flags: dict[str, Any] = {
        "ollama.host": args.ollama_host,
        "home": args.home,
        "logging.level": args.log_level,
        "exporter.metrics_listen": getattr(args, "metrics_listen", None),
        "gateway.listen": getattr(args, "gateway_listen", None),
        "model_manager.dry_run": getattr(args, "dry_run", None),
    }
    return load_config(flags=flags, config_file=args.config)


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.migrate import load_migrations, migrate
    from singularity_ops.store import Database

    database = Database.open(config.database, config.home)
    with database.connect() as conn:
        applied = migrate(conn)
    names = [m.name for m in load_migrations()]
    if args.json:
        print(json.dumps({"applied": applied, "current": names[-1] if names else None}))
    elif applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print(f"up to date ({names[-1] if names else 'no migrations'})")
    return 0




def cmd_check_memory(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.memory import human_bytes
    from singularity_ops.model_fit import assess_models
    from singularity_ops.ollama_api import client_for
    from singularity_ops.ollama_state import OllamaState
    from singularity_ops.runners import find_runner_rss

    with client_for(config) as client:
        snapshot = OllamaState(client, 0).snapshot()
    if not snapshot.up:
        raise OllamaError(snapshot.error or f"Ollama at {config.ollama.host} is unavailable")
    budget, rows = assess_models(snapshot, config.memory, find_runner_rss())
    if args.model:
        wanted = args.model if ":" in args.model else f"{args.model}:latest"
        rows = [r for r in rows if r.name in (args.model, wanted)]
        if not rows:
            installed = ", ".join(m.name for m in snapshot.installed) or "none"
            raise OllamaError(f"model '{args.model}' is not installed in Ollama (installed: {installed}); "
                              f"pull it with: ollama pull {args.model}")
    reserve = config.memory.reserve_bytes
    if args.json:
        print(json.dumps({
            "memory": {
                "source": budget.source,
                "capacity_bytes": budget.capacity_bytes,
                "available_bytes": budget.available_bytes,
                "loaded_bytes": budget.loaded_bytes,
                "reserve_bytes": reserve,
                "obtainable_bytes": max(0, budget.obtainable_bytes - reserve),
            },
            "models": [row.as_json() for row in rows],
        }, indent=2))
    else:
        print(f"memory ({budget.source}): {human_bytes(budget.capacity_bytes)} RAM + swap, "
              f"{human_bytes(budget.available_bytes)} free, {human_bytes(budget.loaded_bytes)} held by "
              f"{len(snapshot.loaded)} loaded model(s), reserve {human_bytes(reserve)}")
        table = [["MODEL", "SIZE", "NEEDS", "LOADED", "RSS", "FITS", "WHY"]]
        for row in rows:
            table.append([
                row.name,
                human_bytes(row.size_bytes),
                human_bytes(row.fit.need.total_bytes),
                human_bytes(row.loaded_bytes) if row.loaded_bytes is not None else "-",
                human_bytes(row.rss_bytes) if row.rss_bytes is not None else "-",
                "yes" if row.fit.fits else "no",
                row.fit.reason.split(": ", 1)[1],
            ])
        if len(table) == 1:
            print("no models installed")
        else:
            print_table(table)
    return 1 if args.fail_on_misfit and any(not row.fit.fits for row in rows) else 0


def cmd_breakers(config: Config, args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from singularity_ops.exporter.access import client_header

    url = f"http://{config.exporter.metrics_listen}/breakers"
    request = urllib.request.Request(url, headers=client_header(config.metrics.auth))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            breakers = json.loads(response.read())["breakers"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise SingularityError(f"cannot read breakers from the exporter at {url} ({exc}); is `singularity-ops run` "
                               "running there? set --metrics-listen to its address") from None
    if args.json:
        print(json.dumps({"breakers": breakers}, indent=2))
    elif not breakers:
        print("no breakers yet: none is made before a model's first request")
    else:
        table = [["BREAKER", "STATE", "FAILURE RATE", "CALLS", "RETRY IN"]]
        for row in breakers:
            retry = row.get("retry_after_seconds") or 0
            table.append([row["name"], row["state"], f"{row.get('failure_rate', 0):.0%}",
                          str(row.get("window_calls", 0)), f"{retry} s" if retry else "-"])
        print_table(table)
    return 0


def cmd_stack(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from singularity_ops.cli.stack import REPO, StackOptions, run_stack

    options = StackOptions(prometheus_listen=args.prometheus_listen, alertmanager_listen=args.alertmanager_listen,
                           scrape_interval=args.scrape_interval, evaluation_interval=args.scrape_interval,
                           config_dir=Path(args.config_dir) if args.config_dir else REPO,
                           group_wait=args.group_wait, group_interval=args.group_interval)
    return run_stack(config, options)


def _models(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.cli import models as models_cli

    return models_cli.run(config, args)


def _backup(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.cli import backup as backup_cli

    return backup_cli.run(config, args)


def _security(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.cli import security as security_cli

    return security_cli.run(config, args)


def _validate(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.cli import validate as validate_cli

    return validate_cli.run(config, args)


def _keys(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.cli import security as security_cli

    return security_cli.run_keys(config, args)


def _prompts(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.cli import prompts as prompts_cli

    return prompts_cli.run(config, args)


def _alerts(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.cli import alerts as alerts_cli

    return alerts_cli.run(config, args)


LONG_RUNNING = {"run", "exporter", "stack", "controller"}
# Loggers whose warnings show at every default level: a backup key file other users can read.
ALWAYS_WARN = ("singularity_ops.controllers.backup.keys",)
COMMANDS = {
    "run": processes.cmd_exporter,
    "exporter": processes.cmd_exporter,
    "migrate": cmd_migrate,
    "check-memory": cmd_check_memory,
    "controller": processes.cmd_controller,
    "models": _models,
    "backup": _backup,
    "security": _security,
    "validate": _validate,
    "keys": _keys,
    "alerts": _alerts,
    "cache": cache_cli.run,
    "prompts": _prompts,
    "breakers": cmd_breakers,
    "stack": cmd_stack,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args)
        default_level = "info" if args.command in LONG_RUNNING else "error"
        setup_logging(config.logging.level or default_level)
        if config.logging.level is None:
            for name in ALWAYS_WARN:  # warnings about a secret's safety, which no command's output repeats
                logging.getLogger(name).setLevel(logging.WARNING)
        return COMMANDS[args.command](config, args)
    except SingularityError as exc:
        words = [args.command, *(getattr(args, f"{args.command}_command", None),)]
        if args.command == "security" and getattr(args, "bans_command", None):
            words.append(args.bans_command)
        print(f"singularity-ops {' '.join(w for w in words if w)}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
