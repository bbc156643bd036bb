"""Reading what a response says about its own cost, without changing a byte of what the client receives.

Ollama's native API reports counters in its last object (``prompt_eval_count``, ``eval_count`` and the
``*_duration`` fields in nanoseconds); the OpenAI-compatible API reports ``usage`` (in streams only when
``stream_options.include_usage`` was asked for). Streams are read as they pass: NDJSON line by line, SSE
event by event; a partial line waits for the next chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

NS = 1e-9


@dataclass
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    generation_seconds: float | None = None  # eval_duration
    prompt_seconds: float | None = None  # prompt_eval_duration
    load_seconds: float | None = None
    total_seconds: float | None = None
    error: str | None = None  # an {"error": ...} object inside a stream
    text: list[str] = field(default_factory=list)
    first_content_at: float | None = None  # perf_counter of the first chunk carrying generated content


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _seconds(value: Any) -> float | None:
    count = _count(value)
    return count * NS if count is not None else None


def read_ollama(obj: Any, usage: Usage) -> str:
    """Fold one native object into ``usage``; return its generated text ('' when none)."""
    if not isinstance(obj, dict):
        return ""
    if isinstance(obj.get("error"), str):
        usage.error = obj["error"]
    if obj.get("done") is True or "prompt_eval_count" in obj or "eval_count" in obj:
        usage.input_tokens = _count(obj.get("prompt_eval_count")) if "prompt_eval_count" in obj else usage.input_tokens
        usage.output_tokens = _count(obj.get("eval_count")) if "eval_count" in obj else usage.output_tokens
        usage.generation_seconds = _seconds(obj.get("eval_duration")) or usage.generation_seconds
        usage.prompt_seconds = _seconds(obj.get("prompt_eval_duration")) or usage.prompt_seconds
        usage.load_seconds = _seconds(obj.get("load_duration")) or usage.load_seconds
        usage.total_seconds = _seconds(obj.get("total_duration")) or usage.total_seconds
    text = obj.get("response")
    if not isinstance(text, str):
        message = obj.get("message")
        text = message.get("content") if isinstance(message, dict) else None
    return text if isinstance(text, str) else ""


def read_openai(obj: Any, usage: Usage) -> str:
    """Fold one OpenAI-style object (a whole response or a stream chunk) into ``usage``; return its text."""
    if not isinstance(obj, dict):
        return ""
    error = obj.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        usage.error = error["message"]
    reported = obj.get("usage")
    if isinstance(reported, dict):
        usage.input_tokens = _count(reported.get("prompt_tokens"))
        usage.output_tokens = _count(reported.get("completion_tokens"))
    pieces = []
    for choice in obj.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        for holder in (choice.get("delta"), choice.get("message")):
            if isinstance(holder, dict) and isinstance(holder.get("content"), str):
                pieces.append(holder["content"])
        if isinstance(choice.get("text"), str):
            pieces.append(choice["text"])
    return "".join(pieces)


def read_body(body: bytes, openai: bool, usage: Usage, keep_text: bool) -> None:
    """A whole (non-streamed) JSON answer."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # an answer nested too deeply is not metered
        return
    text = (read_openai if openai else read_ollama)(obj, usage)
    if keep_text and text:
        usage.text.append(text)


class StreamMeter:
    """Watches a stream go by. ``feed`` returns the bytes to forward: the chunk itself, except that an
    SSE usage-only event the gateway asked for on the client's behalf is held back (``strip_usage``)."""

    def __init__(self, openai: bool, keep_text: bool, strip_usage: bool = False) -> None:
        self.openai = openai
        self.keep_text = keep_text
        self.strip_usage = strip_usage
        self.usage = Usage()
        self._pending = b""

    def feed(self, chunk: bytes, now: float) -> bytes:
        data = self._pending + chunk
        separator = b"\n\n" if self.openai else b"\n"
        *complete, self._pending = data.split(separator)
        if not self.strip_usage:
            for item in complete:
                self._read(item, now)
            return chunk
        kept = []
        for item in complete:
            if not self._read(item, now):
                kept.append(item + separator)
        return b"".join(kept)

    def finish(self, now: float) -> bytes:
        """End of stream: read a last line that had no newline; return what is still to be forwarded."""
        rest, self._pending = self._pending, b""
        if rest.strip():
            dropped = self._read(rest, now)
            if self.strip_usage:
                return b"" if dropped else rest
        return b"" if not self.strip_usage else rest

    def _read(self, item: bytes, now: float) -> bool:
        """Fold one line/event in; True when it is a usage-only SSE event to hold back."""
        if self.openai:
            payload = b"".join(line[5:].strip() for line in item.split(b"\n") if line.startswith(b"data:"))
            if not payload or payload == b"[DONE]":
                return False
        else:
            payload = item.strip()
            if not payload:
                return False
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return False
        text = (read_openai if self.openai else read_ollama)(obj, self.usage)
        if text:
            if self.usage.first_content_at is None:
                self.usage.first_content_at = now
            if self.keep_text:
                self.usage.text.append(text)
        return (self.openai and self.strip_usage and isinstance(obj, dict) and isinstance(obj.get("usage"), dict)
                and not obj.get("choices"))
