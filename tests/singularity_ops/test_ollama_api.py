"""Every call to OLLAMA_HOST carries ``upstream.headers``, not only the gateway's: an Ollama behind an auth proxy is
described by the collectors and driven by the controllers as well as it is proxied."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from singularity_ops.config import load_config
from singularity_ops.controllers.validator.ollama import ValidatorClient
from singularity_ops.errors import OllamaError
from singularity_ops.exporter.app import Exporter
from singularity_ops.ollama_api import client_for
from tests.exporter.gateway.recording import RecordingOllama, recording_ollama

TOKEN = "Bearer proxy-token-7f3"


@pytest.fixture
def ollama() -> Iterator[RecordingOllama]:
    yield from recording_ollama()


def config_for(ollama: RecordingOllama, **flags: object):
    return load_config(flags={"upstream.headers": {"Authorization": TOKEN, "X-Tenant": "blue"}, **flags},
                       environ={"OLLAMA_HOST": ollama.host})


def test_the_client_sends_upstream_headers_and_never_shows_them(ollama: RecordingOllama) -> None:
    with client_for(config_for(ollama)) as client:
        assert [m.name for m in client.installed()]
        assert TOKEN not in repr(client)
        with pytest.raises(OllamaError) as raised:
            client.show("no-such-model:latest")
    assert TOKEN not in str(raised.value)
    for headers in ollama.headers_of("/api/tags") + ollama.headers_of("/api/show"):
        assert headers["Authorization"] == TOKEN and headers["X-Tenant"] == "blue"


def test_a_subclass_and_its_own_timeout_keep_the_headers(ollama: RecordingOllama) -> None:
    with client_for(config_for(ollama), 7.5, ValidatorClient) as client:
        assert isinstance(client, ValidatorClient) and client._timeout == 7.5
        client.capabilities("llama3.2:3b")
    assert ollama.headers_of("/api/show")[-1]["Authorization"] == TOKEN


def test_the_exporters_collectors_reach_ollama_with_them(ollama: RecordingOllama) -> None:
    exporter = Exporter.build(config_for(ollama), with_database=False)
    try:
        exporter.render()
    finally:
        exporter.close()
    for path in ("/api/tags", "/api/ps"):
        reached = ollama.headers_of(path)
        assert reached and all(headers["Authorization"] == TOKEN for headers in reached), path


def test_without_upstream_headers_nothing_extra_is_sent(ollama: RecordingOllama) -> None:
    with client_for(load_config(environ={"OLLAMA_HOST": ollama.host})) as client:
        client.loaded()
    assert "Authorization" not in ollama.headers_of("/api/ps")[-1]
