"""The experiment's decision: a mixture sequential probability ratio test (mSPRT) on two success rates.

Johari, Koomen, Pekelis and Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests" (Operations
Research, 2022; the test behind Optimizely's Stats Engine). With control's success rate p_c over n_c outcomes and
the candidate's p_k over n_k, the difference d = p_k - p_c is estimated with variance V under "no difference"
(the pooled rate p: V = p(1 - p)(1/n_c + 1/n_k)). The likelihood ratio of "d" against "0", averaged over a normal
mixture d ~ N(0, tau^2), is

    Lambda = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2)))

Lambda is a martingale under "no difference", so by Ville's inequality the chance that it EVER reaches 1/alpha is
at most alpha: the test may be looked at every tick, for as long as it runs, without inflating false decisions
(a fixed-sample z-test looked at every tick would). When it reaches 1/alpha the sign of d decides: the candidate
is promoted, or rolled back. Guards: no decision before each variant has ``min_outcomes`` outcomes (the normal
approximation needs them, and a handful of early successes must not decide); past ``max_days`` or
``max_outcomes`` the experiment times out and the control stays. bench/prompt_test.py measures the false-promotion
rate under no difference and the requests needed to find a +10-point gain.

Outcomes are dialogues, not clients: a client keeps its variant (sticky), so a few very active clients make the
outcomes correlated and the test less exact; docs/PROMPT_OPTIMIZATION.md says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONTINUE, PROMOTE, ROLL_BACK, TIMEOUT = "continue", "promote", "roll_back", "timeout"


@dataclass(frozen=True)
class Counts:
    control_successes: int
    control_failures: int
    candidate_successes: int
    candidate_failures: int

    @property
    def control(self) -> int:
        return self.control_successes + self.control_failures

    @property
    def candidate(self) -> int:
        return self.candidate_successes + self.candidate_failures

    def rates(self) -> tuple[float | None, float | None]:
        return (self.control_successes / self.control if self.control else None,
                self.candidate_successes / self.candidate if self.candidate else None)


@dataclass(frozen=True)
class Look:
    decision: str
    log_lr: float | None  # log Lambda; None before both variants have outcomes
    threshold: float  # log(1 / alpha)
    difference: float | None  # candidate's success rate minus control's
    interval: tuple[float, float] | None  # always-valid (1 - alpha) confidence interval of the difference
    reason: str


def mixture_log_lr(counts: Counts, tau: float) -> tuple[float, float, float] | None:
    """(log Lambda, d, V), or None when it is not defined yet (a variant without outcomes, or no variance)."""
    n_c, n_k = counts.control, counts.candidate
    if not n_c or not n_k:
        return None
    pooled = (counts.control_successes + counts.candidate_successes) / (n_c + n_k)
    variance = pooled * (1 - pooled) * (1 / n_c + 1 / n_k)
    if variance <= 0:  # every outcome the same: no evidence of a difference
        return 0.0, 0.0, 0.0
    difference = counts.candidate_successes / n_k - counts.control_successes / n_c
    tau2 = tau * tau
    log_lr = 0.5 * math.log(variance / (variance + tau2)) + difference ** 2 * tau2 / (
        2 * variance * (variance + tau2))
    return log_lr, difference, variance


def confidence_interval(difference: float, variance: float, tau: float, alpha: float) -> tuple[float, float]:
    """The always-valid interval that goes with the test (Johari et al., eq. 11): every d it excludes is rejected."""
    if variance <= 0:
        return difference, difference
    tau2 = tau * tau
    half = math.sqrt(variance * (variance + tau2) / tau2 * (math.log((variance + tau2) / variance)
                                                           + 2 * math.log(1 / alpha)))
    return difference - half, difference + half


def look(counts: Counts, *, alpha: float, tau: float, min_outcomes: int, max_outcomes: int,
         elapsed_days: float, max_days: float) -> Look:
    threshold = math.log(1 / alpha)
    found = mixture_log_lr(counts, tau)
    log_lr, difference, variance = found if found is not None else (None, None, None)
    interval = (confidence_interval(difference, variance, tau, alpha)
                if difference is not None and variance is not None else None)
    figures = (f"control {counts.control_successes}/{counts.control}, candidate "
               f"{counts.candidate_successes}/{counts.candidate}")
    if log_lr is not None and min(counts.control, counts.candidate) >= min_outcomes and log_lr >= threshold:
        assert difference is not None
        decision = PROMOTE if difference > 0 else ROLL_BACK
        return Look(decision, log_lr, threshold, difference, interval,
                    f"log LR {log_lr:.2f} >= {threshold:.2f}: the candidate is "
                    f"{'better' if difference > 0 else 'worse'} by {abs(difference) * 100:.1f} points ({figures})")
    if elapsed_days >= max_days or counts.control + counts.candidate >= max_outcomes:
        limit = f"{max_days:g} days" if elapsed_days >= max_days else f"{max_outcomes} outcomes"
        return Look(TIMEOUT, log_lr, threshold, difference, interval, f"no decision within {limit} ({figures})")
    if min(counts.control, counts.candidate) < min_outcomes:
        why = f"waiting for {min_outcomes} outcomes per variant ({figures})"
    else:
        why = f"log LR {log_lr:.2f} < {threshold:.2f} ({figures})"
    return Look(CONTINUE, log_lr, threshold, difference, interval, why)
