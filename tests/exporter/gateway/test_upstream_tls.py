"""Ollama behind https: the gateway and the collectors verify its certificate with singularity_ops/tls.py's context,
not with aiohttp's import-time one (which the exporter builds without CAs), and say so when it does not verify."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.standins.tls import Certificates, make_certificates

MODEL = "llama3.2:3b"
pytestmark = pytest.mark.usefixtures("fresh_tls")  # tests/conftest.py


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
def ollama(certificates) -> Iterator:
    """The stand-in on https, with a certificate from a CA only SSL_CERT_FILE can make trusted."""
    from tests.standins.models import REAL_MODELS
    from tests.standins.ollama import OllamaStandIn

    with OllamaStandIn(models=[REAL_MODELS[MODEL]], tls=certificates.server_context()) as standin:
        yield standin


def test_an_https_ollama_whose_ca_is_trusted_is_proxied_and_scraped(make_gateway, ollama, certificates,
                                                                     monkeypatch) -> None:
    # aiohttp's own default context in this process was built before the CA existed: a pass here means the
    # gateway's connector took tls.client_context, built once SSL_CERT_FILE named the CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    assert ollama.url.startswith("https://")
    gateway = make_gateway()
    answer = httpx.post(gateway.gateway_url + "/api/generate",
                        json={"model": MODEL, "prompt": "why is the sky blue?", "stream": False}, timeout=30)
    assert answer.status_code == 200 and answer.json()["done"] is True
    assert gateway.value("ollama_up") == 1  # the collectors' http.client took the same context


def test_an_https_ollama_with_an_untrusted_certificate_is_refused_with_the_reason(make_gateway, ollama) -> None:
    gateway = make_gateway()
    answer = httpx.post(gateway.gateway_url + "/api/generate",
                        json={"model": MODEL, "prompt": "why is the sky blue?", "stream": False}, timeout=30)
    assert answer.status_code == 502
    assert "certificate verify failed" in answer.json()["error"]
    assert ollama.calls["/api/generate"] == 0
    assert gateway.value("ollama_up") == 0
