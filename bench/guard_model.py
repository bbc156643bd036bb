"""What the injection detector's two stages cost per request: the patterns alone (the baseline) and the patterns
with the learned model (exporter/gateway/guard/classifier.py), measured in the same run.

Run: ``.venv/bin/python bench/guard_model.py`` from the repository root. Prints p50 and p99 in µs of
``PromptScreen.assess`` for a 250-character chat turn (goal for both stages together: ≤ 1 ms p50, ≤ 5 ms p99 on the
2-core development machine), an 8k-token prompt seen for the first time, and an 8k-token chat history with a new
turn (old turns are remembered by both stages), each with the ratio to the patterns alone; and the time to load
the model (at start).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.guard import SHORT, corpus  # noqa: E402
from singularity_ops.config import load_config  # noqa: E402
from singularity_ops.exporter.gateway.guard.classifier import load_model  # noqa: E402
from singularity_ops.exporter.gateway.guard.injection import PromptScreen  # noqa: E402

ROUNDS, LONG_ROUNDS = 5000, 200


def screen(model: str) -> PromptScreen:
    return PromptScreen(load_config(environ={}, flags={"guard.injection.model": model}).guard.injection)


def assess(screen: PromptScreen, texts: list[str]) -> float:
    """One ``assess``, driven without an event loop (it never suspends without a classifier)."""
    started = time.perf_counter()
    coroutine = screen.assess(texts)
    try:
        coroutine.send(None)
    except StopIteration:
        return time.perf_counter() - started
    raise AssertionError("assess suspended")


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(name: str, run: Callable[[PromptScreen, int], float], rounds: int) -> None:
    baseline, both = screen("off"), screen("builtin")
    for i in range(rounds, rounds + 20):  # warm-up, on texts the rounds do not use
        run(baseline, i), run(both, i)
    alone: list[float] = []
    with_model: list[float] = []
    for i in range(rounds):  # interleaved: both see the same machine
        alone.append(run(baseline, i))
        with_model.append(run(both, i))
    p50, p99 = (quantile(with_model, q) * 1e6 for q in (0.5, 0.99))
    b50, b99 = (quantile(alone, q) * 1e6 for q in (0.5, 0.99))
    print(f"  {name:34s} patterns p50 {b50:8.1f} p99 {b99:8.1f} | both p50 {p50:8.1f} p99 {p99:8.1f} "
          f"| x{p50 / b50:5.1f} at p50 ({rounds} requests)")


def main() -> None:
    started = time.perf_counter()
    model = load_model()
    print(f"model {model.version}: {len(model.weights)} weights, loaded and checked in "
          f"{(time.perf_counter() - started) * 1e3:.1f} ms")
    long_text = corpus(32_768 * 2)
    history = [long_text[i * 4096:(i + 1) * 4096] for i in range(0, 8, 2)]  # the user turns of 8 turns of 4 KB
    print("PromptScreen.assess per request, µs:")
    measure("short prompt (250 characters)", lambda s, i: assess(s, [SHORT]), ROUNDS)
    measure("8k-token prompt, first seen", lambda s, i: assess(s, [long_text[i * 97 + 97:i * 97 + 97 + 32_768]]),
            LONG_ROUNDS)
    measure("8k-token chat history, new turn", lambda s, i: assess(s, [*history, f"{SHORT} ({i})"]), LONG_ROUNDS)
    print("  goal for both stages: p50 <= 1000 µs, p99 <= 5000 µs for the short prompt")


if __name__ == "__main__":
    main()
