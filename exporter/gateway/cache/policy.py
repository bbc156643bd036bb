"""Which requests the cache may answer, and the material their keys are made of (singularity_ops.cache_key).

The policy (docs/PREDICTIVE_CACHE_WARMING.md, "What is cached"):

* endpoints: ``/api/generate``, ``/api/chat``, ``/v1/chat/completions``, streamed or not (the stream flag is not part
  of the key: a stored answer replays in either shape). ``/v1`` requests are read as Ollama's OpenAI layer reads
  them (temperature and top_p 1.0 when not given, ``max_tokens`` as ``num_predict``, ``response_format`` as
  ``format``), so a ``/v1`` request and the same ``/api/chat`` request share an entry exactly when Ollama would
  run them alike.
* ``temperature``, ``seed``, ``format`` and every other option are part of the key (options that only place the
  work, such as ``num_thread`` or ``num_gpu``, are not); above ``cache.max_temperature`` a request bypasses.
* ``tools``: bypass unless ``cache.cache_tools``; images: bypass unless ``cache.cache_images``, and then exact
  matches only (their hashes are in the key). ``n`` > 1 and ``logprobs`` bypass (a stored answer has neither).
* the last message of a chat must be the user's: that turn is what semantic matching compares.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from singularity_ops.cache_key import canonical_model, request_keys, tenant_of
from singularity_ops.config.cache import CacheConfig

KINDS = {"/api/generate": "generate", "/api/chat": "chat", "/v1/chat/completions": "chat"}
# Options that say where and how fast the work runs, not what it answers.
PLACEMENT_OPTIONS = frozenset({"num_thread", "num_gpu", "main_gpu", "use_mmap", "use_mlock", "numa", "low_vram",
                               "num_batch", "vocab_only", "f16_kv", "logits_all", "embedding_only"})
DEFAULT_TEMPERATURE = 0.8  # Ollama's default when neither the request nor the Modelfile sets one
OPENAI_DEFAULTS = {"temperature": 1.0, "top_p": 1.0}  # what Ollama's OpenAI layer sets when the client does not
_OPENAI_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "max_tokens": "num_predict",
                   "max_completion_tokens": "num_predict", "frequency_penalty": "frequency_penalty",
                   "presence_penalty": "presence_penalty", "stop": "stop"}


@dataclass(frozen=True)
class Cacheable:
    path: str
    model: str  # canonical name
    material: dict[str, Any]
    key: str
    scope: str
    tenant: str
    prompt: str  # the last user turn
    stream: bool
    include_usage: bool = False  # an OpenAI stream whose client asked for the usage chunk
    semantic: bool = True  # False with images: exact matches only

    @property
    def openai(self) -> bool:
        return self.path.startswith("/v1/")

    @property
    def kind(self) -> str:
        return str(self.material["kind"])


class Bypass(str):
    """Why a request is not cacheable (a short word, for logs)."""


def _hash(value: Any) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()


def _options(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if k not in PLACEMENT_OPTIONS and v is not None}


def model_cached(settings: CacheConfig, model: str) -> bool:
    return "*" in settings.models or canonical_model(model) in {canonical_model(m) for m in settings.models}


def classify(path: str, payload: dict[str, Any], settings: CacheConfig, client: str | None) -> Cacheable | Bypass:
    kind = KINDS.get(path)
    if kind is None:
        return Bypass("endpoint")
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        return Bypass("shape")
    if not model_cached(settings, model):
        return Bypass("model")
    read = _openai if path.startswith("/v1/") else (_generate if kind == "generate" else _chat)
    found = read(payload, settings)
    if isinstance(found, Bypass):
        return found
    material, semantic = found
    material["model"] = canonical_model(model)
    temperature = material["options"].get("temperature", DEFAULT_TEMPERATURE)
    if settings.max_temperature is not None and (not isinstance(temperature, int | float)
                                                 or temperature > settings.max_temperature):
        return Bypass("temperature")
    tenant = tenant_of(client, settings.shared)
    key, scope = request_keys(material, tenant)
    stream = payload.get("stream") is True if path.startswith("/v1/") else payload.get("stream") is not False
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return Cacheable(path, material["model"], material, key, scope, tenant, material["prompt"], stream,
                     include_usage, semantic)


def _common(payload: dict[str, Any], material: dict[str, Any], settings: CacheConfig) -> Bypass | None:
    for name in ("format", "think"):
        if payload.get(name) is not None:
            material[name] = payload[name]
    if payload.get("tools"):
        if not settings.cache_tools:
            return Bypass("tools")
        material["tools"] = payload["tools"]
    return None


def _generate(payload: dict[str, Any], settings: CacheConfig) -> tuple[dict[str, Any], bool] | Bypass:
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return Bypass("no_prompt")  # an empty prompt loads or unloads the model
    material: dict[str, Any] = {"kind": "generate", "prompt": prompt, "options": _options(payload.get("options"))}
    for name in ("system", "template", "suffix", "raw", "context"):
        if payload.get(name) not in (None, "", []):
            material[name] = payload[name]
    refused = _common(payload, material, settings)
    if refused is not None:
        return refused
    images = payload.get("images")
    if images:
        if not settings.cache_images or not isinstance(images, list):
            return Bypass("images")
        material["images"] = [_hash(image) for image in images]
    return material, not images


def _message(message: dict[str, Any]) -> dict[str, Any]:
    kept = {k: message[k] for k in ("role", "content", "tool_calls", "tool_name", "thinking")
            if message.get(k) not in (None, "", [])}
    if message.get("images"):
        kept["images"] = [_hash(image) for image in message["images"]]
    return kept


def _conversation(messages: Any, material: dict[str, Any], settings: CacheConfig) -> tuple[dict[str, Any], bool] \
        | Bypass:
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return Bypass("shape")
    last = messages[-1]
    if last.get("role") != "user" or not isinstance(last.get("content"), str) or not last["content"]:
        return Bypass("last_turn_not_user")
    images = any(m.get("images") for m in messages)
    if images and not settings.cache_images:
        return Bypass("images")
    material["messages"] = [_message(m) for m in messages[:-1]]
    material["prompt"] = last["content"]
    if last.get("images"):
        material["images"] = [_hash(image) for image in last["images"]]
    return material, not images


def _chat(payload: dict[str, Any], settings: CacheConfig) -> tuple[dict[str, Any], bool] | Bypass:
    material: dict[str, Any] = {"kind": "chat", "options": _options(payload.get("options"))}
    refused = _common(payload, material, settings)
    return refused if refused is not None else _conversation(payload.get("messages"), material, settings)


def _openai_messages(messages: Any) -> list[dict[str, Any]] | Bypass:
    """Ollama's reading of OpenAI messages: each text part of a content list is a message of its own."""
    if not isinstance(messages, list):
        return Bypass("shape")
    native: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            return Bypass("shape")
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    return Bypass("shape")
                if part.get("type") == "text":
                    native.append({"role": role, "content": part.get("text")})
                elif part.get("type") == "image_url":
                    native.append({"role": role, "content": "", "images": [str(part.get("image_url"))]})
                else:
                    return Bypass("shape")
        else:
            native.append({"role": role, "content": content, "tool_calls": message.get("tool_calls")})
    return native


def _openai(payload: dict[str, Any], settings: CacheConfig) -> tuple[dict[str, Any], bool] | Bypass:
    if isinstance(payload.get("n"), int) and payload["n"] > 1:
        return Bypass("n")
    if payload.get("logprobs"):
        return Bypass("logprobs")
    options: dict[str, Any] = dict(OPENAI_DEFAULTS)
    for name, option in _OPENAI_OPTIONS.items():
        if payload.get(name) is not None:
            options[option] = payload[name]
    if isinstance(options.get("stop"), str):
        options["stop"] = [options["stop"]]
    material: dict[str, Any] = {"kind": "chat", "options": options}
    response_format = payload.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_object":
            material["format"] = "json"
        elif response_format.get("type") == "json_schema":
            schema = response_format.get("json_schema")
            material["format"] = schema.get("schema") if isinstance(schema, dict) else schema
    effort = payload.get("reasoning_effort")
    if effort is not None:
        material["think"] = effort
    if payload.get("tools"):
        if not settings.cache_tools:
            return Bypass("tools")
        material["tools"] = payload["tools"]
    messages = _openai_messages(payload.get("messages"))
    if isinstance(messages, Bypass):
        return messages
    return _conversation(messages, material, settings)
