"""One fault, one Telegram message: the real exporter, Prometheus with the repository's rules, Alertmanager with
its config and the Telegram stand-in, with a fault injected and the messages counted (issue 16, item 2).

A failed backup used to reach Telegram twice: the BackupFailed pushed with the error, and a rule of the same name
on singularity_backup_failures_total. Timers here are short (1 s scrape and evaluation, 1 s group wait) so that a
second message, if one were coming, would come well inside the observation window."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_stack import CLI, base_env, stop, wait_ready
from tests.conftest import free_port
from tests.helpers import wait_for
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn
from tests.standins.telegram import TelegramStandIn

OBSERVE_SECONDS = 15  # ~15 evaluations and group intervals after the first message


@pytest.fixture
def alert_path(tmp_path: Path, database_url: str) -> Iterator[dict]:
    ports = {name: free_port() for name in ("metrics", "gateway", "prometheus", "alertmanager")}
    with TelegramStandIn() as telegram, OllamaStandIn(models=[REAL_MODELS["llama3.2:3b"]]) as ollama:
        env = {**base_env(tmp_path), "OLLAMA_HOST": ollama.host, "SINGULARITY_DATABASE_URL": database_url,
               "SINGULARITY_ALERTMANAGER_URL": f"http://127.0.0.1:{ports['alertmanager']}"}
        exporter = subprocess.Popen([*CLI, "exporter", "--metrics-listen", f"127.0.0.1:{ports['metrics']}",
                                     "--gateway-listen", f"127.0.0.1:{ports['gateway']}"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stack = subprocess.Popen(
            [*CLI, "stack", "--metrics-listen", f"127.0.0.1:{ports['metrics']}",
             "--prometheus-listen", f"127.0.0.1:{ports['prometheus']}",
             "--alertmanager-listen", f"127.0.0.1:{ports['alertmanager']}",
             "--scrape-interval", "1s", "--group-wait", "1s", "--group-interval", "2s"],
            env={**env, "TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_CHAT_ID": str(telegram.chat_id),
                 "TELEGRAM_API_URL": telegram.url}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_ready(f"http://127.0.0.1:{ports['metrics']}/healthz", exporter)
            wait_ready(f"http://127.0.0.1:{ports['prometheus']}/-/ready", stack)
            wait_ready(f"http://127.0.0.1:{ports['alertmanager']}/-/ready", stack)
            yield {"telegram": telegram, "env": env, "home": tmp_path}
        finally:
            stop(stack)
            stop(exporter)


@pytest.mark.slow
def test_a_failed_backup_is_one_message_with_its_error(alert_path: dict) -> None:
    telegram, env = alert_path["telegram"], alert_path["env"]
    time.sleep(3)  # an observation window, not a synchronisation: a healthy start says nothing
    assert telegram.sent() == [], [m.text for m in telegram.sent()]

    missing_key = alert_path["home"] / "no-such.key"
    failed = subprocess.run([*CLI, "backup", "create", "--kind", "daily", "--notify"], capture_output=True,
                            text=True, timeout=120, env={**env, "SINGULARITY_BACKUP_KEY_FILE": str(missing_key)})
    assert failed.returncode != 0, failed.stdout

    wait_for(telegram.sent, timeout=30, what="a message about the failed backup")
    time.sleep(OBSERVE_SECONDS)  # an observation window: a second source would speak within it
    messages = [m.text for m in telegram.sent()]
    assert len(messages) == 1, messages
    assert "BackupFailed" in messages[0] and "daily" in messages[0]
    assert "cannot read backup key file" in messages[0] and "no-such.key" in messages[0], "the error is in it"
