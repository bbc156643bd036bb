"""Alertmanager: the effective config rendered with the Telegram secrets (0600, checked by Debian's amtool), routing
by severity, the inhibitions, and the message template rendered by amtool with real alert data."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from singularity_ops.alerting import alertmanager_config
from singularity_ops.alerting.alertmanager_config import default_template, render_config, telegram_settings
from singularity_ops.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "alertmanager" / "alertmanager.yml"
MESSAGE_TEMPLATES = REPO / "alertmanager" / "templates" / "*.tmpl"
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
TOKEN = "123456789:AAFakeTokenForTests_only-0123456789abc"
CHAT_ID = "-1001234567890"
ENV = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": CHAT_ID}


def amtool() -> str:
    found = shutil.which("amtool")
    if not found:
        pytest.skip("amtool is not installed (Debian: sudo apt-get install prometheus-alertmanager)")
    return found


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    return render_config(TEMPLATE, tmp_path / "stack" / "alertmanager.yml", ENV)


def alert_names() -> set[str]:
    return {rule["alert"] for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}


# --- rendering -----------------------------------------------------------------------------------------------


def test_rendered_config_is_private_and_holds_the_secrets_the_template_does_not(rendered: Path) -> None:
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    assert TOKEN in rendered.read_text()
    assert TOKEN not in TEMPLATE.read_text()
    config = yaml.safe_load(rendered.read_text())
    entries = [entry for receiver in config["receivers"] for entry in receiver["telegram_configs"]]
    assert len(entries) == 2
    for entry in entries:
        assert entry["bot_token"] == TOKEN
        assert entry["chat_id"] == int(CHAT_ID)
        assert entry["api_url"] == "https://api.telegram.org"


def test_template_paths_become_absolute_and_still_find_the_message_template(rendered: Path) -> None:
    [pattern] = yaml.safe_load(rendered.read_text())["templates"]
    assert Path(pattern).is_absolute()
    assert [p.name for p in Path(pattern).parent.glob(Path(pattern).name)] == ["telegram.tmpl"]


def test_the_file_is_created_0600_never_wider_even_for_a_moment(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "alertmanager.yml"
    out.write_text("an older, world-readable render\n")
    out.chmod(0o644)
    created: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            created.append((str(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    old_umask = os.umask(0)  # the umask must not be what keeps it private
    try:
        render_config(TEMPLATE, out, ENV)
    finally:
        os.umask(old_umask)
    assert created, "the file is created with os.open"
    for path, flags, mode in created:
        assert mode == 0o600 and flags & os.O_EXCL, (path, oct(mode))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert TOKEN in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alertmanager.yml"], "no temporary file left behind"


def test_the_token_file_is_read_and_stripped_and_the_api_url_is_taken(tmp_path: Path) -> None:
    secret = tmp_path / "bot_token"
    secret.write_text(f"\n  {TOKEN}  \n")
    env = {"TELEGRAM_BOT_TOKEN_FILE": str(secret), "TELEGRAM_CHAT_ID": "42",
           "TELEGRAM_API_URL": "http://127.0.0.1:8081/"}
    config = yaml.safe_load(render_config(TEMPLATE, tmp_path / "out.yml", env).read_text())
    for receiver in config["receivers"]:
        [entry] = receiver["telegram_configs"]
        assert (entry["bot_token"], entry["chat_id"], entry["api_url"]) == (TOKEN, 42, "http://127.0.0.1:8081")


def test_the_default_template_is_the_checkout_s(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_template() == TEMPLATE
    wheel = tmp_path / "site-packages" / "singularity_ops" / "alerting" / "alertmanager_config.py"
    monkeypatch.setattr(alertmanager_config, "__file__", str(wheel))
    with pytest.raises(ConfigError, match="wheel"):
        default_template()


# --- errors: one line, naming the variable, never the secret ---------------------------------------------------


@pytest.mark.parametrize(("env", "variable"), [
    ({"TELEGRAM_CHAT_ID": CHAT_ID}, "TELEGRAM_BOT_TOKEN"),
    ({"TELEGRAM_BOT_TOKEN": "   ", "TELEGRAM_CHAT_ID": CHAT_ID}, "TELEGRAM_BOT_TOKEN"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN}, "TELEGRAM_CHAT_ID"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "@my_channel"}, "TELEGRAM_CHAT_ID"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "12.5"}, "TELEGRAM_CHAT_ID"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "0"}, "TELEGRAM_CHAT_ID"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": TOKEN}, "TELEGRAM_CHAT_ID"),  # pasted in the wrong one
    ({"TELEGRAM_BOT_TOKEN": TOKEN + " x", "TELEGRAM_CHAT_ID": CHAT_ID}, "TELEGRAM_BOT_TOKEN"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_BOT_TOKEN_FILE": "/run/secrets/t", "TELEGRAM_CHAT_ID": CHAT_ID},
     "TELEGRAM_BOT_TOKEN_FILE"),
    ({"TELEGRAM_BOT_TOKEN_FILE": "/nonexistent/bot_token", "TELEGRAM_CHAT_ID": CHAT_ID}, "TELEGRAM_BOT_TOKEN_FILE"),
    ({"TELEGRAM_BOT_TOKEN_FILE": TOKEN, "TELEGRAM_CHAT_ID": CHAT_ID}, "TELEGRAM_BOT_TOKEN_FILE"),  # the token itself
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": CHAT_ID, "TELEGRAM_API_URL": f"api.telegram.org/bot{TOKEN}"},
     "TELEGRAM_API_URL"),
])
def test_a_missing_or_wrong_variable_is_one_line_naming_it_without_the_token(
        tmp_path: Path, env: dict[str, str], variable: str) -> None:
    out = tmp_path / "alertmanager.yml"
    with pytest.raises(ConfigError) as raised:
        render_config(TEMPLATE, out, env)
    message = str(raised.value)
    assert variable in message
    assert "\n" not in message
    assert TOKEN not in message and TOKEN.split(":")[1] not in message
    assert TOKEN not in repr(raised.value)
    assert not out.exists()


def test_an_empty_token_file_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "bot_token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN_FILE"):
        render_config(TEMPLATE, tmp_path / "out.yml", {"TELEGRAM_BOT_TOKEN_FILE": str(empty), "TELEGRAM_CHAT_ID": "1"})


def test_the_token_is_never_in_a_repr_or_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = telegram_settings(ENV)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
    assert settings.bot_token.get_secret_value() == TOKEN
    with caplog.at_level(logging.DEBUG):
        render_config(TEMPLATE, tmp_path / "out.yml", ENV)
    assert caplog.records, "rendering says where it wrote"
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


# --- the config itself ----------------------------------------------------------------------------------------


def test_the_repository_template_and_the_rendered_config_pass_amtool(rendered: Path) -> None:
    for config in (TEMPLATE, rendered):
        result = run(amtool(), "check-config", config)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=OllamaDown", "severity=critical"], "telegram-critical"),
    (["alertname=ModelNotResponding", "severity=critical", "model=llama3.2:3b"], "telegram-critical"),
    (["alertname=HostMemoryHigh", "severity=warning"], "telegram-quiet"),
    (["alertname=ModelWillNotFit", "severity=info", "model=phi4:14b"], "telegram-quiet"),
    (["alertname=SomethingPushed"], "telegram-quiet"),
])
def test_routes_send_critical_out_loud_and_the_rest_quietly(rendered: Path, labels: list[str], receiver: str) -> None:
    base = [amtool(), "config", "routes", "test", f"--config.file={rendered}"]
    result = run(*base, f"--verify.receivers={receiver}", "instance=127.0.0.1:9777", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    other = {"telegram-critical": "telegram-quiet", "telegram-quiet": "telegram-critical"}[receiver]
    assert run(*base, f"--verify.receivers={other}", "instance=127.0.0.1:9777", *labels).returncode != 0


def test_both_receivers_are_telegram_and_differ_only_in_the_sound(rendered: Path) -> None:
    receivers = {r["name"]: r for r in yaml.safe_load(rendered.read_text())["receivers"]}
    assert set(receivers) == {"telegram-critical", "telegram-quiet"}
    for receiver in receivers.values():
        assert set(receiver) == {"name", "telegram_configs"}
    [loud] = receivers["telegram-critical"]["telegram_configs"]
    [quiet] = receivers["telegram-quiet"]["telegram_configs"]
    assert loud["disable_notifications"] is False and quiet["disable_notifications"] is True
    assert {k: v for k, v in loud.items() if k != "disable_notifications"} == \
        {k: v for k, v in quiet.items() if k != "disable_notifications"}
    assert loud["send_resolved"] is True and loud["parse_mode"] == "HTML"
    assert loud["message"] == '{{ template "singularity.telegram.message" . }}'


def test_grouping_and_timers(rendered: Path) -> None:
    route = yaml.safe_load(rendered.read_text())["route"]
    assert route["group_by"] == ["alertname", "instance"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("30s", "5m", "4h")
    [info] = [r for r in route["routes"] if r["matchers"] == ['severity="info"']]
    assert info["repeat_interval"] == "24h"
    [critical] = [r for r in route["routes"] if r["matchers"] == ['severity="critical"']]
    assert critical["group_wait"] == "10s", "a page waits 10 s for company, not 30 (docs/ALERTS.md)"


def matches(matcher: str, labels: dict[str, str]) -> bool:
    name, operator, value = re.fullmatch(r'(\w+)\s*(=~|!~|!=|=)\s*"(.*)"', matcher).groups()  # type: ignore[union-attr]
    actual = labels.get(name, "")
    return {"=": actual == value, "!=": actual != value, "=~": re.fullmatch(value, actual) is not None,
            "!~": re.fullmatch(value, actual) is None}[operator]


def inhibited_by(source: str) -> set[str]:
    """The alerts (of the rules) that a firing ``source`` holds back, by the config's inhibit_rules."""
    held = set()
    for rule in yaml.safe_load(TEMPLATE.read_text())["inhibit_rules"]:
        if all(matches(m, {"alertname": source}) for m in rule["source_matchers"]):
            assert rule["equal"] == ["instance"], rule
            held |= {name for name in alert_names() if all(matches(m, {"alertname": name})
                                                             for m in rule["target_matchers"])}
    return held


