"""OLLAMA_HOST is read the way Ollama itself reads it (envconfig.Host)."""

import pytest

from singularity_ops.ollama_host import parse_ollama_host


@pytest.mark.parametrize(("given", "expected"), [
    ("", "http://127.0.0.1:11434"),
    ("127.0.0.1:11434", "http://127.0.0.1:11434"),
    ("0.0.0.0", "http://0.0.0.0:11434"),
    (":8080", "http://127.0.0.1:8080"),
    ("example.com", "http://example.com:11434"),
    ("http://example.com", "http://example.com:80"),
    ("https://example.com", "https://example.com:443"),
    ("https://example.com:8443/ollama/", "https://example.com:8443/ollama"),
    ("[::1]:11434", "http://[::1]:11434"),
    ("::1", "http://[::1]:11434"),
    ("  localhost:1234 ", "http://localhost:1234"),
])
def test_accepts_every_form_ollama_accepts(given: str, expected: str) -> None:
    assert parse_ollama_host(given) == expected


@pytest.mark.parametrize("given", ["ftp://host", "host:99999", "host:port"])
def test_rejects_what_cannot_work(given: str) -> None:
    with pytest.raises(ValueError):
        parse_ollama_host(given)
