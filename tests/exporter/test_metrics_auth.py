"""``metrics.auth``: /metrics and the exporter's own routes need what a Prometheus scrape config sends (a bearer
token, or basic auth); /healthz stays open; an open /metrics beyond loopback is a warning at start."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from singularity_ops.cli.main import main
from singularity_ops.config import load_config
from singularity_ops.errors import ConfigError
from singularity_ops.exporter.app import Exporter
from tests.conftest import DEFAULT_MODELS, free_port
from tests.helpers import Running
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

TOKEN = "scrape-token-123"


@pytest.fixture
def serve(clean_env) -> Iterator[Callable[..., Running]]:
    with ExitStack() as stack:
        ollama = stack.enter_context(OllamaStandIn(models=[REAL_MODELS[name] for name in DEFAULT_MODELS]))

        def start(metrics_host: str = "127.0.0.1", **flags: Any) -> Running:
            config = load_config(flags={"gateway.listen": f"127.0.0.1:{free_port()}",
                                        "exporter.metrics_listen": f"{metrics_host}:{free_port()}", **flags},
                                 environ={"OLLAMA_HOST": ollama.host})
            running = Running(Exporter.build(config, with_database=False, with_gateway=True))
            running.url = running.url.replace("0.0.0.0", "127.0.0.1")
            return stack.enter_context(running)

        yield start


@pytest.mark.parametrize("path", ["/metrics", "/breakers", "/"])
def test_a_bearer_token_guards_metrics_and_the_exporters_own_routes(serve, path: str) -> None:
    running = serve(**{"metrics.auth.bearer_token": TOKEN})
    refused = httpx.get(running.url + path)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="singularity-ops"'
    assert "metrics.auth" in refused.json()["error"]
    assert httpx.get(running.url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(running.url + path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(running.url + "/healthz").status_code == 200  # liveness probes need no credentials


def test_basic_auth_as_prometheus_sends_it(serve) -> None:
    running = serve(**{"metrics.auth.username": "prometheus", "metrics.auth.password": "s3cret"})
    assert httpx.get(running.url + "/metrics").status_code == 401
    assert httpx.get(running.url + "/metrics", auth=("prometheus", "wrong")).status_code == 401
    assert httpx.get(running.url + "/metrics", auth=("other", "s3cret")).status_code == 401
    reply = httpx.get(running.url + "/metrics", auth=("prometheus", "s3cret"))
    assert reply.status_code == 200 and "ollama_up" in reply.text


def test_without_auth_everything_is_open_as_before(serve) -> None:
    running = serve()
    assert httpx.get(running.url + "/metrics").status_code == 200
    assert httpx.get(running.url + "/breakers").status_code == 200


def test_half_a_basic_auth_is_a_config_error_naming_the_missing_key(clean_env) -> None:
    config = load_config(flags={"metrics.auth.username": "prometheus"}, environ={})
    with pytest.raises(ConfigError, match=r"set metrics\.auth\.password"):
        Exporter.build(config, with_database=False)


def test_the_secrets_never_show(clean_env) -> None:
    config = load_config(flags={"metrics.auth.bearer_token": TOKEN, "metrics.auth.password": "s3cret",
                                "metrics.auth.username": "u"}, environ={})
    assert TOKEN not in repr(config) and "s3cret" not in repr(config)


def test_an_open_metrics_listener_beyond_loopback_is_a_warning(serve, caplog) -> None:
    caplog.set_level(logging.WARNING)
    serve(metrics_host="0.0.0.0")
    warnings = [r.getMessage() for r in caplog.records if "readable by anyone" in r.getMessage()]
    assert len(warnings) == 1 and "set metrics.auth" in warnings[0]


def test_a_guarded_metrics_listener_beyond_loopback_is_not(serve, caplog) -> None:
    caplog.set_level(logging.WARNING)
    serve(metrics_host="0.0.0.0", **{"metrics.auth.bearer_token": TOKEN})
    assert not [r for r in caplog.records if "readable by anyone" in r.getMessage()]


def test_the_breakers_command_sends_the_credentials(serve, tmp_path: Path, monkeypatch, capsys) -> None:
    running = serve(**{"metrics.auth.bearer_token": TOKEN})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"metrics:\n  auth:\n    bearer_token: {TOKEN}\n")
    listen = running.exporter.config.exporter.metrics_listen
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # main() sets up logging for a process of its own
    monkeypatch.setattr(root, "level", root.level)
    assert main(["breakers", "--json", "--metrics-listen", listen, "--config", str(config_file)]) == 0
    assert json.loads(capsys.readouterr().out) == {"breakers": []}
    assert main(["breakers", "--json", "--metrics-listen", listen]) != 0  # without them: refused
    assert "401" in capsys.readouterr().err