def test_ollama_down_holds_back_model_not_responding_and_circuit_breaker_open_on_its_host() -> None:
    assert inhibited_by("OllamaDown") == {"ModelNotResponding", "CircuitBreakerOpen"}


def test_exporter_down_holds_back_everything_else_from_its_host() -> None:
    assert inhibited_by("ExporterDown") == alert_names() - {"ExporterDown"}


def test_no_other_alert_holds_anything_back() -> None:
    for name in alert_names() - {"OllamaDown", "ExporterDown"}:
        assert inhibited_by(name) == set(), name


# --- the message ------------------------------------------------------------------------------------------------


def alert(name: str, severity: str, summary: str, description: str, starts: str, ends: str | None = None,
          **labels: str) -> dict[str, Any]:
    return {"status": "resolved" if ends else "firing",
            "labels": {"alertname": name, "severity": severity, "instance": "127.0.0.1:9777", "job": "singularity",
                       **labels},
            "annotations": {"summary": summary, "description": description,
                            "runbook_url": f"https://github.com/singularity-ops/singularity-ops/blob/main/docs/"
                                           f"ALERTS.md#{name.lower()}"},
            "startsAt": starts, "endsAt": ends or "0001-01-01T00:00:00Z", "generatorURL": "http://127.0.0.1:9090",
            "fingerprint": f"{name}{labels}"}


