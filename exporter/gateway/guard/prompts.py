"""What the detectors read from a request's body: the prompt, the texts the injection scorer scans, and the key
under which the repeat detector counts it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from singularity_ops.exporter.gateway.endpoints import Endpoint


def prompt_of(endpoint: Endpoint, payload: Mapping[str, Any]) -> Any:
    return payload.get("messages") if endpoint.chat else payload.get("prompt", payload.get("input"))


def prompt_texts(endpoint: Endpoint, prompt: Any) -> list[str]:
    """What the injection scorer reads: the prompt, or the user and tool turns of a chat (not the system prompt,
    which the client's own application sets, nor assistant turns, the model's own words)."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list):
        return []
    if not endpoint.chat:
        return [item for item in prompt if isinstance(item, str)]
    texts: list[str] = []
    for message in prompt:
        if not isinstance(message, dict) or message.get("role") in ("system", "assistant"):
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(part["text"] for part in content
                         if isinstance(part, dict) and isinstance(part.get("text"), str))
    return texts


def repeat_key(prompt: Any) -> int | None:
    """The same prompt, or the same whole chat, has the same key; None for a request without one."""
    if isinstance(prompt, str):
        return hash(prompt)
    if isinstance(prompt, list) and prompt:
        return hash(tuple((m.get("role"), str(m.get("content"))) if isinstance(m, dict) else str(m) for m in prompt))
    return None
