"""The OPRO-style meta-prompt: scored history lowest first, good and bad dialogues, K candidates asked for in tags;
the answer read back strictly."""

from __future__ import annotations

from singularity_ops.controllers.prompt_optimizer.meta_prompt import Example, build, parse


def test_the_history_is_in_ascending_order_of_score_with_unmeasured_first() -> None:
    text = build([("best", 0.9), ("worst", 0.2), ("new", None)], [], [], 3)
    assert text.index("new") < text.index("worst") < text.index("best")
    assert '<prompt score="20">\nworst\n</prompt>' in text and 'score="not measured"' in text
    assert "write 3 new system prompts" in text and "(none yet)" in text


def test_dialogues_show_their_turns_and_answer_but_not_the_system_prompt() -> None:
    good = Example([{"role": "system", "content": "SECRET SYSTEM"}, {"role": "user", "content": "hours?"}],
                   "9 to 5.")
    text = build([("SYSTEM TEXT", 0.5)], [good], [Example([{"role": "user", "content": "x" * 5000}], "")], 2)
    assert "<dialogue>\nUser: hours?\nAssistant: 9 to 5.\n</dialogue>" in text
    assert "SECRET SYSTEM" not in text
    assert "x" * 1200 + " [...]" in text and "x" * 1201 not in text


def test_candidates_are_read_from_tags_only_new_and_at_most_k() -> None:
    answer = ("PATTERNS:\n- short answers win\n- users want times\n"
              "<prompt>Be brief.</prompt> some prose <prompt> Give times. </prompt>"
              "<PROMPT>Be brief.</PROMPT><prompt>current</prompt><prompt></prompt><prompt>Third.</prompt>"
              "<prompt>Fourth.</prompt>")
    proposal = parse(answer, 3, exclude={"current"})
    assert proposal.patterns == "- short answers win\n- users want times"
    assert proposal.candidates == ["Be brief.", "Give times.", "Third."]


def test_an_answer_without_tags_gives_no_candidate() -> None:
    assert parse("Here is a better prompt: be brief.", 3, set()).candidates == []
