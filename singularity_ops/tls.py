"""TLS for the exporter's outgoing connections (an https:// OLLAMA_HOST), and aiohttp imported without the two CA
stores it would build and never use.

aiohttp (3.10 and later) creates two SSL contexts when it is imported, each parsing the system's whole CA bundle
into a store of its own: 2 MB of the exporter's resident memory (bench/scrape.py), spent even when Ollama is
http://127.0.0.1. ``import_aiohttp`` hides the bundle file from OpenSSL for that import alone (SSL_CERT_FILE names an
empty file, then is put back as it was), so those stores stay empty. The exporter never uses them: its clients (the
gateway's session, the collectors' ``OllamaClient``) connect with ``client_context``, one verifying context built
on the first https connection, from the system's CAs or the user's SSL_CERT_FILE / SSL_CERT_DIR as usual."""

from __future__ import annotations

import functools
import os
import ssl
import sys


@functools.cache
def client_context() -> ssl.SSLContext:
    """The context every outgoing https connection uses: the system CAs (or SSL_CERT_FILE / SSL_CERT_DIR), the
    certificate and the host name checked."""
    return ssl.create_default_context()


def for_url(url: str) -> ssl.SSLContext | bool:
    """What aiohttp's ``ssl=`` takes for a connector to ``url``: ``client_context`` for https, else the default."""
    return client_context() if url.lower().startswith("https://") else True


def import_aiohttp() -> bool:
    """Import aiohttp with its import-time CA stores left empty; False when it was imported already. Call it before
    any thread starts: it changes an environment variable for the import's duration."""
    if "aiohttp" in sys.modules:
        return False
    users = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = os.devnull
    try:
        import aiohttp  # noqa: F401
    finally:
        if users is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = users
    return True
