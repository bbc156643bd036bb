"""A stand-in for the Ollama server (modelled on v0.12.6), for tests that cannot run the real binary.

It answers the endpoints the project talks to with Ollama's JSON field names, units and error texts, as
the Go source writes them (server/routes.go, api/types.go, openai/openai.go, middleware/openai.go):

* sizes in bytes, durations in nanoseconds measured on the real clock, ``created_at`` in UTC and
  ``modified_at``/``expires_at`` in the server's local zone, as Go marshals ``time.Time`` (RFC 3339 with
  trailing-zero-trimmed nanoseconds, ``Z`` for a zero offset);
* JSON as Go's ``encoding/json`` writes it: compact, ``<``, ``>`` and ``&`` escaped, ``model_info`` keys
  sorted; ``application/json; charset=utf-8`` from gin, ``application/json`` plus a newline from the
  OpenAI middleware;
* streaming as NDJSON (``application/x-ndjson``) or, on ``/v1``, server-sent events ending ``data: [DONE]``;
* request errors as gin/Go report them: ``missing request body``, Go's JSON syntax and type errors.

It runs an aiohttp server on 127.0.0.1 in a thread with its own event loop, so sync and async tests can
both use it. Replies are deterministic words; token counts are whitespace-separated words.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import random
import re
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from aiohttp import web

from .models import StandInModel

GIN_JSON = "application/json; charset=utf-8"
NDJSON = "application/x-ndjson"
FAULTS = (None, "garbage", "error500", "hang", "reset")
GARBAGE = b'<html><body>502 Bad Gateway</body></html>\n{"models": [ truncated'
RUNNER_CRASH = "llama runner process has terminated: exit status 2"
RESET_AFTER_CHUNKS = 2
DEFAULT_KEEP_ALIVE_NS = 5 * 60 * 10**9
FOREVER_NS = 2**63 - 1  # Go's time.Now().Add(math.MaxInt64) for a negative keep_alive
FAULT_KEY = web.RequestKey("fault", str)  # the fault applied to this request, or None
CHUNKS_KEY = web.RequestKey("chunks", int)  # chunks streamed so far
SENT_KEY = web.RequestKey("sent", bytearray)  # bytes streamed so far
REPLY = ["The", "sky", "is", "blue", "because", "of", "Rayleigh", "scattering."]

_NAME = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,79}/){0,2}[A-Za-z0-9][\w.-]{0,79}(?::\w[\w.-]{0,79})?$")
_DURATION = re.compile(r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")
_UNIT_NS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "μs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}

# Request fields whose JSON type Go checks: name → (Python type, Go type as its error message spells it).
_STRING, _BOOL = (str, "string"), (bool, "bool")
_OPTIONS = (dict, "map[string]interface {}")
GENERATE_FIELDS = {
    "model": _STRING,
    "prompt": _STRING,
    "system": _STRING,
    "stream": _BOOL,
    "options": _OPTIONS,
}
CHAT_FIELDS = {"model": _STRING, "messages": (list, "[]api.Message"), "stream": _BOOL, "options": _OPTIONS}
SHOW_FIELDS = {"model": _STRING, "name": _STRING, "verbose": _BOOL}
EMBED_FIELDS = {"model": _STRING, "truncate": _BOOL, "dimensions": (int, "int"), "options": _OPTIONS}
OPENAI_CHAT_FIELDS = {
    "model": _STRING,
    "messages": (list, "[]openai.Message"),
    "stream": _BOOL,
    "max_tokens": (int, "int"),
    "stream_options": (dict, "openai.StreamOptions"),
}


class _Fail(Exception):
    """An error reply: gin's ``{"error": message}``, or the OpenAI error object on ``/v1``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def go_time(ns: int, tz: tzinfo) -> str:
    """``time.Time`` as Go's MarshalJSON writes it: RFC 3339, nanoseconds without trailing zeros."""
    seconds, nanos = divmod(ns, 10**9)
    moment = datetime.fromtimestamp(seconds, tz)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{nanos:09d}".rstrip("0") if nanos else "")
    offset = int(moment.utcoffset().total_seconds()) // 60  # type: ignore[union-attr]
    if offset == 0:
        return text + "Z"
    hours, minutes = divmod(abs(offset), 60)
    return f"{text}{'+' if offset > 0 else '-'}{hours:02d}:{minutes:02d}"


