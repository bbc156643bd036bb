"""Run the Ollama stand-in as its own process (benchmarks, the alerting end-to-end test, trying things by hand).

    .venv/bin/python -m tests.standins.serve --port 11434 --models llama3.2:3b phi4:14b --load llama3.2:3b
    .venv/bin/python -m tests.standins.serve --synthetic 50 --load-first 10

Prints ``ready http://127.0.0.1:PORT`` once it answers, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import threading

from tests.standins.models import REAL_MODELS, synthetic_models
from tests.standins.ollama import OllamaStandIn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=["llama3.2:3b", "qwen2.5-coder:1.5b", "phi4:14b"],
                        choices=sorted(REAL_MODELS), metavar="NAME")
    parser.add_argument("--synthetic", type=int, default=0, help="N synthetic models instead of --models")
    parser.add_argument("--load", nargs="*", default=[], metavar="NAME", help="models loaded at start")
    parser.add_argument("--load-first", type=int, default=0, help="load the first N models")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed tokens")
    args = parser.parse_args()
    models = synthetic_models(args.synthetic) if args.synthetic else [REAL_MODELS[n] for n in args.models]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with OllamaStandIn(models=models, port=args.port) as standin:
        standin.token_delay = args.token_delay
        for name in [*args.load, *(m.name for m in models[: args.load_first])]:
            standin.load(name)
        print(f"ready {standin.url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
