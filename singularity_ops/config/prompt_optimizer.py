"""The ``prompt_optimizer:`` section: managed system prompts in the gateway, their A/B experiments and the
``prompt-optimizer`` controller (docs/PROMPT_OPTIMIZATION.md).

Its own module, imported by ``schema``: the section is as long as several others together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from singularity_ops.config.fields import _at_most, _cron, _keep_alive, _timezone, setting


@dataclass
class PromptTestConfig:
    # The mixture sequential probability ratio test (mSPRT) on the success rates of the two variants, looked at every
    # tick: it stops when the mixture likelihood ratio reaches 1/alpha (false decisions at most alpha however often
    # it is looked at), at the earliest once each variant has min_outcomes outcomes.
    alpha: float = setting(0.05, gt=0, check=lambda v: _at_most(v, 0.5))
    # Spread of the normal mixture over the difference of success rates: the size of effect it is quickest to find.
    tau: float = setting(0.1, gt=0, check=lambda v: _at_most(v, 1.0))
    min_outcomes: int = setting(100, gt=0)
    # No decision by then: the experiment times out and the control stays (a roll back).
    max_days: float = setting(14.0, gt=0)
    max_outcomes: int = setting(20_000, gt=0)


@dataclass
class PromptOptimizerConfig:
    enabled: bool = True  # off: the gateway neither records nor changes prompts, the controller does nothing
    # Characters of a prompt's start kept in the registry as a preview; 0: none, only the hash (not enabled prompts).
    preview_chars: int = setting(60, ge=0, check=lambda v: _at_most(v, 200))
    sync_seconds: float = setting(1.0, gt=0)  # how often the gateway writes what it saw and reads enabled prompts
    regenerate_seconds: float = setting(60.0, gt=0)  # the same last user message again within this: a regenerate
    retention_days: int = setting(30, gt=0)  # dialogues of enabled prompts (running experiments' are kept)
    max_dialogues_per_prompt: int = setting(10_000, gt=0)  # the newest kept beyond retention's cut too
    model: str | None = None  # the optimiser model (an installed Ollama model); None: no optimisation
    judge_model: str | None = None  # grades replayed answers offline; None: the optimiser model
    candidates: int = setting(3, gt=0, check=lambda v: _at_most(v, 10))  # K candidate prompts per optimisation
    min_new_successes: int = setting(10, gt=0)  # successful dialogues since the last optimisation, to run again
    examples: int = setting(10, gt=0)  # the best dialogues shown to the optimiser (and replayed offline)
    worst_examples: int = setting(5, ge=0)  # failed dialogues shown to it as what to avoid
    min_offline_gain: float = setting(0.5, ge=0, check=lambda v: _at_most(v, 10.0))  # judge points over the current
    share: float = setting(0.2, gt=0, check=lambda v: _at_most(v, 1.0))  # clients that get the candidate
    approval: Literal["manual", "auto"] = "manual"
    schedule: str | None = setting("30 4 * * *", check=_cron)  # when the controller optimises; null: by hand only
    timezone: str | None = setting(None, check=_timezone)  # None: the host's
    interval_seconds: float = setting(60.0, gt=0)  # how often the controller checks experiments and the schedule
    timeout_seconds: float = setting(600.0, gt=0)  # one call to the optimiser, a replay or the judge
    keep_alive: str = setting("5m", check=_keep_alive)
    test: PromptTestConfig = field(default_factory=PromptTestConfig)
