"""The rules the gateway and the prompt optimiser share: a prompt's id, sticky assignment at a share, ratings."""

from __future__ import annotations

import hashlib

import pytest

from singularity_ops.prompt_ab import (
    CANDIDATE,
    CONTROL,
    FAILURE,
    SUCCESS,
    assignment_fraction,
    prompt_id,
    rating_outcome,
    short_id,
    variant_of,
)


def test_a_prompt_id_is_the_sha256_of_the_exact_text() -> None:
    assert prompt_id("You are terse.") == hashlib.sha256(b"You are terse.").hexdigest()
    assert prompt_id("You are terse.") != prompt_id("You are terse. ")
    assert short_id(prompt_id("x")) == prompt_id("x")[:12]


def test_assignment_is_sticky_and_close_to_the_share() -> None:
    clients = [f"10.0.{i // 256}.{i % 256}" for i in range(4000)]
    first = [variant_of(c, 7, 0.2) for c in clients]
    assert first == [variant_of(c, 7, 0.2) for c in clients]  # the same client, the same variant
    share = first.count(CANDIDATE) / len(clients)
    assert 0.17 < share < 0.23  # binomial: sd 0.0063 at n = 4000


def test_raising_the_share_keeps_every_client_that_had_the_candidate() -> None:
    clients = [f"key-{i}" for i in range(2000)]
    low = {c for c in clients if variant_of(c, 3, 0.1) == CANDIDATE}
    high = {c for c in clients if variant_of(c, 3, 0.5) == CANDIDATE}
    assert low and low < high


def test_a_new_experiment_reshuffles_the_clients() -> None:
    clients = [f"key-{i}" for i in range(2000)]
    one = {c for c in clients if variant_of(c, 1, 0.5) == CANDIDATE}
    two = {c for c in clients if variant_of(c, 2, 0.5) == CANDIDATE}
    assert 0.35 < len(one & two) / len(one) < 0.65  # independent halves overlap by about half
    assert all(0 <= assignment_fraction(c, 1) < 1 for c in clients[:50])


def test_share_bounds_give_everyone_or_no_one() -> None:
    assert {variant_of(f"c{i}", 1, 1.0) for i in range(200)} == {CANDIDATE}
    assert {variant_of(f"c{i}", 1, 0.0) for i in range(200)} == {CONTROL}


@pytest.mark.parametrize(("rating", "expected"), [
    (1, (SUCCESS, 1.0)), (-1, (FAILURE, 0.0)), (0.8, (SUCCESS, 0.8)), (0.5, (SUCCESS, 0.5)), (0.2, (FAILURE, 0.2)),
    (0, (FAILURE, 0.0)),
])
def test_ratings_are_thumbs_or_a_score_from_0_to_1(rating: float, expected: tuple[str, float]) -> None:
    assert rating_outcome(rating) == expected


@pytest.mark.parametrize("rating", [2, -0.5, "1", True, None, float("nan")])
def test_other_ratings_are_refused_with_what_is_accepted(rating: object) -> None:
    with pytest.raises(ValueError, match="1 or -1"):
        rating_outcome(rating)
