"""The metering gateway: an Ollama-compatible reverse proxy that measures, guards and records each request.

Every path is forwarded to ``OLLAMA_HOST`` as it is. Streams (NDJSON and SSE) pass chunk by chunk as they
arrive, byte for byte; a client that goes away cancels the upstream request (aiohttp handler
cancellation closes the upstream connection, which is how Ollama learns to stop generating).
Inference paths are metered from what Ollama reports, guarded by a per-model circuit breaker, optionally
compressed (chat history over a token budget) and written to the history off the request path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from singularity_ops.config import Config
from singularity_ops.exporter.gateway.cache.lookup import NO_CACHE, add_cache_header
from singularity_ops.exporter.gateway.compression import SUMMARISE_INSTRUCTION, compress, transcript, with_summary
from singularity_ops.exporter.gateway.cost import CostModel
from singularity_ops.exporter.gateway.endpoints import INFERENCE, Dialect, Endpoint, endpoint_label
from singularity_ops.exporter.gateway.metering import GatewayMetrics
from singularity_ops.exporter.gateway.model_names import ModelNames
from singularity_ops.exporter.gateway.prompts.feedback import FEEDBACK_PATH, OUTCOME_KEY, add_headers, handle_feedback
from singularity_ops.exporter.gateway.request import Refused, forwarded_headers, json_object, read_body
from singularity_ops.exporter.gateway.tracing import Tracing
from singularity_ops.exporter.gateway.usage import StreamMeter, Usage
from singularity_ops.exporter.gateway.usage import read_body as read_answer
from singularity_ops.exporter.listener import expect
from singularity_ops.http_headers import HOP_BY_HOP
from singularity_ops.ollama_api import upstream_headers
from singularity_ops.tls import for_url

log = logging.getLogger(__name__)

STREAM_TYPES = ("application/x-ndjson", "text/event-stream")
CLIENT_CLOSED = 499  # nginx's code for "client closed the request", only ever in metrics and history


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Ollama's error shape: ``{"error": "..."}``."""
    return web.json_response({"error": message}, status=status, headers=headers)


@dataclass
class Outcome:
    """What one request did, gathered as it goes and recorded once at the end."""

    endpoint: Endpoint | None
    label: str
    model: str
    received: float
    at: datetime
    status: int = 0
    error_type: str | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    compression_ratio: float | None = None
    prompt_hash: str | None = None
    prompt_text: str | None = None
    client: str = ""
    cache_hit: bool = False
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # X-Request-Id
    prompt: Any = None  # prompts.layer.Tracked: a request of an enabled system prompt


