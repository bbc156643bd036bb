"""The OPRO-style meta-prompt the optimiser model gets, and reading its answer (docs/PROMPT_OPTIMIZATION.md shows it).

After OPRO (Yang et al., "Large Language Models as Optimizers", 2023): the meta-prompt holds the prompts tried so
far with their scores, lowest first (the model reads the trajectory as a direction), then examples of the task,
then the instruction to write new prompts that differ from all above and score higher. Here the score is the share
of dialogues users were satisfied with; the examples are the prompt's best dialogues and its failures, and the
model is asked first for the patterns it sees (the seed's "extract the patterns"), then for K candidates, each
between <prompt> and </prompt> so that prose around them cannot leak into a prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_EXAMPLE_CHARS = 1200  # per message shown: long dialogues are cut, the meta-prompt stays within a small context
PROMPT_TAG = re.compile(r"<prompt>(.*?)</prompt>", re.S | re.I)
PATTERNS = re.compile(r"PATTERNS\s*:?\s*(.*?)(?=<prompt>|\Z)", re.S | re.I)

TEMPLATE = """You improve the system prompt of an AI assistant from how its users reacted.

Below are system prompts tried so far, each with its score: the share of dialogues whose users were satisfied,
from 0 to 100. They are in ascending order of score.

{history}

Dialogues whose users were satisfied with the answer:

{good}

Dialogues whose users were not satisfied (they asked again, rated the answer down, or it failed):

{bad}

First write PATTERNS: a few short lines on what the satisfying answers have in common and what the unsatisfying
ones lack. Then write {count} new system prompts for this assistant. Each must differ from every prompt above and
aim for a higher score; keep what the current prompt requires unless the dialogues show it hurts. Write each new
system prompt between <prompt> and </prompt>, and nothing else inside those tags."""


@dataclass(frozen=True)
class Example:
    messages: list[Any]  # as the client sent them
    answer: str


@dataclass(frozen=True)
class Proposal:
    patterns: str
    candidates: list[str]


def _cut(text: str) -> str:
    return text if len(text) <= MAX_EXAMPLE_CHARS else text[:MAX_EXAMPLE_CHARS] + " [...]"


def _content(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def render_dialogue(example: Example) -> str:
    """The turns after the system prompt (the prompt itself is in the history), then the answer."""
    lines = []
    for message in example.messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("user", "assistant"):
            lines.append(f"{'User' if role == 'user' else 'Assistant'}: {_cut(_content(message))}")
    lines.append(f"Assistant: {_cut(example.answer)}")
    return "<dialogue>\n" + "\n".join(lines) + "\n</dialogue>"


def build(history: list[tuple[str, float | None]], good: list[Example], bad: list[Example], count: int) -> str:
    """``history``: (prompt text, score 0..1 or None when not measured) with the current prompt among them."""
    scored = sorted(history, key=lambda item: -1.0 if item[1] is None else item[1])
    history_text = "\n\n".join(
        f"<prompt score=\"{'not measured' if score is None else round(score * 100)}\">\n{text}\n</prompt>"
        for text, score in scored)
    return TEMPLATE.format(history=history_text, good="\n\n".join(map(render_dialogue, good)) or "(none yet)",
                           bad="\n\n".join(map(render_dialogue, bad)) or "(none yet)", count=count)


def parse(answer: str, count: int, exclude: set[str]) -> Proposal:
    """The patterns and up to ``count`` distinct new candidates (stripped; none equal to a prompt in ``exclude``)."""
    found = PATTERNS.search(answer)
    patterns = found.group(1).strip() if found else ""
    candidates: list[str] = []
    for raw in PROMPT_TAG.findall(answer):
        text = raw.strip()
        if text and text not in exclude and text not in candidates:
            candidates.append(text)
        if len(candidates) == count:
            break
    return Proposal(patterns, candidates)
