"""Admin routes, key scopes and the loopback rule in the running gateway, in front of the Ollama stand-in; the
refusal to serve beyond loopback without keys, as a user meets it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from singularity_ops.config import load_config
from singularity_ops.errors import ConfigError
from singularity_ops.exporter.app import Exporter
from singularity_ops.exporter.gateway.guard.keys import ADMIN, INFERENCE, new_key_line
from tests.conftest import free_port

BLOB = "/api/blobs/sha256:" + "a" * 64


def call(gateway, method: str, path: str, key: str | None = None, **headers: str) -> httpx.Response:
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(method, gateway.gateway_url + path, headers=headers, timeout=30,
                         json={"model": "llama3.2:3b", "prompt": "hi", "stream": False})


def test_admin_routes_answer_by_the_scope_of_the_key(make_gateway, ollama, database_url: str, tmp_path: Path) -> None:
    chat, chat_line = new_key_line("chat")
    ops, ops_line = new_key_line("ops", (INFERENCE, ADMIN))
    (tmp_path / "keys").write_text(f"{chat_line}\n{ops_line}\n")
    gateway = make_gateway(with_history=True, **{"gateway.api_keys_file": str(tmp_path / "keys"),
                                                 "database.url": database_url, "home": str(tmp_path),
                                                 "gateway.admin_from_loopback": "false"})  # as if reached remotely
    for method, path in (("POST", "/api/pull"), ("DELETE", "/api/delete"), ("POST", BLOB), ("POST", "/api/create")):
        refused = call(gateway, method, path, chat)
        assert refused.status_code == 403, path
        assert refused.headers["Content-Type"].startswith("application/json")
        assert "needs an API key with scope admin" in refused.json()["error"]
    assert sum(ollama.calls[p] for p in ("/api/pull", "/api/delete", BLOB, "/api/create")) == 0  # never forwarded
    assert call(gateway, "POST", "/api/generate", chat).status_code == 200
    passed = call(gateway, "POST", "/api/pull", ops)
    assert passed.status_code != 403 and ollama.calls["/api/pull"] == 1  # the stand-in has no /api/pull: its 404
    assert gateway.value("singularity_gateway_rejected_requests_total", '{reason="insufficient_scope"}') == 4
    assert gateway.value("singularity_security_events_total", '{action="block",kind="admin"}') == 4
    assert gateway.value("singularity_security_events_total", '{action="allow",kind="admin"}') == 1
    assert gateway.exporter.gateway.history.flush(timeout=20)
    with psycopg.connect(database_url) as conn:
        audit = conn.execute("SELECT client, action, reason FROM security_events WHERE kind = 'admin' "
                             "ORDER BY at").fetchall()
    assert [(client, action) for client, action, _ in audit] == [("chat", "block")] * 4 + [("ops", "allow")]
    assert audit[-1][2] == "admin route /api/pull: key 'ops' has scope admin, from 127.0.0.1"


def test_on_a_loopback_gateway_this_machine_may_pull_but_a_request_a_proxy_forwarded_may_not(
        make_gateway, ollama, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "singularity_ops")
    gateway = make_gateway()  # loopback, no keys, loopback exempt: the defaults
    assert call(gateway, "POST", "/api/pull").status_code != 403 and ollama.calls["/api/pull"] == 1
    forwarded = call(gateway, "POST", "/api/pull", **{"X-Forwarded-For": "198.51.100.4"})
    assert forwarded.status_code == 403 and ollama.calls["/api/pull"] == 1
    assert call(gateway, "POST", "/api/generate", Forwarded="for=198.51.100.5").status_code == 200
    assert gateway.value("singularity_untrusted_forwarded_requests_total") == 2
    warnings = [r.getMessage() for r in caplog.records if "X-Forwarded-For or Forwarded" in r.getMessage()]
    assert len(warnings) == 1 and "gateway.trusted_proxies" in warnings[0]


def test_the_exporter_refuses_to_build_a_gateway_beyond_loopback_without_keys(clean_env) -> None:
    config = load_config(environ={}, flags={"gateway.listen": f"0.0.0.0:{free_port()}"})
    with pytest.raises(ConfigError, match=r"gateway\.allow_unauthenticated: true"):
        Exporter.build(config, with_database=False, with_gateway=True)
    allowed = load_config(environ={}, flags={"gateway.listen": f"0.0.0.0:{free_port()}",
                                             "gateway.allow_unauthenticated": "true"})
    Exporter.build(allowed, with_database=False, with_gateway=True).close()


def test_the_command_refuses_at_once_in_one_line_naming_the_setting(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SINGULARITY_", "OLLAMA_"))}
    result = subprocess.run(
        [sys.executable, "-m", "singularity_ops.cli", "exporter", "--gateway-listen", f"0.0.0.0:{port}",
         "--metrics-listen", f"127.0.0.1:{free_port()}"],
        env={**env, "SINGULARITY_HOME": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"singularity-ops exporter: error: refusing to serve the gateway on 0.0.0.0:{port} "
                           f"without API keys")
    assert "gateway.allow_unauthenticated: true" in line
    assert not any(tmp_path.iterdir())  # refused before the embedded database was made
