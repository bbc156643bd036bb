"""Outgoing TLS: aiohttp's import-time CA stores stay empty in the exporter, and the one context it does use
verifies certificates against the system's CAs (or the user's SSL_CERT_FILE)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from singularity_ops import tls
from tests.standins.tls import make_certificates

REPORT = """
import json, os, sys
from singularity_ops.tls import import_aiohttp
imported = import_aiohttp() if sys.argv[1] == "lean" else None
import aiohttp.connector as connector
print(json.dumps({"imported": imported, "cas": connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
                  "env": os.environ.get("SSL_CERT_FILE")}))
"""


def aiohttp_in_a_fresh_interpreter(how: str, **environ: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    result = subprocess.run([sys.executable, "-c", REPORT, how], capture_output=True, text=True, check=True,
                            env={**env, **environ}, timeout=60)
    return json.loads(result.stdout)


def test_aiohttp_imported_for_the_exporter_holds_no_ca_store_and_leaves_the_environment_as_it_was() -> None:
    plain = aiohttp_in_a_fresh_interpreter("plain")
    if plain["cas"] == 0:
        pytest.skip("this machine's default CA bundle is empty: nothing to leave out")
    lean = aiohttp_in_a_fresh_interpreter("lean")
    assert lean == {"imported": True, "cas": 0, "env": None}


def test_a_users_own_ssl_cert_file_is_put_back_after_the_import(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path)
    assert aiohttp_in_a_fresh_interpreter("plain", SSL_CERT_FILE=str(certificates.ca_file))["cas"] == 1
    report = aiohttp_in_a_fresh_interpreter("lean", SSL_CERT_FILE=str(certificates.ca_file))
    assert report == {"imported": True, "cas": 0, "env": str(certificates.ca_file)}


def test_import_aiohttp_does_nothing_once_aiohttp_is_loaded() -> None:
    import aiohttp  # noqa: F401

    before = os.environ.get("SSL_CERT_FILE")
    assert tls.import_aiohttp() is False
    assert os.environ.get("SSL_CERT_FILE") == before


def test_the_client_context_verifies_certificates_and_host_names(fresh_tls) -> None:
    context = tls.client_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert tls.client_context() is context  # built once, shared by every client
    assert tls.for_url("https://ollama.example:443") is context
    assert tls.for_url("HTTPS://ollama.example") is context
    assert tls.for_url("http://127.0.0.1:11434") is True  # aiohttp's default; no context built for plain http


def test_the_client_context_trusts_what_ssl_cert_file_names(tmp_path: Path, monkeypatch, fresh_tls) -> None:
    certificates = make_certificates(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    assert tls.client_context().cert_store_stats()["x509_ca"] == 1
