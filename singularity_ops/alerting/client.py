"""Reading Alertmanager (v2 API and its own /metrics) and asking Telegram why a message did not go out.

``alerts list`` shows what fires now; ``alerts test`` sends one alert through the configured route and watches
Alertmanager's notification counters to learn whether Telegram took it. Alertmanager keeps Telegram's answer in
its log only, so on a failure the cause is asked of the Bot API directly with the same ``TELEGRAM_*`` settings
(docs/ALERTS.md#telegram). No token appears in any message or error here.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from singularity_ops.errors import SingularityError

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class AlertmanagerUnavailable(SingularityError):
    pass


def duration_seconds(text: str) -> float:
    """A Prometheus duration (``30s``, ``1m30s``) in seconds."""
    return sum(int(n) * _SECONDS[unit] for n, unit in _DURATION.findall(text))


def _matches(route: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for matcher in route.get("matchers", []) or []:
        found = _MATCHER.match(matcher)
        if not found:
            return False
        name, op, value = found.groups()
        have = labels.get(name, "")
        if (op == "=" and have != value) or (op == "!=" and have == value):
            return False
        if (op == "=~" and not re.fullmatch(value, have)) or (op == "!~" and re.fullmatch(value, have)):
            return False
    return all(labels.get(k) == v for k, v in (route.get("match") or {}).items()) and all(
        re.fullmatch(v, labels.get(k, "")) for k, v in (route.get("match_re") or {}).items())


def route_for(config: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[str, float]:
    """The receiver an alert with ``labels`` goes to, and that route's group_wait in seconds (first match wins,
    as Alertmanager routes without ``continue``)."""
    route, receiver, group_wait = config.get("route") or {}, "", "30s"
    while True:
        receiver = route.get("receiver", receiver)
        group_wait = route.get("group_wait", group_wait)
        child = next((r for r in route.get("routes", []) or [] if _matches(r, labels)), None)
        if child is None:
            return receiver, duration_seconds(group_wait)
        route = child


@dataclass
class Alertmanager:
    url: str
    timeout_seconds: float = 5.0

    def _get(self, path: str) -> bytes:
        try:
            with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=self.timeout_seconds) as reply:
                return reply.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AlertmanagerUnavailable(
                f"no Alertmanager at {self.url} ({reason}); start it (singularity-ops stack) or set "
                "alerts.alertmanager_url / SINGULARITY_ALERTMANAGER_URL") from None

    def config(self) -> dict[str, Any]:
        status = json.loads(self._get("/api/v2/status"))
        return yaml.safe_load(status.get("config", {}).get("original", "")) or {}

    def alerts(self) -> list[dict[str, Any]]:
        """What fires now: active, neither silenced nor inhibited."""
        return json.loads(self._get("/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=false"))

    def notification_requests(self, integration: str = "telegram") -> tuple[float, float]:
        """Alertmanager's own counters of requests to one integration: (finished, failed). Both move when a request
        returns (the failure right after), each retry of a failing notification counting again."""
        totals = {"alertmanager_notification_requests_total": 0.0,
                  "alertmanager_notification_requests_failed_total": 0.0}
        for family in text_string_to_metric_families(self._get("/metrics").decode()):
            for sample in family.samples:
                if sample.name in totals and sample.labels.get("integration") == integration:
                    totals[sample.name] += sample.value
        return (totals["alertmanager_notification_requests_total"],
                totals["alertmanager_notification_requests_failed_total"])


def telegram_problem(api_url: str, token: str, chat_id: int, text: str) -> str | None:
    """Send ``text`` straight through the Bot API: None when it went out, else Telegram's own words."""
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/bot{token}/sendMessage", method="POST",
        data=json.dumps({"chat_id": chat_id, "text": text}).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()
        return None
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        return f"Telegram answered {exc.code}: {body.get('description') or exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        return f"Telegram's API at {api_url} is unreachable from here ({getattr(exc, 'reason', exc)})"
