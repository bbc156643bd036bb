"""`singularity-ops stack` and the alert path end to end: Ollama fails → one Telegram message; back → resolved."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn
from tests.standins.telegram import TelegramStandIn

CLI = [sys.executable, "-m", "singularity_ops.cli"]
MODEL = "llama3.2:3b"


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SINGULARITY_", "OLLAMA_", "TELEGRAM_"))}
    return {**env, "SINGULARITY_HOME": str(home)}


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} not ready")


def stop(process: subprocess.Popen) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    return stdout or "", stderr or ""


def test_a_missing_binary_is_a_one_line_error_naming_the_package(tmp_path: Path) -> None:
    env = {**base_env(tmp_path), "PATH": str(tmp_path)}  # neither prometheus nor alertmanager there
    result = subprocess.run([*CLI, "stack"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("sudo apt-get install prometheus")
    assert "Traceback" not in result.stderr


def test_stack_starts_both_on_loopback_and_stops_cleanly(tmp_path: Path) -> None:
    prometheus, alertmanager = free_port(), free_port()
    process = subprocess.Popen([*CLI, "stack", "--prometheus-listen", f"127.0.0.1:{prometheus}",
                                "--alertmanager-listen", f"127.0.0.1:{alertmanager}"], env=base_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{prometheus}/-/ready", process)
        wait_ready(f"http://127.0.0.1:{alertmanager}/-/ready", process)
        with urllib.request.urlopen(f"http://127.0.0.1:{prometheus}/api/v1/rules") as reply:
            assert b"OllamaDown" in reply.read(), "the repository's rules are loaded"
        rendered = tmp_path / "stack" / "alertmanager.yml"
        assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    finally:
        stdout, stderr = stop(process)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"Prometheus:   http://127.0.0.1:{prometheus}" in stdout


@pytest.fixture
def live(tmp_path: Path, database_url: str) -> Iterator[dict]:
    """Telegram and Ollama stand-ins, the exporter with its gateway, and the stack at the shipped scrape and
    evaluation intervals and group wait; only the group interval is short, so the resolved message comes soon."""
    ports = {name: free_port() for name in ("ollama", "metrics", "gateway", "prometheus", "alertmanager")}
    with TelegramStandIn() as telegram:
        ollama = OllamaStandIn(models=[REAL_MODELS[MODEL], REAL_MODELS["qwen2.5-coder:1.5b"]],
                               port=ports["ollama"]).start()
        env = {**base_env(tmp_path), "OLLAMA_HOST": f"127.0.0.1:{ports['ollama']}",
               "SINGULARITY_DATABASE_URL": database_url}
        exporter = subprocess.Popen([*CLI, "exporter", "--metrics-listen", f"127.0.0.1:{ports['metrics']}",
                                     "--gateway-listen", f"127.0.0.1:{ports['gateway']}"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stack_env = {**env, "TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_CHAT_ID": str(telegram.chat_id),
                     "TELEGRAM_API_URL": telegram.url}
        stack = subprocess.Popen([*CLI, "stack", "--metrics-listen", f"127.0.0.1:{ports['metrics']}",
                                  "--prometheus-listen", f"127.0.0.1:{ports['prometheus']}",
                                  "--alertmanager-listen", f"127.0.0.1:{ports['alertmanager']}",
                                  "--group-interval", "10s"],
                                 env=stack_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_ready(f"http://127.0.0.1:{ports['metrics']}/healthz", exporter)
            wait_ready(f"http://127.0.0.1:{ports['prometheus']}/-/ready", stack)
            wait_ready(f"http://127.0.0.1:{ports['alertmanager']}/-/ready", stack)
            yield {"telegram": telegram, "ollama": ollama, "ports": ports, "home": tmp_path}
        finally:
            stop(stack)
            stop(exporter)
            ollama.stop()


def rule_for_seconds(name: str) -> float:
    for path in (Path(__file__).resolve().parents[2] / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text()).get("groups", []):
            for rule in group["rules"]:
                if rule.get("alert") == name:
                    text = str(rule.get("for", "0s"))
                    return float(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]
    raise AssertionError(f"no alert {name}")


def ask(port: int) -> None:
    """A client asking for a model through the gateway (so ModelNotResponding has something to judge)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/generate", method="POST",
                                     data=b'{"model": "%s", "prompt": "hi", "stream": false}' % MODEL.encode(),
                                     headers={"Content-Type": "application/json"})
    with contextlib.suppress(OSError):
        urllib.request.urlopen(request, timeout=5).read()


def watch(ports: dict, seconds: float) -> None:
    """Clients keep asking through the gateway for ``seconds`` (errors, an open breaker: all inhibited)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        ask(ports["gateway"])
        time.sleep(0.5)


SCRAPE_SECONDS = 15.0  # prometheus/prometheus.yml, which the stack runs as shipped here
PAGE_LIMIT_SECONDS = 75.0  # issue 16: a critical "down" alert reaches the phone within 75 s at the defaults


@pytest.mark.slow
def test_a_blip_never_pages_ollama_down_pages_within_75_s_once_and_resolves_once(live: dict) -> None:
    telegram, ollama, ports = live["telegram"], live["ollama"], live["ports"]
    watch(ports, SCRAPE_SECONDS)  # a healthy period, with traffic: nothing to say
    assert telegram.sent() == [], [m.text for m in telegram.sent()]

    ollama.stop()  # a 10 s blip: Ollama restarted quickly
    watch(ports, 10)
    ollama.start()
    # Long enough for a page the blip would have caused: `for`, an evaluation, the critical group_wait, slack.
    watch(ports, rule_for_seconds("OllamaDown") + SCRAPE_SECONDS + 10 + 10)
    assert telegram.sent() == [], "a 10 s blip paged: " + repr([m.text for m in telegram.sent()])

    ollama.stop()
    failed_at = time.monotonic()
    while not telegram.sent():
        assert time.monotonic() - failed_at < PAGE_LIMIT_SECONDS + 15, "no message about Ollama being down"
        watch(ports, 0.5)
    fault_to_message = telegram.sent()[0].at - failed_at
    print(f"fault to Telegram message at the shipped defaults: {fault_to_message:.1f} s")
    assert fault_to_message <= PAGE_LIMIT_SECONDS
    watch(ports, 25)  # two group intervals: any other alert would be sent by now
    messages = telegram.sent()
    assert len(messages) == 1, [m.text for m in messages]
    assert "OllamaDown" in messages[0].text and "RESOLVED" not in messages[0].text.upper()

    ollama.start()  # the same address again
    recovered_at = time.monotonic()
    while len(telegram.sent()) < 2:
        assert time.monotonic() - recovered_at < 60, "no resolved message"
        time.sleep(0.5)
    resolved = telegram.sent()[1]
    assert "OllamaDown" in resolved.text and "resolved" in resolved.text.lower()
    time.sleep(20)  # an observation window, not a synchronisation: nothing more may arrive in it
    assert len(telegram.sent()) == 2, [m.text for m in telegram.sent()]
