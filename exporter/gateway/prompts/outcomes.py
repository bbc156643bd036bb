"""The heuristic outcome of a dialogue, from what the same client does next (docs/PROMPT_OPTIMIZATION.md):

* the same last user message again, for the same prompt, within ``prompt_optimizer.regenerate_seconds``: the
  earlier answer was a **failure** (a regenerate, as chat front-ends send it);
* a request whose conversation holds the earlier dialogue's last user message as an earlier turn: the
  conversation **went on**, a weak success.

An error or an empty answer is a failure at once (``immediate``); explicit feedback overrides all of these. Each
client keeps its last few dialogues per prompt (a front-end serving many users from one address has several
conversations going), in a bounded LRU; a dialogue that leaves it unsettled stays ``unknown``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from singularity_ops.prompt_ab import FAILURE, WEAK_SUCCESS

PER_CLIENT = 8  # open dialogues remembered per client and prompt
MAX_CLIENTS = 10_000


@dataclass
class Open:
    request_id: str
    last_user: str
    at: float  # monotonic seconds


@dataclass(frozen=True)
class Settled:
    request_id: str
    outcome: str
    reason: str


def immediate(status: int, error: str | None, answer: str | None) -> tuple[str, str] | None:
    """(outcome, reason) known when the answer is in: an error or an empty answer is a failure."""
    if status >= 400 or error:
        return FAILURE, "error"
    if answer is None or not answer.strip():
        return FAILURE, "empty"
    return None


class Followups:
    def __init__(self, regenerate_seconds: float, max_clients: int = MAX_CLIENTS) -> None:
        self.regenerate_seconds = regenerate_seconds
        self.max_clients = max_clients
        self._open: OrderedDict[tuple[str, str], deque[Open]] = OrderedDict()

    def observe(self, client: str, prompt: str, users: list[str], now: float) -> list[Settled]:
        """A new request of ``client`` for ``prompt`` whose user messages are ``users``: the earlier dialogues it
        settles. Call ``remember`` with the new dialogue afterwards."""
        if not users:
            return []
        dialogues = self._open.get((client, prompt))
        if not dialogues:
            return []
        last, earlier = users[-1], set(users[:-1])
        settled = []
        for dialogue in list(dialogues):
            if dialogue.last_user in earlier:  # first: "ok" after "ok" in one conversation is no regenerate
                settled.append(Settled(dialogue.request_id, WEAK_SUCCESS, "continued"))
            elif dialogue.last_user == last and now - dialogue.at <= self.regenerate_seconds:
                settled.append(Settled(dialogue.request_id, FAILURE, "regenerate"))
            else:
                continue
            dialogues.remove(dialogue)
        return settled

    def remember(self, client: str, prompt: str, request_id: str, users: list[str], now: float) -> None:
        if not users:
            return
        key = (client, prompt)
        dialogues = self._open.get(key)
        if dialogues is None:
            dialogues = self._open[key] = deque(maxlen=PER_CLIENT)
            if len(self._open) > self.max_clients:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(key)
        dialogues.append(Open(request_id, users[-1], now))

    def forget(self, request_id: str, client: str, prompt: str) -> None:
        """A dialogue settled otherwise (feedback, an error): heuristics no longer apply to it."""
        dialogues = self._open.get((client, prompt))
        if dialogues:
            for dialogue in list(dialogues):
                if dialogue.request_id == request_id:
                    dialogues.remove(dialogue)
