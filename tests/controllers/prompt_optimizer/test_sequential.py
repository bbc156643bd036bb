"""The mixture SPRT: no decision on a handful of outcomes, a clear gain promoted, a clear loss rolled back, a tie
timed out, and a statistic that stays bounded when there is no difference however often it is looked at."""

from __future__ import annotations

import math
import random

from singularity_ops.controllers.prompt_optimizer.sequential import (
    CONTINUE,
    PROMOTE,
    ROLL_BACK,
    TIMEOUT,
    Counts,
    confidence_interval,
    look,
    mixture_log_lr,
)

DEFAULTS = {"alpha": 0.05, "tau": 0.1, "min_outcomes": 100, "max_outcomes": 20_000, "max_days": 14.0}


def decide(counts: Counts, days: float = 1.0, **changes: float) -> str:
    return look(counts, elapsed_days=days, **{**DEFAULTS, **changes}).decision


def test_nothing_is_decided_before_each_variant_has_its_minimum() -> None:
    # 20 of 20 against 10 of 80 is overwhelming, but the candidate has only 20 outcomes
    assert decide(Counts(10, 70, 20, 0)) == CONTINUE
    assert decide(Counts(10, 70, 20, 0), min_outcomes=20) == PROMOTE


def test_a_clear_gain_is_promoted_and_a_clear_loss_rolled_back() -> None:
    assert decide(Counts(2000, 2000, 600, 400)) == PROMOTE  # 50 % against 60 %
    assert decide(Counts(2000, 2000, 400, 600)) == ROLL_BACK


def test_a_tie_runs_on_and_times_out_at_its_limits() -> None:
    tie = Counts(1000, 1000, 250, 250)
    assert decide(tie) == CONTINUE
    assert decide(tie, days=14.0) == TIMEOUT
    assert decide(tie, max_outcomes=2500) == TIMEOUT


def test_the_statistic_matches_the_formula() -> None:
    counts = Counts(400, 400, 120, 80)
    log_lr, difference, variance = mixture_log_lr(counts, 0.1)
    pooled = 520 / 1000
    v = pooled * (1 - pooled) * (1 / 800 + 1 / 200)
    d = 0.6 - 0.5
    assert difference == d and math.isclose(variance, v)
    assert math.isclose(log_lr, 0.5 * math.log(v / (v + 0.01)) + d * d * 0.01 / (2 * v * (v + 0.01)))


def test_identical_outcomes_carry_no_evidence() -> None:
    assert mixture_log_lr(Counts(100, 0, 100, 0), 0.1) == (0.0, 0.0, 0.0)
    assert mixture_log_lr(Counts(0, 0, 5, 5), 0.1) is None


def test_the_interval_excludes_zero_exactly_when_the_test_decides() -> None:
    for counts in (Counts(2000, 2000, 600, 400), Counts(1000, 1000, 260, 240), Counts(300, 300, 90, 60)):
        log_lr, d, v = mixture_log_lr(counts, 0.1)
        low, high = confidence_interval(d, v, 0.1, 0.05)
        assert (low > 0 or high < 0) == (log_lr >= math.log(20))


def test_looking_every_ten_outcomes_under_no_difference_rarely_decides() -> None:
    """A small version of bench/prompt_test.py: 200 experiments of 3000 outcomes at 50 %, a look every 10."""
    rng = random.Random(14)
    decided = 0
    for _ in range(200):
        wins, totals = [0, 0], [0, 0]
        for _look in range(300):
            for _ in range(10):
                side = 1 if rng.random() < 0.2 else 0
                totals[side] += 1
                wins[side] += rng.random() < 0.5
            counts = Counts(wins[0], totals[0] - wins[0], wins[1], totals[1] - wins[1])
            if decide(counts, max_outcomes=3000) in (PROMOTE, ROLL_BACK):
                decided += 1
                break
    assert decided / 200 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 200)
