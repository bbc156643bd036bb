"""Whatever arrives on the wire, the gateway answers it itself with a JSON 4xx or passes on Ollama's answer: never
a 5xx of its own, never a traceback in its log, never a ``Server`` header.

Requests are written byte by byte on a socket (methods, paths, headers, bodies and encodings no HTTP library would
send), against the Ollama stand-in, which records the status it gave each one: a 5xx is Ollama's only if the
stand-in gave it.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import zlib

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.exporter.gateway.recording import MARK, recording_ollama
from tests.helpers import wait_for

MODEL = "llama3.2:3b"
CASE = "@CASE@"  # the value of MARK in a drawn request, numbered when sent


@pytest.fixture
def ollama():
    yield from recording_ollama()


def exchange(address: tuple[str, int], raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw``, read until the server closes: (status, headers, body); status 0 when nothing came back."""
    with socket.create_connection(address, timeout=15) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    while received.startswith(b"HTTP/1.1 100 "):  # an interim answer to Expect: 100-continue
        received = received.partition(b"\r\n\r\n")[2]
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return 0, {}, received
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return int(lines[0].split()[1]), headers, body


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        length = int(size.split(b";")[0], 16)
        if length == 0:
            break
        out, data = out + rest[:length], rest[length + 2:]
    return out


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


INFERENCE = ["/api/generate", "/api/chat", "/api/embed", "/v1/chat/completions"]  # the paths the gateway reads
PATHS = ["/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/v1/chat/completions", "/v1/completions",
         "/v1/embeddings", "/api/show", "/api/tags", "/api/ps", "/api/version", "/", "/api/pull", "/api/delete",
         "/api/blobs/sha256:00", "/v1/models", "/api/../api/tags", "//api/chat", "/api/chat%00", "/nope"]
JSON_KEYS = ["model", "prompt", "messages", "stream", "options", "keep_alive", "input", "stream_options", "format",
             "tools", "system", "raw"]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=20) | st.sampled_from([MODEL, "other", ""]),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=8)
payloads = st.dictionaries(st.sampled_from(JSON_KEYS), json_values, max_size=5).map(lambda d: json.dumps(d).encode())
def nesting(depth: int, opener: str = "[") -> bytes:
    return (opener * depth).encode() + b"1" + (b"]" if opener == "[" else b"}") * depth


nested = st.tuples(st.sampled_from([50000, 2000, 300, 100]), st.sampled_from(["[", '{"a":'])).map(
    lambda t: nesting(*t))
bodies = st.one_of(nested, st.just(b""), st.binary(max_size=300), payloads, payloads,
                   st.just(json.dumps({"model": MODEL, "prompt": "hi", "stream": False}).encode()))
encodings = st.one_of(st.none(), st.sampled_from(["gzip", "deflate", "identity", "br", "zstd", "compress", "bogus",
                                                  "gzip, gzip", "GZIP", "gzip, br", ""]))
header_names = st.one_of(st.sampled_from(["Content-Type", "Accept", "Authorization", "X-API-Key", "User-Agent",
                                          "X-Forwarded-For", "Forwarded", "Cookie", "Accept-Encoding", "Expect",
                                          "X-Request-Id", "Origin", "Range", "If-None-Match"]),
                         st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True))
header_values = st.one_of(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                                  max_size=60),
                          st.sampled_from(["application/json", "Bearer x", "100-continue", "text/html", "*/*"]))
