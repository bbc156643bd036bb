"""What the gateway takes from a client's request and what it passes on to Ollama.

The body: at most ``gateway.max_body_bytes``, decoded from its ``Content-Encoding`` (gzip, deflate; Ollama reads
bodies as they are, so the gateway forwards them decoded), and read as JSON without letting a deeply nested one
exhaust the stack. What cannot be read is a ``Refused`` (400, 413 or 415), never an exception.
The headers: hop-by-hop ones dropped, and the client's ``Authorization`` and ``X-API-Key``, which are the
gateway's (its API keys), never Ollama's; ``upstream.headers`` added for what Ollama's side needs.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from singularity_ops.http_headers import HOP_BY_HOP

# Also never forwarded: the client's credentials for the gateway, and an encoding the gateway has undone.
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "x-api-key", "content-encoding", "expect"}
ACCEPTED_ENCODINGS = ("gzip", "deflate", "identity")
# Deeper JSON than this is refused before anything walks it (Python's own limit is ~1,000 levels, shared with
# the call stack); Ollama's requests nest a handful of levels, a JSON schema in `format` a few dozen.
MAX_JSON_DEPTH = 256


class Refused(Exception):
    """An answer the gateway gives itself, in Ollama's shape, instead of forwarding the request."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # the singularity_gateway_rejected_requests_total label
        self.message = message
        self.headers = headers or {}


async def read_body(request: web.Request, limit: int) -> bytes:
    """The decoded body, or a Refused: 413 over ``limit`` (raw or decoded), 400 undecodable, 415 unknown coding."""
    codings = [c.strip().lower() for c in request.headers.get("Content-Encoding", "").split(",") if c.strip()]
    unknown = [c for c in codings if c not in ACCEPTED_ENCODINGS]
    if unknown:
        raise Refused(415, "unsupported_encoding",
                      f"Content-Encoding {unknown[0]!r} is not accepted; send the body as it is, or gzip or deflate",
                      {"Accept-Encoding": ", ".join(ACCEPTED_ENCODINGS[:2])})
    raw = await _read_raw(request, limit)
    for coding in reversed(codings):  # the last one applied is undone first
        if coding != "identity":
            raw = _decode(raw, coding, limit)
    return raw


def too_large(limit: int) -> Refused:
    return Refused(413, "body_too_large", f"request body too large: the gateway accepts at most {limit} bytes "
                                          "(gateway.max_body_bytes)")


async def _read_raw(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    body = bytearray()  # counted as it comes: a chunked upload has no Content-Length
    try:
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise too_large(limit)
    except web.RequestPayloadError:  # chunked framing the parser rejected mid-body
        raise Refused(400, "bad_body", "the request body is malformed (chunked transfer encoding)") from None
    return bytes(body)


def _decode(data: bytes, coding: str, limit: int) -> bytes:
    # gzip: its own header; deflate: zlib-wrapped as the RFC says, or raw as some clients send it.
    for wbits in ((16 + zlib.MAX_WBITS,) if coding == "gzip" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)):
        decoder = zlib.decompressobj(wbits)
        try:
            out = decoder.decompress(data, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise too_large(limit)
        if decoder.eof and not decoder.unused_data:
            return out
    raise Refused(400, "bad_encoding", f"the request body is not valid {coding} data (Content-Encoding: {coding})")


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object; None for anything else (Ollama answers that itself, in its own words);
    a Refused for JSON nested too deeply to read safely."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    except RecursionError:
        payload = None
        deep = True
    else:  # fewer brackets than the limit cannot nest deeper (a count in C; the walk is ~1 us per container)
        deep = body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _deeper_than(payload, MAX_JSON_DEPTH)
    if deep:
        raise Refused(400, "bad_json", f"invalid request body: JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return payload if isinstance(payload, dict) else None


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)] if isinstance(value, dict | list) else []  # no recursion: that is what is guarded against
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def forwarded_headers(headers: Mapping[str, str], upstream: Mapping[str, str]) -> dict[str, str]:
    """What Ollama receives: the client's headers less NOT_FORWARDED, then ``upstream.headers`` over them."""
    kept = {k: v for k, v in headers.items() if k.lower() not in NOT_FORWARDED}
    if upstream:
        lowered = {name.lower() for name in upstream}
        kept = {k: v for k, v in kept.items() if k.lower() not in lowered}
        kept.update(upstream)
    return kept