def render_message(tmp_path: Path, alerts: list[dict[str, Any]]) -> str:
    common = {k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)}
    data = {"receiver": "telegram-critical", "status": "firing" if any(a["status"] == "firing" for a in alerts)
            else "resolved", "alerts": alerts, "groupLabels": {k: common[k] for k in ("alertname", "instance")},
            "commonLabels": common, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093"}
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    result = run(amtool(), "template", "render", f"--template.glob={MESSAGE_TEMPLATES}",
                 '--template.text={{ template "singularity.telegram.message" . }}', f"--template.data={path}",
                 env={**os.environ, "TZ": "UTC"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


OLLAMA_DOWN = ("OllamaDown", "critical", "Ollama is not answering",
               "The exporter at 127.0.0.1:9777 has had no answer from Ollama's /api/version, /api/tags and /api/ps "
               "for more than 1 minute; requests through the gateway fail with 502.")


def test_a_firing_message_says_what_where_the_value_since_when_and_the_runbook(tmp_path: Path) -> None:
    text = render_message(tmp_path, [alert(*OLLAMA_DOWN, "2026-05-01T10:00:00Z")])
    assert text.splitlines()[0] == "🔴 <b>OllamaDown</b> on 127.0.0.1:9777"
    assert "<b>Ollama is not answering</b>" in text
    assert "Ollama&#39;s /api/version" in text, "text is escaped for parse_mode HTML"
    assert "since May 1 10:00 UTC" in text
    assert '<a href="https://github.com/singularity-ops/singularity-ops/blob/main/docs/ALERTS.md#ollamadown">' in text
    assert "resolved" not in text.lower()
    assert len(text) < 600


def test_a_model_alert_shows_the_model_escaped_and_its_value(tmp_path: Path) -> None:
    text = render_message(tmp_path, [alert("ModelNotResponding", "critical", "Model a<b> is failing its requests",
                                           "66.67% of the requests for a<b> failed", "2026-05-01T10:00:00Z",
                                           model="a<b>")])
    assert "model <code>a&lt;b&gt;</code>" in text
    assert "66.67% of the requests for a&lt;b&gt; failed" in text
    assert "<b>" in text and "a<b>" not in text


def test_a_resolved_alert_is_one_short_line(tmp_path: Path) -> None:
    text = render_message(tmp_path, [alert(*OLLAMA_DOWN, "2026-05-01T10:00:00Z", "2026-05-01T10:03:00.4Z")])
    assert text.strip() == ("✅ <b>OllamaDown</b> on 127.0.0.1:9777 resolved after 3m0s: Ollama is not answering")


def test_a_big_group_shows_five_and_the_count_and_fits_telegram(tmp_path: Path) -> None:
    many = [alert("ModelWillNotFit", "info", f"Model m{i} cannot be loaded on this machine", "x" * 300,
                  "2026-05-01T10:00:00Z", model=f"m{i}") for i in range(12)]
    text = render_message(tmp_path, many)
    assert text.startswith("🔵 <b>ModelWillNotFit</b>")
    assert text.count("cannot be loaded") == 5
    assert "… 12 firing in all" in text
    assert len(text) < 4096, "Telegram's message limit"