def human_bytes2(value: int) -> str:
    """Go's ``format.HumanBytes2``: binary units with one decimal, plain bytes below 1 KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def go_json(value: Any) -> str:
    """Compact JSON with Go's HTML-safe escaping of ``<``, ``>`` and ``&`` (they only occur in strings)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _go_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def _go_char(char: str) -> str:
    """Go's ``quoteChar`` in JSON syntax errors."""
    if char in "'\"":
        return "'\\''" if char == "'" else "'\"'"
    return "'" + json.dumps(char, ensure_ascii=False)[1:-1] + "'"


def _open_container(doc: str, end: int) -> str:
    """The innermost ``{`` or ``[`` still open at ``end``, skipping strings."""
    stack: list[str] = []
    in_string = escaped = False
    for char in doc[:end]:
        if escaped:
            escaped = False
        elif in_string:
            escaped, in_string = char == "\\", char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def go_syntax_error(doc: str, error: json.JSONDecodeError) -> str:
    """The message Go's json.Decoder gives for the input Python's json rejected."""
    if error.pos >= len(doc.rstrip()) or error.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    context = {
        "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
        "Expecting ':' delimiter": "after object key",
        "Invalid control character at": "in string literal",
        "Invalid \\escape": "in string escape code",
    }.get(error.msg, "looking for beginning of value")
    if error.msg == "Expecting ',' delimiter":
        inside = _open_container(doc, error.pos)
        context = "after object key:value pair" if inside == "{" else "after array element"
    # Python points at a bad escape's backslash, Go at the character after it.
    offending = doc[error.pos + 1] if error.msg == "Invalid \\escape" else doc[error.pos]
    return f"invalid character {_go_char(offending)} {context}"


def decode_request(raw: bytes, struct_name: str, fields: dict[str, tuple[type, str]], eof: str) -> dict:
    """gin's ShouldBindJSON: one JSON value (trailing bytes ignored, as json.Decoder does), Go's errors."""
    doc = raw.decode("utf-8", "replace")
    start = len(doc) - len(doc.lstrip())
    if start == len(doc):
        raise _Fail(400, eof)
    try:
        value, _ = json.JSONDecoder().raw_decode(doc, start)
    except json.JSONDecodeError as error:
        raise _Fail(400, go_syntax_error(doc, error)) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Fail(400, f"json: cannot unmarshal {_go_kind(value)} into Go value of type api.{struct_name}")
    for key, item in value.items():
        expected = fields.get(key)
        wrong_bool = expected is not None and expected[0] is not bool and isinstance(item, bool)
        if expected and item is not None and (not isinstance(item, expected[0]) or wrong_bool):
            target = f"Go struct field {struct_name}.{key} of type {expected[1]}"
            raise _Fail(400, f"json: cannot unmarshal {_go_kind(item)} into {target}")
    return value


