"""The semantic cache's keys, shared by the gateway (which stores and looks up) and the warmer (which predicts).

A request is reduced to its *material*: the parts that shape the answer, in Ollama's native names (kind, model,
system prompt, the conversation so far, the last user turn as ``prompt``, the answer-changing options, format,
tools, think, image hashes). The exact key hashes all of it with the tenant; the scope hashes the same less the
last user turn, and semantic matching compares last user turns only within one scope.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

KINDS = ("generate", "chat")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def canonical_model(name: str) -> str:
    """Ollama's short forms: ``llama3.2`` is ``llama3.2:latest``; the default registry prefix is dropped."""
    name = name.strip()
    for prefix in ("registry.ollama.ai/library/", "registry.ollama.ai/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def tenant_of(client: str | None, shared: bool) -> str:
    """'' for a shared cache; else a hash of the client (an API key's id or an address), never the client itself."""
    if shared or not client:
        return ""
    return hashlib.sha256(client.encode()).hexdigest()[:32]


def request_keys(material: dict[str, Any], tenant: str) -> tuple[str, str]:
    """(key, scope) of a request's material for one tenant."""
    if material.get("kind") not in KINDS or not isinstance(material.get("prompt"), str):
        raise ValueError("cache material needs a kind (generate or chat) and a prompt")
    scope = {k: v for k, v in material.items() if k != "prompt"}
    return _digest([tenant, material]), _digest([tenant, scope])


def ollama_request(material: dict[str, Any], stream: bool = False) -> tuple[str, dict[str, Any]]:
    """The native request (path, body) that asks Ollama the material's question, as the warmer sends it."""
    body: dict[str, Any] = {"model": material["model"], "stream": stream}
    for name in ("options", "format", "think", "tools", "system", "template", "suffix", "raw", "context"):
        if name in material and (material["kind"] == "generate" or name not in ("system", "template", "suffix",
                                                                                "raw", "context")):
            body[name] = material[name]
    if material["kind"] == "chat":
        body["messages"] = [*material.get("messages", []), {"role": "user", "content": material["prompt"]}]
        return "/api/chat", body
    body["prompt"] = material["prompt"]
    return "/api/generate", body


def chat_material(model: str, prompt: str, system: str | None = None) -> dict[str, Any]:
    """What a plain chat client sends for one question (a calendar entry's prompt)."""
    messages = [{"role": "system", "content": system}] if system else []
    return {"kind": "chat", "model": canonical_model(model), "messages": messages, "prompt": prompt, "options": {}}


def generate_material(model: str, prompt: str, system: str | None = None) -> dict[str, Any]:
    material: dict[str, Any] = {"kind": "generate", "model": canonical_model(model), "prompt": prompt, "options": {}}
    if system:
        material["system"] = system
    return material
