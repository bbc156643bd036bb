"""Context compression for chat requests: keep the system messages and the newest turns within a budget.

Token estimator (one, for both sides of the ratio): ``ceil(utf-8 bytes / 4) + 4`` per message — the
usual 4-bytes-a-token rule of BPE tokenizers on English text, plus a few tokens of role and template
framing. It is an estimate, chosen because it is free; the ratio it yields compares like with like.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    return -(-len(text.encode("utf-8")) // 4)


def message_tokens(message: Any) -> int:
    if not isinstance(message, dict):
        return MESSAGE_OVERHEAD
    content = message.get("content")
    if not isinstance(content, str):  # OpenAI content parts, tool calls…
        content = json.dumps(content, ensure_ascii=False) if content is not None else ""
    images = message.get("images")
    extra = json.dumps(message.get("tool_calls"), ensure_ascii=False) if message.get("tool_calls") else ""
    return estimate_tokens(content) + estimate_tokens(extra) + MESSAGE_OVERHEAD + (len(images) if
                                                                                   isinstance(images, list) else 0)


@dataclass(frozen=True)
class Compressed:
    messages: list[Any]
    original_tokens: int
    sent_tokens: int
    dropped: int
    dropped_messages: tuple[Any, ...] = ()

    @property
    def ratio(self) -> float:
        return self.original_tokens / self.sent_tokens if self.sent_tokens else 1.0


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else None


def compress(messages: list[Any], budget: int) -> Compressed:
    """Drop the oldest non-system messages until the estimate fits ``budget``. The newest message is always
    kept, and the oldest kept turn is never a tool result whose call was dropped."""
    costs = [message_tokens(m) for m in messages]
    original = sum(costs)
    if original <= budget:
        return Compressed(messages, original, original, 0)
    system = {i for i, m in enumerate(messages) if _role(m) == "system"}
    total = sum(costs[i] for i in system)
    last = len(messages) - 1
    turns: list[int] = []  # newest first
    for index in range(last, -1, -1):
        if index in system:
            continue
        if index != last and total + costs[index] > budget:
            break
        turns.append(index)
        total += costs[index]
    while len(turns) > 1 and _role(messages[turns[-1]]) == "tool":
        total -= costs[turns.pop()]
    kept = sorted(system | set(turns))
    dropped = tuple(m for i, m in enumerate(messages) if i not in kept and i not in system)
    return Compressed([messages[i] for i in kept], original, total, len(messages) - len(kept), dropped)


SUMMARY_PREFIX = "Summary of the earlier conversation: "
SUMMARISE_INSTRUCTION = ("Summarise the conversation below in a few sentences for the assistant that continues it. "
                         "Keep facts, names, numbers, decisions and open questions; no preamble.")


def transcript(messages: tuple[Any, ...]) -> str:
    lines = []
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content")
            text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
            lines.append(f"{message.get('role', 'user')}: {text}")
    return "\n".join(lines)


def with_summary(compressed: Compressed, summary: str) -> Compressed:
    """The kept messages with the summary of the dropped ones as a system message after the original system
    messages (so it reads as context, before the turns it summarises would have been)."""
    note = {"role": "system", "content": SUMMARY_PREFIX + summary.strip()}
    position = next((i for i, m in enumerate(compressed.messages) if _role(m) != "system"), len(compressed.messages))
    messages = [*compressed.messages[:position], note, *compressed.messages[position:]]
    return Compressed(messages, compressed.original_tokens, compressed.sent_tokens + message_tokens(note),
                      compressed.dropped, compressed.dropped_messages)
