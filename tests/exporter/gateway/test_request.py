"""What the gateway does with a client's request before Ollama sees it: a body it cannot read is a 4xx in Ollama's
shape (never a 500 or a traceback), an encoded body reaches Ollama decoded, the client's credentials stay with the
gateway, and ``upstream.headers`` are what Ollama's side gets instead."""

from __future__ import annotations

import gzip
import json
import logging
import zlib

import httpx
import pytest

from singularity_ops.config import load_config
from singularity_ops.errors import ConfigError
from singularity_ops.ollama_api import upstream_headers
from tests.exporter.gateway.recording import recording_ollama

MODEL = "llama3.2:3b"
VALID = json.dumps({"model": MODEL, "prompt": "why is the sky blue?", "stream": False}).encode()


@pytest.fixture
def ollama():
    yield from recording_ollama()


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    found = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not found, found[0].getMessage()


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_a_deeply_nested_body_is_a_400_without_a_traceback(gateway, ollama, caplog, opener: str) -> None:
    depth = 5000
    body = (opener * depth).encode() + b"1" + (b"]" if opener == "[" else b"}") * depth
    reply = httpx.post(gateway.gateway_url + "/api/chat", content=body)
    assert reply.status_code == 400
    assert "nested more than 256 levels" in reply.json()["error"]
    assert ollama.calls["/api/chat"] == 0
    assert gateway.value("singularity_gateway_rejected_requests_total", '{reason="bad_json"}') == 1
    no_tracebacks(caplog)


def test_nesting_an_ollama_request_may_have_passes(gateway, ollama) -> None:
    schema: dict = {"type": "string"}
    for _ in range(40):  # a JSON schema in `format` nests a few dozen levels at most
        schema = {"type": "object", "properties": {"x": schema}}
    reply = httpx.post(gateway.gateway_url + "/api/generate", timeout=30,
                       json={"model": MODEL, "prompt": "x", "stream": False, "format": schema})
    assert reply.status_code == 200
    assert ollama.calls["/api/generate"] == 1


@pytest.mark.parametrize(("encoding", "body", "status", "reason"), [
    ("gzip", b"this is not gzip", 400, "bad_encoding"),
    ("gzip", gzip.compress(VALID)[:-8], 400, "bad_encoding"),  # truncated
    ("gzip", gzip.compress(VALID) + b"trailing junk", 400, "bad_encoding"),
    ("deflate", b"neither is this deflate", 400, "bad_encoding"),
    ("br", b"nor brotli", 415, "unsupported_encoding"),
    ("zstd", VALID, 415, "unsupported_encoding"),
    ("bogus", VALID, 415, "unsupported_encoding"),
], ids=["gzip-garbage", "gzip-truncated", "gzip-trailing", "deflate-garbage", "br", "zstd", "bogus"])
def test_a_body_that_does_not_match_its_content_encoding_is_refused(gateway, ollama, caplog, encoding: str,
                                                                     body: bytes, status: int, reason: str) -> None:
    reply = httpx.post(gateway.gateway_url + "/api/generate", content=body, headers={"Content-Encoding": encoding})
    assert reply.status_code == status
    assert encoding in reply.json()["error"]
    if status == 415:
        assert reply.headers["Accept-Encoding"] == "gzip, deflate"  # RFC 7694: what would have been accepted
    assert ollama.calls["/api/generate"] == 0
    assert gateway.value("singularity_gateway_rejected_requests_total", f'{{reason="{reason}"}}') == 1
    no_tracebacks(caplog)