def parse_keep_alive(value: Any) -> int | None:
    """api.Duration: seconds as a number, a Go duration string; negative means forever (None)."""
    if value is None:
        return DEFAULT_KEEP_ALIVE_NS
    if isinstance(value, bool | dict | list):
        go_type = {bool: "bool", dict: "map[string]interface {}", list: "[]interface {}"}[type(value)]
        raise _Fail(400, f"Unsupported type: '{go_type}'")
    if isinstance(value, int | float):
        return None if value < 0 else int(value * 10**9)
    if value in ("0", "+0", "-0"):
        return 0
    if not _DURATION.match(value):
        missing_unit = re.fullmatch(r"[+-]?[\d.]+", value) is not None
        raise _Fail(
            400, f"time: {'missing unit in' if missing_unit else 'invalid'} duration {json.dumps(value)}"
        )
    total = sum(
        float(n) * _UNIT_NS[u] for n, u in re.findall(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", value)
    )
    return None if value.startswith("-") else int(total)


def count_tokens(text: str) -> int:
    return len(text.split())


def _message_text(message: Any) -> str:
    """A chat message's text; OpenAI-style content parts contribute their ``text``."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


@dataclass
class _Loaded:
    model: StandInModel
    size: int
    size_vram: int
    context_length: int
    expires_ns: int


@dataclass
class _Run:
    """The checkpoints of one completion, in monotonic nanoseconds, as Ollama measures them."""

    started: int
    loaded: int
    prompt_tokens: int
    prompt_done: int = 0
    finished: int = 0
    pieces: list[str] = field(default_factory=list)
    done_reason: str = "stop"

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def metrics(self) -> dict[str, int]:
        """Go's omitempty drops zero durations, so each is at least 1 ns."""
        return {
            "total_duration": max(1, time.monotonic_ns() - self.started),
            "load_duration": max(1, self.loaded - self.started),
            "prompt_eval_count": self.prompt_tokens,
            "prompt_eval_duration": max(1, self.prompt_done - self.loaded),
            "eval_count": len(self.pieces),
            "eval_duration": max(1, self.finished - self.prompt_done),
        }


class OllamaStandIn:
    """An Ollama server on 127.0.0.1:<free port>; see the module docstring for what it is faithful to."""

    def __init__(
        self,
        models: list[StandInModel] | None = None,
        version: str = "0.12.6",
        blobs_dir: str = "/root/.ollama/models/blobs",
        tz: tzinfo | None = None,
        port: int = 0,
        memory_bytes: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.version = version
        self.tls = tls  # a server context: https://, for clients that must verify Ollama's certificate
        self.blobs_dir = blobs_dir.rstrip("/")
        self.tz = tz or datetime.now().astimezone().tzinfo or UTC
        self._models = {m.name.lower(): m for m in models or []}
        now = time.time_ns()
        self._modified_ns = {m.name: now - (i + 1) * 86_400 * 10**9 for i, m in enumerate(models or [])}
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        # (path, body bytes) of every answer, streams whole: what a proxy in front must pass on unchanged.
        self.sent: list[tuple[str, bytes]] = []
        self.disconnects = 0
        self.received: list[tuple[str, bytes]] = []  # (path, request body) as they arrived
        self.fault: str | None = None
        self.faults_by_path: dict[str, str | None] = {}
        self.hang_seconds = 30.0
        self.token_delay = 0.0
        self.load_seconds = 0.0  # simulated cold-load time, counted in load_duration
        self.reply_tokens = len(REPLY)  # tokens of a reply when options.num_predict is not set
        # What each model says, for tests that score answers: (model name, the prompt, or the chat's last user
        # message) → the reply, or None for the default words. Whitespace is kept; a token is a word with the
        # whitespace before it, so num_predict cuts a reply at a word.
        self.answer: Callable[[str, str], str | None] | None = None
        # How /api/embed embeds a text: (text, length) -> vector; None: a deterministic random unit vector per text
        # (different texts are never similar). Tests of semantic matching give it a real embedding.
        self.embedder: Callable[[str, int], list[float]] | None = None
        self.default_num_ctx = 4096  # Ollama 0.12's default context length
        self.vram_fraction = 0.0  # share of a model Ollama reports in VRAM for API-triggered loads
        # RAM + swap free for models, as Ollama's CPU load check sees it: a load whose resident size does not fit
        # beside the models already loaded is refused with Ollama's error. None: no limit (the default).
        self.memory_bytes = memory_bytes
        self.port = 0
        self._requested_port = port  # 0: a free one; a fixed port lets a test stop and restart "the same" Ollama
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """The OLLAMA_HOST form."""
        return self.url if self.tls else f"127.0.0.1:{self.port}"

    def start(self) -> OllamaStandIn:
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._startup())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                return
            finally:
                started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="ollama-standin", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure or not self.port:
            raise RuntimeError("the Ollama stand-in did not start") from (failure[0] if failure else None)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> OllamaStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _startup(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware])
        app.on_response_prepare.append(self._drop_server_header)
        routes = app.router
        routes.add_get("/", self._root)
        routes.add_get("/api/version", self._version)
        routes.add_get("/api/tags", self._tags)
        routes.add_get("/api/ps", self._ps, allow_head=False)
        routes.add_post("/api/show", self._show)
        routes.add_post("/api/generate", self._generate)
        routes.add_post("/api/chat", self._chat)
        routes.add_post("/api/embed", self._embed)
        routes.add_get("/v1/models", self._openai_models, allow_head=False)
        routes.add_get("/v1/models/{model:.+}", self._openai_model, allow_head=False)
        routes.add_post("/v1/chat/completions", self._openai_chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handler_cancellation=True)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._requested_port))
        await web.SockSite(self._runner, sock, ssl_context=self.tls).start()
        self.port = sock.getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._stopping is not None and self._runner is not None
        self._stopping.set()
        await self._runner.cleanup()

    async def _sleep(self, seconds: float) -> None:
        """Sleep that ends early when the stand-in stops."""
        assert self._stopping is not None
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # --- models in memory ------------------------------------------------------------------------

    def blob_path(self, name: str) -> str:
        """Where the model's GGUF weights live: the runner's ``--model`` and the Modelfile's FROM."""
        return f"{self.blobs_dir}/sha256-{self._require(name).blob_digest}"

    def load(
        self,
        name: str,
        size: int | None = None,
        size_vram: int = 0,
        expires_in: timedelta | None = timedelta(minutes=5),
        context_length: int = 4096,
    ) -> None:
        """Show the model in /api/ps as if a request had loaded it; ``expires_in=None`` is keep_alive -1."""
        model = self._require(name)
        keep_ns = FOREVER_NS if expires_in is None else expires_in // timedelta(microseconds=1) * 1000
        expires = time.time_ns() + keep_ns
        size = model.loaded_size(context_length) if size is None else size
        with self._lock:
            self._loaded[model.name] = _Loaded(model, size, size_vram, context_length, expires)

    def unload(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(self._require(name).name, None)

    def _require(self, name: str) -> StandInModel:
        model = self._find(name)
        if model is None:
            raise KeyError(f"{name!r} is not installed in this stand-in")
        return model

    def _find(self, name: str) -> StandInModel | None:
        """Ollama's name matching: default host/namespace, ``:latest`` tag, case-insensitive."""
        name = name.strip()
        for prefix in ("registry.ollama.ai/library/", "library/"):
            if name.lower().startswith(prefix):
                name = name[len(prefix) :]
        if not _NAME.match(name):
            return None
        if ":" not in name.rsplit("/", 1)[-1]:
            name += ":latest"
        return self._models.get(name.lower())

    async def _schedule(self, model: StandInModel, options: dict, keep_alive: int | None) -> int:
        """Load the model if it is not (or not at this context length); returns the loaded checkpoint."""
        num_ctx = options.get("num_ctx")
        num_ctx = num_ctx if isinstance(num_ctx, int) and num_ctx > 0 else self.default_num_ctx
        with self._lock:
            current = self._loaded.get(model.name)
        if current is None or current.context_length != num_ctx:
            size = model.loaded_size(num_ctx)
            self._check_memory(model, size)
            await self._sleep(self.load_seconds)
            current = _Loaded(model, size, int(size * self.vram_fraction), num_ctx, 0)
        with self._lock:
            self._loaded[model.name] = current
        self._touch(model, keep_alive)
        return time.monotonic_ns()

    def _check_memory(self, model: StandInModel, size: int) -> None:
        """llm/server.go's check before starting a CPU runner (text and HumanBytes2 units as Ollama writes them).
        Real Ollama's scheduler may first unload an idle runner to make room; the stand-in leaves that to callers."""
        if self.memory_bytes is None:
            return
        with self._lock:
            held = sum(e.size for name, e in self._loaded.items() if name != model.name)
        available = max(0, self.memory_bytes - held)
        if size > available:
            raise _Fail(500, f"model requires more system memory ({human_bytes2(size)}) than is available "
                             f"({human_bytes2(available)})")

    def _touch(self, model: StandInModel, keep_alive: int | None) -> None:
        """Restart the keep-alive clock at the end of a request; keep_alive 0 unloads."""
        with self._lock:
            entry = self._loaded.get(model.name)
            if entry is not None and keep_alive == 0:
                del self._loaded[model.name]
            elif entry is not None:
                entry.expires_ns = time.time_ns() + (FOREVER_NS if keep_alive is None else keep_alive)

    def _running(self) -> list[_Loaded]:
        now = time.time_ns()
        with self._lock:
            for name in [n for n, e in self._loaded.items() if e.expires_ns <= now]:
                del self._loaded[name]
            entries = list(self._loaded.values())
        return sorted(entries, key=lambda e: -(e.expires_ns // 10**9))  # longest remaining first

    # --- plumbing --------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:  # as Go's net/http does (aiohttp already does too; stated, not assumed)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = await request.read() if request.can_read_body else b""
        with self._lock:
            self.calls[request.path] += 1
            self.received.append((request.path, body))
        fault = self.faults_by_path.get(request.path, self.fault)
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        request[FAULT_KEY] = fault
        if fault == "hang":
            await self._sleep(self.hang_seconds)
        elif fault == "garbage":
            return web.Response(body=GARBAGE, headers={"Content-Type": GIN_JSON})
        elif fault == "error500":
            return self._error(request, 500, RUNNER_CRASH)
        try:
            response = await handler(request)
        except (ConnectionResetError, asyncio.CancelledError):
            with self._lock:
                self.disconnects += 1  # the client (a proxy, say) went away mid-answer: generation stops
            raise
        except _Fail as fail:
            response = self._error(request, fail.status, fail.message)
        except web.HTTPNotFound:
            response = web.Response(
                status=404, body=b"404 page not found", headers={"Content-Type": "text/plain"}
            )
        except web.HTTPMethodNotAllowed:
            response = web.Response(
                status=405, body=b"405 method not allowed", headers={"Content-Type": "text/plain"}
            )
        if fault == "reset" and not response.prepared:
            self._reset(request)
        streamed = request.get(SENT_KEY)
        body = bytes(streamed) if streamed is not None else getattr(response, "body", None)
        if isinstance(body, bytes):
            with self._lock:
                self.sent.append((request.path, body))
        return response

    @staticmethod
    async def _drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.popall("Server", None)  # Go's net/http sends none

    @staticmethod
    def _reset(request: web.Request) -> None:
        """Abort the connection with a TCP RST, mid-stream or before any response."""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    @staticmethod
    def _json(
        value: Any, status: int = 200, content_type: str = GIN_JSON, newline: bool = False
    ) -> web.Response:
        body = go_json(value) + ("\n" if newline else "")
        return web.Response(status=status, body=body.encode(), headers={"Content-Type": content_type})

    def _error(self, request: web.Request, status: int, message: str) -> web.Response:
        if request.path.startswith("/v1/"):
            kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
            error = {"message": message, "type": kind, "param": None, "code": None}
            return self._json({"error": error}, status, "application/json", newline=True)
        return self._json({"error": message}, status)

    def _details(self, model: StandInModel) -> dict[str, Any]:
        return {
            "parent_model": model.parent_model,
            "format": model.format,
            "family": model.family,
            "families": model.families,
            "parameter_size": model.parameter_size,
            "quantization_level": model.quantization_level,
        }

    def _installed(self) -> list[StandInModel]:
        """Most recently modified first, compared in whole seconds as Ollama does."""
        return sorted(self._models.values(), key=lambda m: -(self._modified_ns[m.name] // 10**9))

    @staticmethod
    def _now() -> str:
        return go_time(time.time_ns(), UTC)

    @staticmethod
    async def _body(
        request: web.Request, struct: str, fields: dict, eof: str = "missing request body"
    ) -> dict:
        return decode_request(await request.read(), struct, fields, eof)

    def _reply(self, model: StandInModel, prompt: str) -> list[str] | None:
        """The pieces of ``self.answer``'s reply for this model and prompt; None: the default words."""
        reply = self.answer(model.name, prompt) if self.answer is not None else None
        return None if reply is None else re.findall(r"\s*\S+", reply)

    async def _tokens(self, run: _Run, options: dict, reply: list[str] | None = None) -> AsyncIterator[str]:
        """Prompt evaluation, then a piece per token; ``options.num_predict`` caps the reply (``length``)."""
        limit = options.get("num_predict")
        capped = isinstance(limit, int) and limit > 0
        count, run.done_reason = (limit, "length") if capped else (self.reply_tokens, "stop")
        if reply is not None:
            count, run.done_reason = (limit, "length") if capped and limit < len(reply) else (len(reply), "stop")
        await self._sleep(self.token_delay)
        run.prompt_done = time.monotonic_ns()
        for index in range(count):
            await self._sleep(self.token_delay)
            piece = reply[index] if reply is not None else ("" if index == 0 else " ") + REPLY[index % len(REPLY)]
            run.pieces.append(piece)
            yield piece
        run.finished = time.monotonic_ns()

    async def _stream(self, request: web.Request, response: web.StreamResponse, chunk: bytes) -> bool:
        """Write one chunk (headers go with the first, as Go flushes them); False once a reset fault fired."""
        if not response.prepared:
            await response.prepare(request)
        await response.write(chunk)
        request.setdefault(SENT_KEY, bytearray()).extend(chunk)
        request[CHUNKS_KEY] = request.get(CHUNKS_KEY, 0) + 1
        if request[FAULT_KEY] == "reset" and request[CHUNKS_KEY] >= RESET_AFTER_CHUNKS:
            self._reset(request)
            return False
        return True

    # --- native API --------------------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return self._json({"version": self.version})

    async def _tags(self, request: web.Request) -> web.Response:
        models = [
            {
                "name": m.name,
                "model": m.name,
                "modified_at": go_time(self._modified_ns[m.name], self.tz),
                "size": m.size,
                "digest": m.digest,
                "details": self._details(m),
            }
            for m in self._installed()
        ]
        return self._json({"models": models})

    async def _ps(self, request: web.Request) -> web.Response:
        models = [
            {
                "name": e.model.name,
                "model": e.model.name,
                "size": e.size,
                "digest": e.model.digest,
                "details": self._details(e.model),
                "expires_at": go_time(e.expires_ns, self.tz),
                "size_vram": e.size_vram,
                "context_length": e.context_length,
            }
            for e in self._running()
        ]
        return self._json({"models": models})

    async def _show(self, request: web.Request) -> web.Response:
        body = await self._body(request, "ShowRequest", SHOW_FIELDS)
        name = body.get("model") or body.get("name")
        if not name:
            raise _Fail(400, "model is required")
        if not _NAME.match(name.strip()):
            raise _Fail(400, "invalid model name")
        model = self._find(name)
        if model is None:
            raise _Fail(404, f"model '{name}' not found")
        reply: dict[str, Any] = {}
        if model.license:
            reply["license"] = model.license
        reply["modelfile"] = self._modelfile(model)
        if model.parameters:
            reply["parameters"] = model.parameters
        if model.template:
            reply["template"] = model.template
        reply["details"] = self._details(model)
        reply["model_info"] = dict(sorted(model.model_info.items()))
        reply["capabilities"] = model.capabilities
        reply["modified_at"] = go_time(self._modified_ns[model.name], self.tz)
        return self._json(reply)

    def _modelfile(self, model: StandInModel) -> str:
        """server.GetModelInfo's header, then Model.String(): FROM, TEMPLATE, PARAMETER…, LICENSE."""
        lines = [
            '# Modelfile generated by "ollama show"',
            "# To build a new Modelfile based on this, replace FROM with:",
            f"# FROM {model.name}",
            "",
            f"FROM {self.blob_path(model.name)}",
        ]
        if model.template:
            lines.append(f"TEMPLATE {_modelfile_quote(model.template)}")
        for line in filter(None, model.parameters.splitlines()):
            key, value = line.split(None, 1)
            value = json.loads(value) if value.startswith('"') else value
            lines.append(f"PARAMETER {key} {_modelfile_quote(str(value))}")
        if model.license:
            lines.append(f"LICENSE {_modelfile_quote(model.license)}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _check_capabilities(model: StandInModel, name: str, body: dict, verb: str) -> None:
        """What Generate/ChatHandler check before scheduling: thinking, completion, then tools."""
        if body.get("think") not in (None, False) and "thinking" not in model.capabilities:
            raise _Fail(400, f"{json.dumps(name)} does not support thinking")
        if "completion" not in model.capabilities:
            raise _Fail(400, f"{json.dumps(name)} does not support {verb}")
        if body.get("tools") and "tools" not in model.capabilities:
            raise _Fail(400, f"registry.ollama.ai/library/{model.name} does not support tools")

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic_ns()
        body = await self._body(request, "GenerateRequest", GENERATE_FIELDS)
        name = body.get("model") or ""
        keep_alive = parse_keep_alive(body.get("keep_alive"))
        prompt = body.get("prompt") or ""
        model = self._find(name)
        if model is None:
            raise _Fail(404, f"model '{name}' not found")
        if not prompt and keep_alive == 0:
            self.unload(model.name)
            return self._json(self._generate_reply(name, "unload"))
        self._check_capabilities(model, name, body, "generate")
        options = body.get("options") or {}
        loaded = await self._schedule(model, options, keep_alive)
        if not prompt:
            return self._json(self._generate_reply(name, "load"))
        run = _Run(started, loaded, count_tokens(f"{body.get('system') or ''} {prompt}"))
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        streaming = body.get("stream") is not False
        async for piece in self._tokens(run, options, self._reply(model, prompt)):
            chunk = {"model": name, "created_at": self._now(), "response": piece, "done": False}
            if streaming and not await self._stream(request, response, (go_json(chunk) + "\n").encode()):
                return response
        self._touch(model, keep_alive)
        context = list(range(1, run.prompt_tokens + len(run.pieces) + 1))
        final = {
            "model": name,
            "created_at": self._now(),
            "response": "" if streaming else run.text,
            "done": True,
        }
        final |= {"done_reason": run.done_reason, "context": context, **run.metrics()}
        if not streaming:
            return self._json(final)
        await self._stream(request, response, (go_json(final) + "\n").encode())
        await response.write_eof()
        return response

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic_ns()
        body = await self._body(request, "ChatRequest", CHAT_FIELDS)
        name = body.get("model") or ""
        if not _NAME.match(name.strip()):
            raise _Fail(400, "model is required")
        keep_alive = parse_keep_alive(body.get("keep_alive"))
        messages = body.get("messages") or []
        model = self._find(name)
        if model is None:
            raise _Fail(404, f"model '{name}' not found")
        if not messages and keep_alive == 0:
            self.unload(model.name)
            return self._json(self._chat_reply(name, "", done_reason="unload"))
        self._check_capabilities(model, name, body, "chat")
        options = body.get("options") or {}
        loaded = await self._schedule(model, options, keep_alive)
        if not messages:
            return self._json(self._chat_reply(name, "", done_reason="load"))
        run = _Run(started, loaded, sum(count_tokens(_message_text(m)) for m in messages))
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        streaming = body.get("stream") is not False
        async for piece in self._tokens(run, options, self._reply(model, _last_user_text(messages))):
            line = (go_json(self._chat_reply(name, piece)) + "\n").encode()
            if streaming and not await self._stream(request, response, line):
                return response
        self._touch(model, keep_alive)
        final = self._chat_reply(name, "" if streaming else run.text, run.done_reason, run.metrics())
        if not streaming:
            return self._json(final)
        await self._stream(request, response, (go_json(final) + "\n").encode())
        await response.write_eof()
        return response

    def _generate_reply(self, name: str, done_reason: str) -> dict:
        return {
            "model": name,
            "created_at": self._now(),
            "response": "",
            "done": True,
            "done_reason": done_reason,
        }

    def _chat_reply(
        self, name: str, content: str, done_reason: str = "", metrics: dict | None = None
    ) -> dict:
        reply = {
            "model": name,
            "created_at": self._now(),
            "message": {"role": "assistant", "content": content},
        }
        reply["done"] = bool(done_reason)
        if done_reason:
            reply["done_reason"] = done_reason
        return reply | (metrics or {})

    async def _embed(self, request: web.Request) -> web.Response:
        started = time.monotonic_ns()
        body = await self._body(request, "EmbedRequest", EMBED_FIELDS)
        name = body.get("model") or ""
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw] if raw else []
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            inputs = raw
        elif raw is None:
            inputs = []
        else:
            raise _Fail(400, "invalid input type")
        keep_alive = parse_keep_alive(body.get("keep_alive"))
        if not name:
            raise _Fail(400, "model is required")
        model = self._find(name)
        if model is None:
            raise _Fail(404, f"model {json.dumps(name)} not found, try pulling it first")
        loaded = await self._schedule(model, body.get("options") or {}, keep_alive)
        self._touch(model, keep_alive)
        if not inputs:
            return self._json({"model": name, "embeddings": []})
        dimensions = body.get("dimensions") or 0
        if self.embedder is not None:
            vectors = [self.embedder(text, dimensions or model.embedding_length) for text in inputs]
        else:
            vectors = [_embedding(text, model.embedding_length, dimensions) for text in inputs]
        return self._json(
            {
                "model": name,
                "embeddings": vectors,
                "total_duration": max(1, time.monotonic_ns() - started),
                "load_duration": max(1, loaded - started),
                "prompt_eval_count": sum(max(1, count_tokens(text)) for text in inputs),
            }
        )

    # --- OpenAI compatibility ----------------------------------------------------------------------

    def _openai_entry(self, model: StandInModel, name: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": self._modified_ns[model.name] // 10**9,
            "owned_by": "library",
        }

    async def _openai_models(self, request: web.Request) -> web.Response:
        data = [self._openai_entry(m, m.name) for m in self._installed()]
        return self._json(
            {"object": "list", "data": data or None}, content_type="application/json", newline=True
        )

    async def _openai_model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        model = self._find(name)
        if model is None:
            raise _Fail(404, f"model '{name}' not found")
        return self._json(self._openai_entry(model, name), content_type="application/json", newline=True)

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic_ns()
        body = await self._body(request, "ChatCompletionRequest", OPENAI_CHAT_FIELDS, eof="EOF")
        messages = body.get("messages") or []
        if not messages:
            raise _Fail(400, "[] is too short - 'messages'")
        name = body.get("model") or ""
        if not _NAME.match(name.strip()):
            raise _Fail(400, "model is required")
        model = self._find(name)
        if model is None:
            raise _Fail(404, f"model '{name}' not found")
        self._check_capabilities(model, name, body, "chat")
        max_tokens = body.get("max_tokens")
        options = {"num_predict": max_tokens} if isinstance(max_tokens, int) else {}
        loaded = await self._schedule(model, options, DEFAULT_KEEP_ALIVE_NS)
        run = _Run(started, loaded, sum(count_tokens(_message_text(m)) for m in messages))
        completion_id = f"chatcmpl-{random.randrange(999)}"

        def chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> bytes:
            value: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk"}
            value |= {"created": int(time.time()), "model": name, "system_fingerprint": "fp_ollama"}
            value["choices"] = (
                [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            )
            if usage is not None:
                value["usage"] = usage
            return f"data: {go_json(value)}\n\n".encode()

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        streaming = body.get("stream") is True
        async for piece in self._tokens(run, options):
            if streaming and not await self._stream(
                request, response, chunk({"role": "assistant", "content": piece})
            ):
                return response
        self._touch(model, DEFAULT_KEEP_ALIVE_NS)
        usage = {"prompt_tokens": run.prompt_tokens, "completion_tokens": len(run.pieces)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not streaming:
            message = {"role": "assistant", "content": run.text}
            choice = {"index": 0, "message": message, "finish_reason": run.done_reason}
            reply = {"id": completion_id, "object": "chat.completion", "created": int(time.time())}
            reply |= {"model": name, "system_fingerprint": "fp_ollama", "choices": [choice], "usage": usage}
            return self._json(reply, content_type="application/json", newline=True)
        if not await self._stream(
            request, response, chunk({"role": "assistant", "content": ""}, run.done_reason)
        ):
            return response
        if (body.get("stream_options") or {}).get("include_usage") is True:
            await self._stream(request, response, chunk(None, usage=usage))
        await self._stream(request, response, b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _last_user_text(messages: list) -> str:
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return _message_text(users[-1]) if users else ""


def _modelfile_quote(value: str) -> str:
    """parser.quote: multi-line or space-padded values are quoted, with triple quotes if they hold ``"``."""
    if "\n" in value or value.startswith(" ") or value.endswith(" "):
        return f'"""{value}"""' if '"' in value else f'"{value}"'
    return value


def _embedding(text: str, length: int, dimensions: int) -> list[float]:
    """A deterministic unit vector per text, truncated and renormalised to ``dimensions`` as Ollama does."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    vector = [rng.gauss(0.0, 1.0) for _ in range(length)]
    if 0 < dimensions < length:
        vector = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [float(f"{v / norm:.8g}") for v in vector]  # float32 precision, as Go marshals []float32