class Gateway:
    def __init__(self, config: Config, metrics: GatewayMetrics, names: ModelNames, breakers: Any, cost: CostModel,
                 submit_history: Callable[[str, dict[str, Any]], None] | None = None, rollup: Any = None,
                 tracing: Tracing | None = None, guard: Any = None) -> None:
        self.config = config
        self.upstream = config.ollama.host
        self.metrics = metrics
        self.names = names
        self.breakers = breakers
        self.cost = cost
        self.submit_history = submit_history
        self.rollup = rollup
        self.tracing = tracing
        self.guard = guard  # guard/detector.py: keys, scopes, admin routes; the detectors unless guard.enabled is false
        self.cache: Any = NO_CACHE  # cache/cache.py's SemanticCache, set by the service when cache.enabled
        self.router: Any = None  # gateway.routes (routing.RouteTable), set by the service when routes are configured
        self.prompts: Any = None  # prompts.layer.PromptLayer, set by the service unless prompt_optimizer is off
        upstream = urlsplit(self.upstream)
        self._server = (upstream.hostname, upstream.port)
        self._upstream_headers = upstream_headers(config)  # secrets: never logged
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.config.gateway.connect_timeout_seconds,
                                        sock_read=self.config.gateway.read_timeout_seconds)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, enable_cleanup_closed=True,
                                         ssl=for_url(self.upstream))  # https: singularity_ops/tls.py
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                             skip_auto_headers=("User-Agent", "Accept-Encoding"))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.gateway.max_body_bytes + 1)
        app.router.add_route("*", "/{tail:.*}", self.handle, expect_handler=expect)
        app.on_response_prepare.append(_drop_server_header)
        if self.router is not None:  # X-Singularity-Route; routing is imported only when gateway.routes are set
            app.on_response_prepare.append(self.router.add_header)
        app.on_response_prepare.append(add_cache_header)
        app.on_response_prepare.append(add_headers)  # X-Request-Id, X-Singularity-Variant
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        received = time.perf_counter()
        endpoint = INFERENCE.get(request.path) if request.method == "POST" else None
        outcome = Outcome(endpoint, endpoint_label(request.path), "none", received, datetime.now(UTC),
                          client=request.remote or "")
        request[OUTCOME_KEY] = outcome
        try:
            return await self._handle(request, outcome)
        except asyncio.CancelledError:  # the client went away: not upstream's fault
            outcome.status, outcome.error_type = CLIENT_CLOSED, "client_closed"
            raise
        finally:
            self._record(outcome)

    async def _handle(self, request: web.Request, outcome: Outcome) -> web.StreamResponse:
        endpoint, payload, strip_usage, permit = outcome.endpoint, None, False, None
        try:  # too large, undecodable, an unknown Content-Encoding, JSON nested too deeply: 4xx, never a traceback
            body = await read_body(request, self.config.gateway.max_body_bytes)
            if endpoint is not None:
                payload = json_object(body)
                if payload is not None and self.router is not None:  # a route name → its chosen model
                    body, unroutable = self.router.apply(request, payload, body)
                    if unroutable is not None:
                        raise Refused(503, "no_route", unroutable)
                outcome.model = self.names.label(payload.get("model") if payload else None)
        except Refused as refused:
            self.metrics.child(self.metrics.rejected, refused.reason).inc()
            outcome.status, outcome.error_type = refused.status, refused.reason
            return error_response(refused.status, refused.message, refused.headers)
        if self.guard is not None:
            outcome.client, refusal = await self.guard.check(request.remote, request.path, request.headers, endpoint,
                                                             payload)
            if refusal is not None:
                outcome.status, outcome.error_type = refusal.status, refusal.reason
                self.metrics.child(self.metrics.rejected, refusal.reason).inc()
                return error_response(refusal.status, refusal.message, refusal.headers)
        if request.path == FEEDBACK_PATH:  # the gateway's own route (prompts/feedback.py)
            return await handle_feedback(self.prompts, request.method, body, outcome.client)
        if endpoint is not None:
            breaker = self.breakers.get(outcome.model)
            permit = breaker.allow()
            if permit is None:
                seconds = breaker.retry_after_seconds()
                outcome.status, outcome.error_type = 503, "circuit_open"
                self.metrics.child(self.metrics.rejected, "circuit_open").inc()
                return error_response(503, breaker.rejection_message(), {"Retry-After": str(seconds)})
            if payload is not None:
                body, strip_usage = await self._rewrite(endpoint, payload, body, outcome)
            cached = await self.cache.before(request, payload, outcome.client, outcome.model, strip_usage,
                                             managed=outcome.prompt is not None)  # a hit is the whole answer
            if cached is not None:
                permit.record_ignored()  # Ollama was not asked: nothing for its breaker
                outcome.status, outcome.cache_hit = cached.status, True
                return cached
        try:
            response = await self._forward(request, body, outcome, strip_usage)
        except asyncio.CancelledError:
            outcome.status, outcome.error_type = CLIENT_CLOSED, "client_closed"
            if permit is not None:
                _settle(permit, outcome)
            raise
        if permit is not None:
            _settle(permit, outcome)
        return response

    async def _rewrite(self, endpoint: Endpoint, payload: dict[str, Any], body: bytes,
                       outcome: Outcome) -> tuple[bytes, bool]:
        """Compression of chat history and, for OpenAI streams, asking Ollama for usage."""
        changed, strip_usage = False, False
        if self.prompts is not None:  # managed system prompts: the promoted text, or an experiment's candidate
            outcome.prompt, body = self.prompts.apply(endpoint, payload, body, outcome.client, outcome.model,
                                                      outcome.at, outcome.request_id)
        prompt: Any = payload.get("messages") if endpoint.chat else payload.get("prompt", payload.get("input"))
        if prompt is not None:
            text = json.dumps(prompt, sort_keys=True, ensure_ascii=False)
            outcome.prompt_hash = hashlib.sha256(text.encode()).hexdigest()
            if self.config.history.store_text:
                outcome.prompt_text = text if not isinstance(prompt, str) else prompt
        budgets = self.config.gateway.context_budgets
        budget = budgets.get(outcome.model) or budgets.get("*")
        messages = payload.get("messages")
        if endpoint.chat and isinstance(messages, list):
            if budget:
                compressed = compress(messages, budget)
                if compressed.dropped_messages and self.config.gateway.summariser_model:
                    summary = await self._summarise(compressed.dropped_messages)
                    if summary:
                        compressed = with_summary(compressed, summary)
                outcome.compression_ratio = compressed.ratio
                if compressed.dropped:
                    payload["messages"] = compressed.messages
                    changed = True
            else:
                outcome.compression_ratio = 1.0
        if endpoint.dialect is Dialect.OPENAI and payload.get("stream") is True:
            options = payload.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
                changed, strip_usage = True, True
        return (json.dumps(payload).encode() if changed else body), strip_usage

    async def _summarise(self, dropped: tuple[Any, ...]) -> str | None:
        """The dropped turns summarised by ``gateway.summariser_model``; None (plain dropping) if that fails."""
        assert self.session is not None
        model = self.config.gateway.summariser_model
        request = {"model": model, "stream": False, "messages": [
            {"role": "system", "content": SUMMARISE_INSTRUCTION}, {"role": "user", "content": transcript(dropped)}]}
        try:
            async with self.session.post(self.upstream + "/api/chat", json=request,
                                         headers=self._upstream_headers) as reply:
                answer = await reply.json(content_type=None) if reply.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("summariser %s failed (%s); dropping the oldest turns instead", model, exc)
            return None
        content = (answer or {}).get("message", {}).get("content") if isinstance(answer, dict) else None
        if not isinstance(content, str) or not content.strip():
            log.warning("summariser %s gave no summary; dropping the oldest turns instead", model)
            return None
        return content

    async def _forward(self, request: web.Request, body: bytes, outcome: Outcome,
                       strip_usage: bool) -> web.StreamResponse:
        assert self.session is not None
        headers = forwarded_headers(request.headers, self._upstream_headers)
        url = self.upstream + request.rel_url.raw_path_qs
        openai = outcome.endpoint is not None and outcome.endpoint.dialect is Dialect.OPENAI
        keep_text = (self.config.history.store_text or outcome.prompt is not None) and outcome.endpoint is not None
        try:
            async with self.session.request(request.method, url, data=body or None, headers=headers,
                                            allow_redirects=False) as upstream:
                outcome.status = upstream.status
                reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                if upstream.content_type in STREAM_TYPES:
                    return await self._stream(request, upstream, reply_headers, outcome, openai, keep_text,
                                              strip_usage)
                data = await upstream.read()
                if self.router is not None:  # route names in /api/tags and /v1/models
                    data = self.router.listing(request.path, upstream.status, data)
                if outcome.endpoint is not None:
                    read_answer(data, openai, outcome.usage, keep_text)
                    self.cache.answered(request, upstream.status, data)
                return web.Response(status=upstream.status, body=data, headers=reply_headers)
        except TimeoutError:
            outcome.status, outcome.error_type = 504, "timeout"
            seconds = self.config.gateway.read_timeout_seconds
            outcome.error = f"Ollama at {self.upstream} sent nothing for {seconds:g} s (gateway.read_timeout_seconds)"
        except aiohttp.ClientConnectorError as exc:
            outcome.status, outcome.error_type = 502, "connection_error"
            outcome.error = f"cannot reach Ollama at {self.upstream}: {exc.os_error or exc}"
        except (aiohttp.ClientError, ConnectionError) as exc:
            outcome.status, outcome.error_type = 502, "upstream_error"
            outcome.error = f"Ollama at {self.upstream} failed: {type(exc).__name__}: {exc}"
        return error_response(outcome.status, outcome.error)

    async def _stream(self, request: web.Request, upstream: aiohttp.ClientResponse, headers: dict[str, str],
                      outcome: Outcome, openai: bool, keep_text: bool, strip_usage: bool) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        meter = StreamMeter(openai, keep_text, strip_usage)
        outcome.usage = meter.usage
        capture = self.cache.capture(request, upstream.status)  # a stream to store once it ends complete
        try:
            async for chunk in upstream.content.iter_any():
                forward = meter.feed(chunk, time.perf_counter())
                if capture is not None:
                    capture.feed(chunk)
                if forward:
                    await response.write(forward)
        except (aiohttp.ClientError, TimeoutError) as exc:  # upstream broke mid-stream; headers are gone
            outcome.error_type = "timeout" if isinstance(exc, TimeoutError) else "upstream_reset"
            outcome.error = f"Ollama stream interrupted: {type(exc).__name__}"
            if not openai:
                await response.write(json.dumps({"error": outcome.error}).encode() + b"\n")
            await response.write_eof()
            return response
        except ConnectionError:  # the client went away while we were writing to it
            outcome.status, outcome.error_type = CLIENT_CLOSED, "client_closed"
            return response
        self.cache.streamed(request)  # the stream ended as Ollama ended it
        rest = meter.finish(time.perf_counter())
        if rest:
            await response.write(rest)
        await response.write_eof()
        return response

    def _record(self, outcome: Outcome) -> None:
        m = self.metrics
        elapsed = time.perf_counter() - outcome.received
        status = outcome.status or 500
        model = outcome.model
        m.child(m.requests, model, outcome.label, str(status)).inc()
        if outcome.endpoint is None:
            return
        usage = outcome.usage
        if outcome.prompt is not None:
            self.prompts.finish(outcome.prompt, status, "".join(usage.text), outcome.error or usage.error, elapsed)
        error_type = outcome.error_type or (str(status) if status >= 400 else (
            "stream_error" if usage.error else ""))
        m.child(m.operation_duration, model, outcome.endpoint.operation, error_type).observe(elapsed)
        input_tokens, output_tokens = usage.input_tokens or 0, usage.output_tokens or 0
        if usage.input_tokens is not None:
            m.child(m.input_tokens, model).inc(input_tokens)
            m.child(m.token_usage, model, "input").observe(input_tokens)
        if usage.output_tokens is not None:
            m.child(m.output_tokens, model).inc(output_tokens)
            m.child(m.token_usage, model, "output").observe(output_tokens)
        generation = usage.generation_seconds
        ttft = usage.first_content_at - outcome.received if usage.first_content_at is not None else None
        if generation is None and ttft is not None and usage.output_tokens:  # /v1 reports no durations
            generation = max(0.0, elapsed - ttft)
        if generation is not None:
            m.child(m.generation_seconds, model).inc(generation)
            if output_tokens > 1:
                m.child(m.time_per_output_token, model).observe(generation / output_tokens)
        if ttft is not None:
            m.child(m.time_to_first_token, model).observe(ttft)
        if outcome.compression_ratio is not None:
            m.child(m.compression, model).observe(outcome.compression_ratio)
        charge = self.cost.charge(model, input_tokens, output_tokens, usage.total_seconds or elapsed)
        if charge.cost:
            m.child(m.cost, model, self.cost.currency).inc(charge.cost)
        if charge.energy_joules:
            m.child(m.energy, model).inc(charge.energy_joules)
        tokens_per_second = output_tokens / generation if generation and output_tokens else None
        if self.tracing is not None:
            self.tracing.record(f"{outcome.endpoint.operation} {model}", int(outcome.at.timestamp() * 1e9),
                                time.time_ns(), {
                                    "gen_ai.operation.name": outcome.endpoint.operation,
                                    "gen_ai.provider.name": "ollama", "gen_ai.system": "ollama",
                                    "gen_ai.request.model": model,
                                    "gen_ai.usage.input_tokens": usage.input_tokens,
                                    "gen_ai.usage.output_tokens": usage.output_tokens,
                                    "server.address": self._server[0], "server.port": self._server[1],
                                    "http.response.status_code": status, "error.type": error_type or None,
                                }, outcome.error or usage.error)
        if self.rollup is not None and status < 400:
            self.rollup.observe(model, at=outcome.at, output_tokens=output_tokens,
                                generation_seconds=generation or 0.0, cost=charge.cost,
                                currency=self.cost.currency, compression_ratio=outcome.compression_ratio)
        if self.submit_history is not None:
            self.submit_history("requests", {
                "id": uuid.uuid4(), "at": outcome.at, "model": model, "endpoint": outcome.label,
                "status": status,
                "client_hash": hashlib.sha256(outcome.client.encode()).hexdigest() if outcome.client else None,
                "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "ttft_seconds": ttft, "duration_seconds": elapsed, "tokens_per_second": tokens_per_second,
                "cost": charge.cost, "currency": self.cost.currency, "energy_joules": charge.energy_joules,
                "compression_ratio": outcome.compression_ratio, "cache_hit": outcome.cache_hit,
                "prompt_hash": outcome.prompt_hash, "prompt_text": outcome.prompt_text,
                "response_text": "".join(usage.text) if self.config.history.store_text and usage.text else None,
                "error": outcome.error or usage.error,
            })


def _settle(permit: Any, outcome: Outcome) -> None:
    """Upstream failures (connection, timeout, 5xx, a broken stream) count against the model's breaker;
    the client's own mistakes (4xx) and a client that went away do not."""
    status = outcome.status
    if outcome.error_type in ("client_closed",) or 400 <= status < 500:
        permit.record_ignored()
    elif status >= 500 or status == 0 or outcome.error_type in ("timeout", "upstream_reset", "connection_error"):
        permit.record(success=False)
    else:
        permit.record(success=True)


async def _drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.popall("Server", None)
