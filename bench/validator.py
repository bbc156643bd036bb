"""The validator's own overhead per case, beyond the time the model takes to answer (issue 13: goal ≤ 5 ms).

Run: ``.venv/bin/python bench/validator.py`` from the repository root. The Ollama stand-in answers at once, so a
case costs almost nothing upstream; a real PostgreSQL (pgserver, in a temporary folder) holds the results. Two
measurements in one process, after a warm-up run:

* baseline: the same chat requests the validator makes (one per case, the shipped suite's prompts and options),
  sent directly with the validator's own client, timed one by one;
* validator: whole ``ValidationRun``s of the shipped suite (33 cases) on three models, from reading Ollama's state
  to the last row written and the loaded set restored.

Overhead per case = (run time − the answers' own request times inside it) / cases: scoring, progress, the rows
written, the memory-fit look before each model, unloading after it, the lock, the run's bookkeeping. Also printed:
the validator's time per case against the baseline's (the ratio), and the answers' request time inside runs
against the baseline's (the client is the same; they should agree).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singularity_ops.config import load_config
from singularity_ops.controllers.validator.ollama import ValidatorClient
from singularity_ops.controllers.validator.runner import ValidationRun
from singularity_ops.controllers.validator.suite import load_suite
from singularity_ops.store import Database
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

MODELS = ["qwen2.5-coder:1.5b", "tinyllama:1.1b", "llama3.2:3b"]
RUNS = 5


def main() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    suite = load_suite()
    with tempfile.TemporaryDirectory() as home, OllamaStandIn(models=[REAL_MODELS[m] for m in MODELS]) as ollama:
        server = pgserver.get_server(Path(home) / "pg", cleanup_mode="delete")
        try:
            config = load_config(environ={"OLLAMA_HOST": ollama.url, "SINGULARITY_DATABASE_URL": server.get_uri(),
                                          "SINGULARITY_HOME": home})
            database = Database.open_migrated(config.database, config.home)
            client = ValidatorClient(config.ollama.host, 60)

            def baseline() -> list[float]:
                seconds = []
                for model in MODELS:
                    for case in suite.cases:
                        started = time.perf_counter()
                        client.chat(model, list(case.messages), case.options, "5m")
                        seconds.append(time.perf_counter() - started)
                return seconds

            def validation() -> tuple[float, float, int]:
                started = time.perf_counter()
                report = ValidationRun(config, database, suite).run(MODELS, demote=False)
                elapsed = time.perf_counter() - started
                answers = [c.latency_seconds or 0.0 for m in report.models for c in m.cases]
                assert report.status == "ok" and len(answers) == len(MODELS) * len(suite.cases)
                return elapsed, sum(answers), len(answers)

            baseline()
            validation()  # warm-up: connections, the stand-in's first loads, PostgreSQL's caches
            direct, runs = [], []
            for _ in range(RUNS):  # interleaved, so both see the same machine
                direct += baseline()
                runs.append(validation())
            client.close()
            database.close()
        finally:
            server.cleanup()
    cases = sum(n for _, _, n in runs)
    per_case = sum(elapsed for elapsed, _, _ in runs) / cases
    answered = sum(answers for _, answers, _ in runs) / cases
    overhead = [(elapsed - answers) / n for elapsed, answers, n in runs]
    direct_mean = statistics.fmean(direct)
    print(f"suite {suite.name}: {len(suite.cases)} cases x {len(MODELS)} models, {RUNS} runs ({cases} cases)")
    print(f"baseline  chat request, direct:            mean {direct_mean * 1e3:7.3f} ms  "
          f"p50 {statistics.median(direct) * 1e3:7.3f} ms")
    print(f"validator answer request inside a run:     mean {answered * 1e3:7.3f} ms  "
          f"({answered / direct_mean:.2f}x the baseline)")
    print(f"validator whole run per case:              mean {per_case * 1e3:7.3f} ms  "
          f"({per_case / direct_mean:.2f}x the baseline)")
    print(f"validator overhead per case beyond the answer: mean {statistics.fmean(overhead) * 1e3:.3f} ms, "
          f"worst run {max(overhead) * 1e3:.3f} ms (goal <= 5 ms)")


if __name__ == "__main__":
    main()
