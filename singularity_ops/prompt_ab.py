"""What the gateway and the prompt optimiser must agree on about managed system prompts (docs/PROMPT_OPTIMIZATION.md).

They never import each other (they meet through PostgreSQL), so the few rules both apply live here, once:

* a prompt's **id** is the SHA-256 of its text exactly as clients send it (``prompts enable ID`` takes its first
  characters, as ``git`` takes a commit's);
* a client's **variant** in an experiment is sticky: a hash of the experiment id and the client id, read as a
  fraction of 2**64, is below the candidate's share. Raising the share keeps every client that already had the
  candidate; a new experiment reshuffles;
* the **outcome** names, and which count as a success for the experiment's test.
"""

from __future__ import annotations

import hashlib
import math

SHORT_ID = 12  # hex digits shown for a prompt id
CONTROL, CANDIDATE = "control", "candidate"
VARIANTS = (CONTROL, CANDIDATE)
# Settled outcomes: explicit feedback (success/failure), an error or empty answer and a regenerate (failure), a
# conversation that goes on (weak_success). A dialogue with none of these signals stays "unknown".
SUCCESS, WEAK_SUCCESS, FAILURE, UNKNOWN = "success", "weak_success", "failure", "unknown"
OUTCOMES = (SUCCESS, WEAK_SUCCESS, FAILURE, UNKNOWN)
SUCCESSES = frozenset({SUCCESS, WEAK_SUCCESS})
_SCALE = float(2**64)


def prompt_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def short_id(identifier: str) -> str:
    return identifier[:SHORT_ID]


def assignment_fraction(client: str, experiment_id: int) -> float:
    """Where this client falls in [0, 1) for this experiment; the same inputs give the same fraction everywhere."""
    digest = hashlib.blake2b(f"{experiment_id}\x00{client}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def variant_of(client: str, experiment_id: int, share: float) -> str:
    return CANDIDATE if assignment_fraction(client, experiment_id) < share else CONTROL


def rating_outcome(rating: object) -> tuple[str, float]:
    """``POST /singularity/v1/feedback``'s ``rating``: +1 / -1 (thumbs), or a score in 0..1 where 0.5 and above is a
    success. Returns (outcome, the rating on 0..1). Anything else is a ValueError naming what is accepted."""
    if isinstance(rating, bool) or not isinstance(rating, int | float) or not math.isfinite(rating):
        raise ValueError("rating must be a number: 1 or -1 (thumbs up or down), or a score from 0 to 1")
    if rating == -1:
        return FAILURE, 0.0
    if not 0 <= rating <= 1:
        raise ValueError(f"rating {rating:g} is out of range: give 1 or -1, or a score from 0 to 1")
    return (SUCCESS if rating >= 0.5 else FAILURE), float(rating)