long_value = st.integers(8000, 9000).map(lambda n: "a" * n)  # over aiohttp's 8190-byte line: 431


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    odd = draw(st.integers(0, 9)) == 9  # now and then a method or path aiohttp's parser refuses (400 from it)
    if draw(st.booleans()):  # half the time what the gateway reads itself: a POST to an inference path
        method, path = "POST", draw(st.sampled_from(INFERENCE))
    else:
        method = draw(st.from_regex(r"[A-Z]{1,12}", fullmatch=True) if odd else st.sampled_from(
            ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]))
        path = draw(st.sampled_from(PATHS))
    path += draw(st.sampled_from(["#frag", "/ /"] if odd else ["", "", "?", "?a=1&b=%ZZ", "/x", "?" + "q" * 50]))
    body = draw(bodies)
    encoding = draw(encodings)
    if encoding and draw(st.booleans()):  # honestly encoded, or a body that does not match its Content-Encoding
        for coding in reversed([c.strip().lower() for c in encoding.split(",")]):
            body = gzip.compress(body) if coding == "gzip" else zlib.compress(body) if coding == "deflate" else body
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=6))
    if draw(st.integers(0, 19)) == 19:
        headers.append((draw(header_names), draw(long_value)))
    if encoding is not None:
        headers.append(("Content-Encoding", encoding))
    head = [f"{method} {path} HTTP/1.1", "Host: gateway", "Connection: close", f"{MARK}: {CASE}"]
    head += [f"{name}: {value}" for name, value in headers if name.lower() not in ("content-length", "connection")]
    framing = draw(st.sampled_from(["length", "chunked", "none"]) if body else st.just("length"))
    if framing == "chunked":
        head.append("Transfer-Encoding: chunked")
        payload = chunked(body, draw(st.integers(1, 64)))
    elif framing == "length":
        head.append(f"Content-Length: {len(body)}")
        payload = body
    else:
        payload = b""
    raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload
    if draw(st.integers(0, 19)) == 19:  # now and then not HTTP at all, or a broken request line
        raw = draw(st.sampled_from([b"\x16\x03\x01\x02\x00\x01\x00", b"GET /\r\n", b"GET / HTTP/9.9",
                                    b"POST /api/chat HTTP/1.1 extra", b"\xff\xfe / HTTP/1.1"])) + b"\r\n\r\n"
    return raw


def request(path: str, body: bytes = b"", *headers: str, method: str = "POST") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: gateway", "Connection: close", f"{MARK}: {CASE}", *headers,
            f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


CASES = iter(range(10**9))
VALID = json.dumps({"model": MODEL, "prompt": "hi", "stream": False}).encode()


# The cases issue 15 found, always tried; then whatever hypothesis makes up.
@example(raw=request("/api/chat", nesting(5000)))
@example(raw=request("/api/generate", nesting(3000, '{"a":')))
@example(raw=request("/api/generate", b"not gzip", "Content-Encoding: gzip"))
@example(raw=request("/api/chat", gzip.compress(VALID)[:-8], "Content-Encoding: gzip"))
@example(raw=request("/api/generate", b"not brotli", "Content-Encoding: br"))
@example(raw=request("/api/generate", VALID, "Content-Encoding: bogus"))
@example(raw=request("/api/generate", gzip.compress(VALID), "Content-Encoding: gzip"))
@example(raw=request("/api/tags", b"", "X-Long: " + "a" * 9000, method="GET"))
@example(raw=b"GARBAGE<script> / HTTP/1.1\r\n\r\n")
@example(raw=request("/api/generate", VALID, "Expect: \xe9t\xe9"))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(raw=requests())
def test_nothing_the_gateway_answers_itself_is_a_5xx_and_nothing_it_logs_is_a_traceback(
        gateway, ollama, caplog: pytest.LogCaptureFixture, raw: bytes) -> None:
    caplog.set_level(logging.WARNING)
    logged_before = len(caplog.records)  # caplog lives as long as the test, across hypothesis' examples
    case = str(next(CASES))
    raw = raw.replace(CASE.encode(), case.encode(), 1)
    host, port = gateway.exporter.config.gateway.listen.split(":")
    status, headers, body = exchange((host, int(port)), raw)
    assert status, f"no answer to {raw[:200]!r}"
    assert "server" not in headers
    from_ollama = wait_for(lambda: ollama.answered.get(case), timeout=5) if case in ollama.seen else None
    event(f"{status} from {'Ollama' if from_ollama else 'the gateway'}")  # --hypothesis-show-statistics
    if from_ollama is None:  # the gateway's own answer
        assert status < 500, (raw[:300], status, body[:300])
        if status >= 400 and not raw.startswith(b"HEAD "):
            assert json.loads(body)["error"], body
    else:
        assert status == from_ollama
    tracebacks = [r for r in caplog.records[logged_before:] if r.name.startswith(("singularity_ops", "asyncio"))
                  and (r.exc_info or "Traceback" in r.getMessage())]
    assert not tracebacks, tracebacks[0].getMessage()
