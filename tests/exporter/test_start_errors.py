"""How an exporter that cannot start says so: one line naming the cause, never a traceback, and never the
misleading "No module named 'uvloop'" chained to an unrelated error."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from singularity_ops.cli.main import main
from tests.conftest import free_port
from tests.helpers import wait_for

CLI = [sys.executable, "-m", "singularity_ops.cli"]


def environment(home: Path, database_url: str, ollama_host: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SINGULARITY_", "OLLAMA_"))}
    return {**base, "SINGULARITY_HOME": str(home), "SINGULARITY_DATABASE_URL": database_url,
            "OLLAMA_HOST": ollama_host}


@pytest.mark.slow
def test_a_second_exporter_on_the_same_home_is_one_line(tmp_path: Path, database_url: str, ollama) -> None:
    env = environment(tmp_path, database_url, ollama.host)
    metrics, gateway = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    first = subprocess.Popen([*CLI, "exporter", "--metrics-listen", metrics, "--gateway-listen", gateway], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _healthy(f"http://{metrics}/healthz"), timeout=60, what="the first exporter")
        for where in ([metrics, gateway], [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]):
            second = subprocess.run([*CLI, "exporter", "--metrics-listen", where[0], "--gateway-listen", where[1]],
                                    env=env, capture_output=True, text=True, timeout=60)
            assert second.returncode == 2
            assert "Traceback" not in second.stderr
            last = second.stderr.strip().splitlines()[-1]
            assert last.startswith("singularity-ops exporter: error: ") and f"home {tmp_path}" in last
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_an_error_while_serving_is_not_chained_to_uvloops_absence(tmp_path: Path, monkeypatch, ollama) -> None:
    from singularity_ops.exporter import app

    async def broken(exporter: app.Exporter) -> None:
        raise RuntimeError("broken while serving")

    monkeypatch.setattr(app, "serve", broken)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # main() sets up logging for a process of its own
    monkeypatch.setattr(root, "level", root.level)
    for variable, value in environment(tmp_path, f"postgresql://x@127.0.0.1:{free_port()}/x", ollama.host).items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(RuntimeError, match="broken while serving") as raised:
        main(["exporter", "--metrics-listen", f"127.0.0.1:{free_port()}",
              "--gateway-listen", f"127.0.0.1:{free_port()}"])
    assert raised.value.__context__ is None and raised.value.__cause__ is None
