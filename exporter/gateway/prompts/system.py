"""Where a request carries its system prompt, and how it is swapped: the first ``system`` message of a chat
(``/api/chat``, ``/v1/chat/completions``), or ``/api/generate``'s ``system`` field. A system message whose content
is a list of parts (OpenAI's form) counts when every part is text; other requests have no system prompt here."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from singularity_ops.exporter.gateway.endpoints import Endpoint

GENERATE = "/api/generate"


@dataclass(frozen=True)
class Found:
    text: str
    index: int  # the message's position; -1: generate's `system` field


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = [p.get("text") if isinstance(p, dict) and p.get("type") == "text" else None for p in content]
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)  # type: ignore[arg-type]
    return None


def find_system(endpoint: Endpoint, payload: dict[str, Any]) -> Found | None:
    if endpoint.chat:
        messages = payload.get("messages")
        if isinstance(messages, list):
            for index, message in enumerate(messages):
                if isinstance(message, dict) and message.get("role") == "system":
                    text = _content_text(message.get("content"))
                    return Found(text, index) if text else None
        return None
    if endpoint.path == GENERATE:
        system = payload.get("system")
        return Found(system, -1) if isinstance(system, str) and system else None
    return None


def replace_system(payload: dict[str, Any], found: Found, text: str) -> None:
    """The request now carries ``text`` as its system prompt. The message is replaced, not changed in place, so a
    copy of the message list taken before still holds what the client sent."""
    if found.index < 0:
        payload["system"] = text
        return
    messages = list(payload["messages"])
    messages[found.index] = {**messages[found.index], "content": text}
    payload["messages"] = messages


def substituted_body(body: bytes, old: str, new: str) -> bytes | None:
    """The request body with the JSON string ``old`` swapped for ``new`` in place, without decoding and encoding the
    whole body again (that costs more than the rest of the substitution together); None when ``old`` is not there
    exactly once in either of the two forms JSON encoders write (ASCII escapes or raw UTF-8): then the caller
    serialises the changed payload instead."""
    forms, replacement = _encoded(old, new)
    found = [form for form in forms if form in body]
    if len(found) != 1 or body.count(found[0]) != 1:
        return None
    return body.replace(found[0], replacement)


@functools.lru_cache(maxsize=256)
def _encoded(old: str, new: str) -> tuple[tuple[bytes, ...], bytes]:
    """The JSON forms of ``old`` and of ``new``: the same few prompts, request after request."""
    forms = {json.dumps(old).encode(), json.dumps(old, ensure_ascii=False).encode("utf-8", "surrogatepass")}
    return tuple(forms), json.dumps(new, ensure_ascii=False).encode("utf-8", "surrogatepass")


def dialogue_messages(endpoint: Endpoint, payload: dict[str, Any]) -> list[Any]:
    """The conversation as the client sent it, in chat form (generate's system and prompt become two messages)."""
    if endpoint.chat:
        messages = payload.get("messages")
        return list(messages) if isinstance(messages, list) else []
    messages: list[Any] = []
    if isinstance(payload.get("system"), str):
        messages.append({"role": "system", "content": payload["system"]})
    if isinstance(payload.get("prompt"), str):
        messages.append({"role": "user", "content": payload["prompt"]})
    return messages


def user_texts(messages: list[Any]) -> list[str]:
    """The text of every user message, in order."""
    found = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            text = _content_text(message.get("content"))
            if text is not None:
                found.append(text)
    return found
