"""A stored answer, written back in the shape of the endpoint that asked: Ollama's JSON or NDJSON stream for
``/api/generate`` and ``/api/chat``, an OpenAI completion or server-sent events ending ``data: [DONE]`` for
``/v1/chat/completions`` (with the usage chunk when the client asked for it), with the field names, order, JSON
spelling (Go's encoder: compact, ``<``, ``>`` and ``&`` escaped) and content types Ollama uses.

What differs from the miss is only what is true of a hit: durations are the replay's own (nothing was loaded and
no prompt evaluated, so those durations are zero and, as in Go's ``omitempty``, left out); token counts are those of
the answer when it was made.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from singularity_ops.exporter.gateway.cache.answer import Answer

NATIVE_JSON = "application/json; charset=utf-8"
NDJSON = "application/x-ndjson"
OPENAI_JSON = "application/json"
SSE = "text/event-stream"
_PIECE = re.compile(r"\s*\S+|\s+")
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                             "\u2029": "\\u2029"})


def go_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES).encode()


def go_time(moment: datetime) -> str:
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def pieces(text: str) -> list[str]:
    """Word-sized pieces with the whitespace before each, as a model's tokens arrive."""
    return _PIECE.findall(text)


class Replay:
    def __init__(self, answer: Answer, model: str, openai: bool, kind: str, started: float) -> None:
        self.answer = answer
        self.model = model  # as the client wrote it: Ollama echoes the request's name
        self.openai = openai
        self.kind = kind
        self.started = started  # perf_counter when the request arrived

    def content_type(self, stream: bool) -> str:
        if self.openai:
            return SSE if stream else OPENAI_JSON
        return NDJSON if stream else NATIVE_JSON

    def body(self, stream: bool, include_usage: bool = False) -> bytes:
        if self.openai:
            return b"".join(self._sse(include_usage)) if stream else go_json(self._completion()) + b"\n"
        if stream:
            return b"".join(go_json(obj) + b"\n" for obj in self._native_stream())
        return go_json(self._native(self.answer.text, self.answer.thinking, self.answer.tool_calls, final=True))

    # --- native ----------------------------------------------------------------------------------------

    def _counts(self) -> dict[str, int]:
        elapsed = max(1, int((time.perf_counter() - self.started) * 1e9))
        counts = {"total_duration": elapsed}
        if self.answer.prompt_tokens is not None:
            counts["prompt_eval_count"] = self.answer.prompt_tokens
        if self.answer.output_tokens is not None:
            counts["eval_count"] = self.answer.output_tokens
        counts["eval_duration"] = elapsed
        return counts

    def _native(self, text: str, thinking: str, tool_calls: list[Any], final: bool) -> dict[str, Any]:
        obj: dict[str, Any] = {"model": self.model, "created_at": go_time(datetime.now(UTC))}
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = tool_calls
            obj["message"] = message
        else:
            obj["response"] = text
            if thinking:
                obj["thinking"] = thinking
        obj["done"] = final
        if final:
            obj["done_reason"] = self.answer.done_reason
            obj.update(self._counts())
        return obj

    def _native_stream(self) -> Iterator[dict[str, Any]]:
        for piece in pieces(self.answer.thinking):
            yield self._native("", piece, [], final=False)
        for piece in pieces(self.answer.text):
            yield self._native(piece, "", [], final=False)
        if self.answer.tool_calls:
            yield self._native("", "", self.answer.tool_calls, final=False)
        yield self._native("", "", [], final=True)

    # --- OpenAI ----------------------------------------------------------------------------------------

    def _head(self, kind: str) -> dict[str, Any]:
        if not hasattr(self, "_id"):
            self._id = f"chatcmpl-{random.randrange(1000)}"
        return {"id": self._id, "object": kind, "created": int(time.time()), "model": self.model,
                "system_fingerprint": "fp_ollama"}

    def _finish_reason(self) -> str:
        return "tool_calls" if self.answer.tool_calls else self.answer.done_reason

    def _usage(self) -> dict[str, int]:
        prompt, output = self.answer.prompt_tokens or 0, self.answer.output_tokens or 0
        return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}

    def _tool_calls(self) -> list[dict[str, Any]]:
        calls = []
        for index, call in enumerate(self.answer.tool_calls):
            function = call.get("function", {}) if isinstance(call, dict) else {}
            arguments = function.get("arguments", {})
            calls.append({"id": f"call_{random.getrandbits(40):010x}", "index": index, "type": "function",
                          "function": {"name": function.get("name", ""),
                                       "arguments": arguments if isinstance(arguments, str)
                                       else json.dumps(arguments, separators=(",", ":"))}})
        return calls

    def _completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.answer.text}
        if self.answer.thinking:
            message["reasoning"] = self.answer.thinking
        if self.answer.tool_calls:
            message["tool_calls"] = self._tool_calls()
        completion = self._head("chat.completion")
        completion["choices"] = [{"index": 0, "message": message, "finish_reason": self._finish_reason()}]
        completion["usage"] = self._usage()
        return completion

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None,
               usage: dict[str, int] | None = None) -> bytes:
        chunk = self._head("chat.completion.chunk")
        chunk["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + go_json(chunk) + b"\n\n"

    def _sse(self, include_usage: bool) -> Iterator[bytes]:
        for piece in pieces(self.answer.thinking):
            yield self._chunk({"role": "assistant", "content": "", "reasoning": piece})
        for piece in pieces(self.answer.text):
            yield self._chunk({"role": "assistant", "content": piece})
        if self.answer.tool_calls:
            yield self._chunk({"role": "assistant", "content": "", "tool_calls": self._tool_calls()})
        yield self._chunk({"role": "assistant", "content": ""}, self._finish_reason())
        if include_usage:
            yield self._chunk(None, usage=self._usage())
        yield b"data: [DONE]\n\n"
