"""A complete upstream answer, read from what Ollama sent (whole or streamed, native or OpenAI), as the cache stores it.

Only complete answers are kept: a native stream must end with its ``"done": true`` object, an OpenAI stream with
a finish reason and ``data: [DONE]``; an ``error`` anywhere, a non-200 status or an answer over ``MAX_TEXT_CHARS``
is never stored.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT_CHARS = 1_000_000
MAX_CAPTURE_BYTES = 8 * 2**20


@dataclass
class Answer:
    text: str = ""
    thinking: str = ""
    tool_calls: list[Any] = field(default_factory=list)
    done_reason: str = "stop"  # stop or length (an answer that calls tools says stop, as Ollama does)
    prompt_tokens: int | None = None
    output_tokens: int | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text": self.text, "done_reason": self.done_reason}
        if self.thinking:
            data["thinking"] = self.thinking
        if self.tool_calls:
            data["tool_calls"] = self.tool_calls
        if self.prompt_tokens is not None:
            data["prompt_tokens"] = self.prompt_tokens
        if self.output_tokens is not None:
            data["output_tokens"] = self.output_tokens
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Answer:
        return cls(str(data.get("text", "")), str(data.get("thinking", "")), list(data.get("tool_calls") or []),
                   str(data.get("done_reason") or "stop"), data.get("prompt_tokens"), data.get("output_tokens"))


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class Reader:
    """Folds native objects or OpenAI chunks into one Answer; ``complete`` once the end was seen without error."""

    def __init__(self, openai: bool) -> None:
        self.openai = openai
        self.answer = Answer()
        self.text: list[str] = []
        self.thinking: list[str] = []
        self.failed = False
        self.finished = False  # native: done true; OpenAI: a finish reason
        self.ended = not openai  # OpenAI streams also need [DONE]; a whole answer sets it

    @property
    def complete(self) -> bool:
        return self.finished and self.ended and not self.failed

    def fold(self, obj: Any) -> None:
        if not isinstance(obj, dict) or "error" in obj:
            self.failed = True
            return
        (self._openai if self.openai else self._native)(obj)

    def _native(self, obj: dict[str, Any]) -> None:
        message = obj.get("message") if isinstance(obj.get("message"), dict) else obj
        content = message.get("content") if "message" in obj else obj.get("response")
        if isinstance(content, str):
            self.text.append(content)
        if isinstance(message.get("thinking"), str):
            self.thinking.append(message["thinking"])
        if isinstance(message.get("tool_calls"), list):
            self.answer.tool_calls.extend(message["tool_calls"])
        if obj.get("done") is True:
            self.finished = True
            self.answer.done_reason = obj.get("done_reason") if obj.get("done_reason") == "length" else "stop"
            self.answer.prompt_tokens = _count(obj.get("prompt_eval_count"))
            self.answer.output_tokens = _count(obj.get("eval_count"))

    def _openai(self, obj: dict[str, Any]) -> None:
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.answer.prompt_tokens = _count(usage.get("prompt_tokens"))
            self.answer.output_tokens = _count(usage.get("completion_tokens"))
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            holder = choice.get("delta") if isinstance(choice.get("delta"), dict) else choice.get("message")
            if isinstance(holder, dict):
                if isinstance(holder.get("content"), str):
                    self.text.append(holder["content"])
                if isinstance(holder.get("reasoning"), str):
                    self.thinking.append(holder["reasoning"])
                if isinstance(holder.get("tool_calls"), list):
                    self.answer.tool_calls.extend(_native_call(call) for call in holder["tool_calls"])
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finished = True
                self.answer.done_reason = "length" if reason == "length" else "stop"

    def result(self) -> Answer | None:
        if not self.complete:
            return None
        self.answer.text, self.answer.thinking = "".join(self.text), "".join(self.thinking)
        if len(self.answer.text) + len(self.answer.thinking) > MAX_TEXT_CHARS:
            return None
        return self.answer


def _native_call(call: Any) -> Any:
    """An OpenAI tool call as Ollama's native one (arguments as an object), which is how entries keep them."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    function = dict(call["function"])
    if isinstance(function.get("arguments"), str):
        with contextlib.suppress(ValueError):
            function["arguments"] = json.loads(function["arguments"])
    return {"function": {k: function[k] for k in ("name", "arguments") if k in function}}


def read_whole(body: bytes, openai: bool) -> Answer | None:
    """A non-streamed answer."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    reader = Reader(openai)
    reader.ended = True
    reader.fold(obj)
    return reader.result()


class StreamCapture:
    """Collects a stream's bytes as they pass (bounded) and reads them once it has ended."""

    def __init__(self, openai: bool) -> None:
        self.openai = openai
        self._data = bytearray()
        self.overflow = False

    def feed(self, chunk: bytes) -> None:
        if not self.overflow:
            self._data += chunk
            if len(self._data) > MAX_CAPTURE_BYTES:
                self.overflow = True
                self._data = bytearray()

    def finish(self) -> Answer | None:
        if self.overflow:
            return None
        reader = Reader(self.openai)
        separator = b"\n\n" if self.openai else b"\n"
        for item in bytes(self._data).split(separator):
            if self.openai:
                payload = b"".join(line[5:].strip() for line in item.split(b"\n") if line.startswith(b"data:"))
                if payload == b"[DONE]":
                    reader.ended = True
                    continue
            else:
                payload = item.strip()
            if not payload:
                continue
            try:
                reader.fold(json.loads(payload))
            except (ValueError, UnicodeDecodeError, RecursionError):
                return None
        return reader.result()