@pytest.mark.parametrize(("encoding", "encode"), [
    ("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", lambda b: zlib.compress(b)[2:-4]),
    ("gzip, deflate", lambda b: zlib.compress(gzip.compress(b))), ("identity", lambda b: b),
], ids=["gzip", "deflate", "raw-deflate", "gzip-then-deflate", "identity"])
def test_an_encoded_body_reaches_ollama_decoded(gateway, ollama, encoding: str, encode) -> None:
    reply = httpx.post(gateway.gateway_url + "/api/generate", content=encode(VALID),
                       headers={"Content-Encoding": encoding}, timeout=30)
    assert reply.status_code == 200 and reply.json()["response"]
    assert ollama.received[-1] == ("/api/generate", VALID)  # Ollama reads bodies as they are: it gets them plain
    assert "Content-Encoding" not in ollama.headers_of("/api/generate")[-1]
    assert gateway.value("llm_requests_total", f'{{endpoint="/api/generate",model="{MODEL}",status="200"}}') == 1


def test_a_body_that_decodes_beyond_the_limit_is_a_413(make_gateway, ollama) -> None:
    gateway = make_gateway(**{"gateway.max_body_bytes": 10_000})
    bomb = gzip.compress(b'{"prompt": "' + b" " * 10_000_000 + b'"}')
    assert len(bomb) < 10_000
    reply = httpx.post(gateway.gateway_url + "/api/generate", content=bomb, headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 413
    assert "at most 10000 bytes" in reply.json()["error"]
    assert ollama.calls["/api/generate"] == 0


def test_the_clients_credentials_never_reach_ollama(gateway, ollama) -> None:
    reply = httpx.post(gateway.gateway_url + "/v1/chat/completions", timeout=30, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer client-secret", "X-API-Key": "client-key", "X-Other": "kept"})
    assert reply.status_code == 200
    reached = {k.lower(): v for k, v in ollama.headers_of("/v1/chat/completions")[-1].items()}
    assert "authorization" not in reached and "x-api-key" not in reached
    assert reached["x-other"] == "kept"
    assert "client-secret" not in json.dumps(ollama.headers) and "client-key" not in json.dumps(ollama.headers)


def test_upstream_headers_are_sent_instead_and_never_shown(make_gateway, ollama, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = make_gateway(**{"upstream.headers": {"Authorization": "Bearer upstream-token", "X-Tenant": "blue"},
                              "gateway.context_budgets": {"*": 30}, "gateway.summariser_model": MODEL})
    messages = [{"role": "user", "content": f"turn {n} " + "words " * 30} for n in range(6)]
    reply = httpx.post(gateway.gateway_url + "/api/chat", timeout=30, json={
        "model": MODEL, "messages": messages, "stream": False}, headers={"Authorization": "Bearer client-secret"})
    assert reply.status_code == 200
    assert ollama.calls["/api/chat"] == 2  # the summariser's call, then the request itself
    for reached in ollama.headers_of("/api/chat"):
        assert reached["Authorization"] == "Bearer upstream-token" and reached["X-Tenant"] == "blue"
    assert "upstream-token" not in repr(gateway.exporter.config)
    assert "upstream-token" not in caplog.text and "upstream-token" not in gateway.scrape()


@pytest.mark.parametrize("name", ["Bad Name", "Content-Length", "Transfer-Encoding"])
def test_an_upstream_header_the_gateway_cannot_send_is_a_config_error(clean_env, name: str) -> None:
    with pytest.raises(ConfigError, match=f"'upstream.headers.{name}': cannot be set") as raised:
        load_config(flags={"upstream.headers": {name: "secret-value"}})
    assert "secret-value" not in str(raised.value)


def test_an_upstream_header_value_of_more_than_one_line_is_a_config_error(clean_env) -> None:
    with pytest.raises(ConfigError, match=r"'upstream\.headers\.X-Tenant': the value must be one line") as raised:
        load_config(flags={"upstream.headers": {"X-Tenant": "blue\r\nX-Injected: secret-value"}})
    assert "secret-value" not in str(raised.value)


def test_a_host_header_may_be_sent_upstream(clean_env) -> None:  # a virtual host's name behind a reverse proxy
    assert upstream_headers(load_config(flags={"upstream.headers": {"Host": "ollama.internal"}})) == {
        "Host": "ollama.internal"}
