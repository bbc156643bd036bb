"""The prompt experiment's sequential test, simulated (issue 14: false promotions under no difference ≤ 5 %, and the
median number of requests to detect a +10-point gain).

Run: ``.venv/bin/python bench/prompt_test.py [--runs N] [--look-every K] [--seed S]`` from the repository root.

Each run is one experiment with the defaults (``prompt_optimizer.share`` 0.2, ``test.alpha`` 0.05, ``test.tau``
0.1, ``test.min_outcomes`` 100 per variant, ``test.max_outcomes`` 20 000): outcomes arrive one by one, each
client's variant drawn at the share and each outcome a success with the variant's rate; the controller's ``look``
(the very function it calls every tick) is applied after every ``--look-every`` outcomes (default 10: a tick every
few outcomes is a busier prompt than most, and more looks only make a test that is not always valid worse). Time
never runs out here: only ``max_outcomes`` ends a run without a decision.

Printed per scenario: promoted / rolled back / timed out shares of the runs and, for runs that decided, the median
and 90th percentile of the outcomes (= requests, when every dialogue gets an outcome) it took. The baseline in the
same run is the naive fixed-sample z-test at the same alpha looked at on the same schedule: what the mSPRT's
validity under continuous monitoring buys shows as the gap between their false-promotion rates.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singularity_ops.controllers.prompt_optimizer.sequential import PROMOTE, ROLL_BACK, TIMEOUT, Counts, look
from singularity_ops.prompt_ab import CANDIDATE, CONTROL

SHARE, ALPHA, TAU, MIN_OUTCOMES, MAX_OUTCOMES = 0.2, 0.05, 0.1, 100, 20_000
Z_TWO_SIDED = 1.959964  # the naive baseline's critical value at alpha 0.05


def naive(counts: Counts) -> str:
    """A z-test for two proportions at alpha, as if each look were the only one."""
    n_c, n_k = counts.control, counts.candidate
    if min(n_c, n_k) < MIN_OUTCOMES:
        return "continue"
    pooled = (counts.control_successes + counts.candidate_successes) / (n_c + n_k)
    variance = pooled * (1 - pooled) * (1 / n_c + 1 / n_k)
    if variance <= 0:
        return "continue"
    difference = counts.candidate_successes / n_k - counts.control_successes / n_c
    if abs(difference) / math.sqrt(variance) >= Z_TWO_SIDED:
        return PROMOTE if difference > 0 else ROLL_BACK
    return TIMEOUT if n_c + n_k >= MAX_OUTCOMES else "continue"


def one_run(rng: random.Random, control_rate: float, candidate_rate: float, every: int,
            test: str) -> tuple[str, int]:
    wins = {CONTROL: 0, CANDIDATE: 0}
    totals = {CONTROL: 0, CANDIDATE: 0}
    seen = 0
    while True:
        for _ in range(every):
            variant = CANDIDATE if rng.random() < SHARE else CONTROL
            totals[variant] += 1
            if rng.random() < (candidate_rate if variant == CANDIDATE else control_rate):
                wins[variant] += 1
        seen += every
        counts = Counts(wins[CONTROL], totals[CONTROL] - wins[CONTROL], wins[CANDIDATE],
                        totals[CANDIDATE] - wins[CANDIDATE])
        if test == "msprt":
            decision = look(counts, alpha=ALPHA, tau=TAU, min_outcomes=MIN_OUTCOMES, max_outcomes=MAX_OUTCOMES,
                            elapsed_days=0.0, max_days=1.0).decision
        else:
            decision = naive(counts)
        if decision != "continue":
            return decision, seen


def scenario(name: str, control_rate: float, candidate_rate: float, runs: int, every: int, seed: int) -> None:
    for test in ("msprt", "naive z"):
        rng = random.Random(f"{seed}:{name}:{test}")
        results = [one_run(rng, control_rate, candidate_rate, every, "msprt" if test == "msprt" else "naive")
                   for _ in range(runs)]
        share = {d: sum(1 for r, _ in results if r == d) / runs for d in (PROMOTE, ROLL_BACK, TIMEOUT)}
        decided = sorted(n for r, n in results if r != TIMEOUT)
        median = f"{statistics.median(decided):7.0f}" if decided else "      -"
        p90 = f"{decided[int(0.9 * (len(decided) - 1))]:7d}" if decided else "      -"
        print(f"{name:<28} {test:<8} {share[PROMOTE]:8.1%} {share[ROLL_BACK]:8.1%} {share[TIMEOUT]:8.1%} "
              f"{median} {p90}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--look-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    print(f"share {SHARE}, alpha {ALPHA}, tau {TAU}, min {MIN_OUTCOMES}/variant, max {MAX_OUTCOMES} outcomes, "
          f"a look every {args.look_every} outcomes, {args.runs} runs per row")
    print(f"{'scenario':<28} {'test':<8} {'promoted':>8} {'rolled':>8} {'timeout':>8} {'median':>7} {'p90':>7}")
    for rate in (0.3, 0.5, 0.8):
        scenario(f"no difference at {rate:.0%}", rate, rate, args.runs, args.look_every, args.seed)
    for rate in (0.3, 0.5, 0.8):
        scenario(f"+10 points from {rate:.0%}", rate, rate + 0.1, args.runs, args.look_every, args.seed)
    scenario("-10 points from 50%", 0.5, 0.4, args.runs, args.look_every, args.seed)


if __name__ == "__main__":
    main()
