"""What `stack` hands to Prometheus and Alertmanager: a scrubbed environment (the secrets they need are in their
0600 config files, nothing else of ours reaches them), and ``metrics.auth`` in Prometheus' scrape config."""

from __future__ import annotations

import json
import os
import stat
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from singularity_ops.cli.stack import Stack, StackOptions
from singularity_ops.config import load_config
from singularity_ops.errors import SingularityError
from singularity_ops.exporter.app import Exporter
from tests.conftest import free_port
from tests.helpers import Running, wait_for

SECRETS = {"TELEGRAM_BOT_TOKEN": "123456:telegram-secret-token-abcdefghij", "TELEGRAM_CHAT_ID": "-1009876543210",
           "SINGULARITY_DATABASE_URL": "postgresql://u:db-password@db/x", "AWS_SECRET_ACCESS_KEY": "aws-secret",
           "SINGULARITY_BACKUP_KEY_FILE": "/keys/backup.key"}


def fake_binaries(folder: Path, dump: Path) -> None:
    """prometheus and alertmanager that write down the environment they were given, then exit."""
    folder.mkdir()
    for name in ("prometheus", "prometheus-alertmanager"):
        script = folder / name
        script.write_text(f"#!/bin/sh\nenv > {dump / name}.env\nexit 3\n")
        script.chmod(0o755)


def test_the_children_get_a_scrubbed_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 clean_env: None) -> None:
    fake_binaries(tmp_path / "bin", tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    environ = {**SECRETS, "PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8", "LC_TIME": "C",
               "TZ": "UTC", "HTTPS_PROXY": "http://proxy:3128"}
    config = load_config(flags={"home": str(tmp_path / "home")}, environ={})
    with pytest.raises(SingularityError, match="alertmanager exited with status 3"):
        Stack(config, StackOptions(alertmanager_listen=f"127.0.0.1:{free_port()}"), environ).start()
    seen = dict(line.split("=", 1) for line in (tmp_path / "prometheus-alertmanager.env").read_text().splitlines()
                if "=" in line)
    for variable, value in SECRETS.items():
        assert variable not in seen and value not in json.dumps(seen)
    for kept in ("PATH", "HOME", "LANG", "LC_TIME", "TZ", "HTTPS_PROXY"):
        assert seen[kept] == environ[kept]
    rendered = tmp_path / "home" / "stack" / "alertmanager.yml"
    assert "telegram-secret-token" in rendered.read_text()  # what Alertmanager needs, in its own 0600 file
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600


@pytest.mark.slow
def test_prometheus_scrapes_an_exporter_that_needs_a_token(tmp_path: Path, clean_env: None) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    flags = {"home": str(tmp_path), "exporter.metrics_listen": metrics, "metrics.auth.bearer_token": "scrape-me"}
    config = load_config(flags=flags, environ={})
    options = StackOptions(prometheus_listen=f"127.0.0.1:{free_port()}",
                           alertmanager_listen=f"127.0.0.1:{free_port()}", scrape_interval="1s",
                           evaluation_interval="1s")
    with Running(Exporter.build(config, with_database=False)):
        stack = Stack(config, options, {"PATH": os.environ["PATH"]}).start()
        try:
            query = urllib.parse.urlencode({"query": 'up{job="singularity"}'})

            def up() -> bool:
                with urllib.request.urlopen(f"http://{options.prometheus_listen}/api/v1/query?{query}") as reply:
                    result = json.loads(reply.read())["data"]["result"]
                return bool(result) and result[0]["value"][1] == "1"

            wait_for(up, timeout=30, interval=0.5, what="Prometheus scraping the exporter with its token")
        finally:
            stack.stop()
    rendered = yaml.safe_load((tmp_path / "stack" / "prometheus.yml").read_text())
    assert rendered["scrape_configs"][0]["authorization"] == {"type": "Bearer", "credentials": "scrape-me"}
    assert stat.S_IMODE((tmp_path / "stack" / "prometheus.yml").stat().st_mode) == 0o600
