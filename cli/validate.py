"""``singularity-ops validate``: the cross-model validation suite by hand, with a progress bar."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from singularity_ops.cli.tables import print_table
from singularity_ops.config import Config


def add_parser(subparsers: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    validate = subparsers.add_parser("validate", help="run the validation suite on every model (or --models); "
                                     "demote those under validator.min_accuracy")
    validate.add_argument("--models", metavar="A,B", help="only these models (default: validator.models, else every "
                          "installed model that generates text)")
    validate.add_argument("--suite", metavar="FILE", help="a suite YAML file (default: validator.suite, else the "
                          "shipped default suite; docs/MODEL_VALIDATION.md)")
    validate.add_argument("--json", action="store_true", help="print the result as JSON (progress still on stderr)")
    validate.add_argument("--no-demote", action="store_true", help="only report: demote and promote nothing")
    common(validate)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def run(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from singularity_ops.controllers.validator.progress import ConsoleProgress
    from singularity_ops.controllers.validator.runner import ValidationRun
    from singularity_ops.controllers.validator.suite import load_suite
    from singularity_ops.store import Database

    suite = load_suite(Path(args.suite).expanduser() if args.suite else config.validator.suite)
    models = [name.strip() for name in args.models.split(",") if name.strip()] if args.models else None
    database = Database.open_migrated(config.database, config.home)
    try:
        report = ValidationRun(config, database, suite, progress=ConsoleProgress()).run(
            models, demote=not args.no_demote, trigger="manual")
    finally:
        database.close()
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(f"run {report.run_id}: suite {suite.name} ({len(suite.cases)} cases, {suite.hash[:12]}) "
              f"{'finished' if report.status == 'ok' else 'FAILED: ' + str(report.error)}")
        rows = [["MODEL", "STATUS", "ACCURACY", "PASSED", "P50", "P95", "TOKENS/S", "QUALITY", "WHY"]]
        for m in report.models:
            rows.append([m.model, m.status, _percent(m.accuracy), f"{m.passed}/{len(m.cases)}" if m.cases else "-",
                         _seconds(m.latency_p50_seconds), _seconds(m.latency_p95_seconds),
                         "-" if m.tokens_per_second is None else f"{m.tokens_per_second:.1f}",
                         "-" if m.quality_score is None else f"{m.quality_score:.3f}", m.reason])
        if len(rows) == 1:
            print("no models to validate")
        else:
            print_table(rows)
    return 0 if report.status == "ok" and all(m.status != "failed" for m in report.models) else 1
