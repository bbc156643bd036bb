"""``singularity-ops alerts test|list`` against a real Alertmanager and the Telegram stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from singularity_ops.cli.stack import StackOptions, find_binary, render_alertmanager
from tests.conftest import free_port
from tests.singularity_ops.test_alert_push import start_alertmanager
from tests.standins.telegram import TelegramStandIn

CLI = [sys.executable, "-m", "singularity_ops.cli", "alerts"]


@pytest.fixture
def telegram() -> Iterator[TelegramStandIn]:
    with TelegramStandIn() as standin:
        yield standin


def telegram_env(telegram: TelegramStandIn, **override: str) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_CHAT_ID": str(telegram.chat_id),
            "TELEGRAM_API_URL": telegram.url, **override}


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], str]]:
    """Start Alertmanager with the repository's config rendered for ``environ`` (its TELEGRAM_* settings), with
    1 s group timers so a test need not wait out the shipped ones; returns its URL."""
    started: list[subprocess.Popen[bytes]] = []

    def start(environ: dict[str, str]) -> str:
        find_binary("alertmanager")
        out = tmp_path / f"am{len(started)}"
        path, _ = render_alertmanager(StackOptions(group_wait="1s", group_interval="1s"), out / "alertmanager.yml",
                                      environ)
        port = free_port()
        started.append(start_alertmanager(out, port, config=path))
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


def alerts(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SINGULARITY_"))}
    environ.update({"SINGULARITY_ALERTMANAGER_URL": url, "SINGULARITY_HOME": "/nonexistent", **(env or {})})
    return subprocess.run([*CLI, *args], env=environ, capture_output=True, text=True, timeout=90)


def test_a_working_route_sends_one_message_and_exits_0(alertmanager, telegram) -> None:
    url = alertmanager(telegram_env(telegram))
    result = alerts(url, "test", "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["sent"] is True and outcome["receiver"] == "telegram-critical" and outcome["error"] is None
    (message,) = telegram.sent()
    assert "SingularityOpsTest" in message.text and "Test message from singularity-ops" in message.text
    assert message.params.get("disable_notification") in (None, False, "false")  # critical: the phone rings

    listed = json.loads(alerts(url, "list", "--json").stdout)["alerts"]
    assert [a["alertname"] for a in listed] == ["SingularityOpsTest"]
    assert listed[0]["runbook_url"].endswith("ALERTS.md#singularityopstest")
    table = alerts(url, "list").stdout
    assert "SingularityOpsTest" in table and "critical" in table and "ALERTS.md#singularityopstest" in table


def test_a_wrong_bot_token_is_telegrams_401_named_as_such(alertmanager, telegram) -> None:
    wrong = telegram_env(telegram, TELEGRAM_BOT_TOKEN="7000000001:AAH-not-the-token")
    result = alerts(alertmanager(wrong), "test", env=wrong)
    assert result.returncode == 1
    assert "Telegram answered 401: Unauthorized" in result.stderr and "bot token is wrong" in result.stderr
    assert "AAH-not-the-token" not in result.stderr + result.stdout, "the token never shows"
    assert telegram.sent() == []


def test_a_chat_the_bot_is_not_in_is_chat_not_found(alertmanager, telegram) -> None:
    wrong = telegram_env(telegram, TELEGRAM_CHAT_ID="-100123")
    result = alerts(alertmanager(wrong), "test", env=wrong)
    assert result.returncode == 1
    assert "Telegram answered 400: Bad Request: chat not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_a_telegram_receiver_it_says_so_without_sending(alertmanager, telegram) -> None:
    url = alertmanager({})  # the stack without TELEGRAM_*: alerts stay in Alertmanager
    result = alerts(url, "test")
    assert result.returncode == 2
    assert "receiver 'telegram-critical', which has no Telegram config" in result.stderr
    assert telegram.sent() == []


def test_without_alertmanager_both_commands_say_where_they_looked() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for action in ("test", "list"):
        result = alerts(url, action)
        assert result.returncode == 2
        assert f"no Alertmanager at {url}" in result.stderr and "Traceback" not in result.stderr


def test_list_says_when_nothing_fires(alertmanager, telegram) -> None:
    result = alerts(alertmanager(telegram_env(telegram)), "list")
    assert result.returncode == 0 and "nothing is firing" in result.stdout
