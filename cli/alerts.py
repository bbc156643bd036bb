"""``singularity-ops alerts``: is the alert channel working, and what fires now.

    singularity-ops alerts test [--severity critical|warning|info] [--timeout S] [--json]
    singularity-ops alerts list [--json]

``test`` sends one alert (``SingularityOpsTest``) through the configured Alertmanager (``alerts.alertmanager_url``,
``SINGULARITY_ALERTMANAGER_URL``) and waits until Alertmanager has handed it to Telegram: exit 0 when it did, 1
with the reason when it was not sent (Telegram's own answer: a wrong token, a chat the bot is not in), 2 when it
could not be tried (no Alertmanager there, no Telegram receiver on the route).
The test alert ends by itself after 5 minutes, when a short "resolved" line follows it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from singularity_ops.cli.tables import print_table
from singularity_ops.config import Config
from singularity_ops.errors import ConfigError, SingularityError

TEST_ALERT = "SingularityOpsTest"


def add_parser(commands: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    alerts = commands.add_parser("alerts", help="send a test message through Alertmanager; list what fires now")
    actions = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    test = actions.add_parser("test", help="one test alert through Alertmanager to Telegram; exit 1 if it fails")
    test.add_argument("--severity", choices=("critical", "warning", "info"), default="critical",
                      help="which route to test (default critical: the loud one)")
    test.add_argument("--timeout", type=float, default=None, metavar="S",
                      help="how long to wait for Alertmanager to send (default: the route's group_wait + 30 s)")
    test.add_argument("--json", action="store_true", help="print the result as JSON")
    common(test)
    listing = actions.add_parser("list", help="the alerts firing now, each with its runbook")
    listing.add_argument("--json", action="store_true", help="print the alerts as JSON")
    common(listing)


def run(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.alerting.client import Alertmanager

    alertmanager = Alertmanager(config.alerts.alertmanager_url)
    if args.alerts_command == "list":
        return list_alerts(alertmanager, args)
    return test(alertmanager, args)


def list_alerts(alertmanager: Any, args: argparse.Namespace) -> int:
    rows = []
    for alert in sorted(alertmanager.alerts(), key=lambda a: (a["labels"].get("severity") != "critical",
                                                             a.get("startsAt", ""))):
        labels, annotations = alert["labels"], alert.get("annotations", {})
        rows.append({"alertname": labels.get("alertname", ""), "severity": labels.get("severity", ""),
                     "instance": labels.get("instance", ""), "labels": labels, "starts_at": alert.get("startsAt"),
                     "summary": annotations.get("summary", ""), "description": annotations.get("description", ""),
                     "runbook_url": annotations.get("runbook_url", "")})
    if args.json:
        print(json.dumps({"alertmanager": alertmanager.url, "alerts": rows}, indent=2))
        return 0
    if not rows:
        print(f"nothing is firing (Alertmanager at {alertmanager.url})")
        return 0
    table = [["ALERT", "SEVERITY", "INSTANCE", "SINCE", "SUMMARY"]]
    for row in rows:
        table.append([row["alertname"], row["severity"], row["instance"], _since(row["starts_at"]), row["summary"]])
    print_table(table)
    for row in rows:
        if row["runbook_url"]:
            print(f"  {row['alertname']}: {row['runbook_url']}")
    return 0


def _since(stamp: str | None) -> str:
    if not stamp:
        return "-"
    started = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    seconds = max(0, int((datetime.now(UTC) - started).total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def test(alertmanager: Any, args: argparse.Namespace) -> int:
    from singularity_ops.alerting.client import route_for
    from singularity_ops.alerting.push import AlertPusher

    pusher = AlertPusher(alertmanager.url)
    labels = {"alertname": TEST_ALERT, "severity": args.severity, "instance": pusher.instance}
    config = alertmanager.config()
    receiver, group_wait = route_for(config, labels)
    receivers = {r.get("name"): r for r in config.get("receivers", []) or []}
    if not (receivers.get(receiver) or {}).get("telegram_configs"):
        raise SingularityError(
            f"Alertmanager at {alertmanager.url} routes a {args.severity} alert to receiver {receiver!r}, which "
            "has no Telegram config: start `singularity-ops stack` with TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID set "
            "(docs/ALERTS.md#telegram)")
    requests, failed = alertmanager.notification_requests()
    pusher.start()
    try:
        pusher.push(TEST_ALERT, args.severity, "Test message from singularity-ops alerts test",
                    "If this reached your phone, alerts reach you. It resolves by itself in 5 minutes.",
                    lasts=timedelta(minutes=5))
        if not pusher.flush(timeout=10):
            raise SingularityError(f"Alertmanager at {alertmanager.url} did not accept the test alert")
    finally:
        pusher.stop()
    started = time.monotonic()
    timeout = args.timeout if args.timeout is not None else group_wait + 30
    outcome = _await_delivery(alertmanager, requests, failed, started + timeout)
    result = {"alertmanager": alertmanager.url, "receiver": receiver, "severity": args.severity,
              "sent": outcome is None, "seconds": round(time.monotonic() - started, 1), "error": outcome}
    if args.json:
        print(json.dumps(result, indent=2))
    elif outcome is None:
        print(f"sent: Alertmanager handed the test alert to Telegram (receiver {receiver}) after "
              f"{result['seconds']} s; it resolves by itself in 5 minutes")
    if outcome is not None:
        if not args.json:
            print(f"singularity-ops alerts test: not sent: {outcome}", file=sys.stderr)
        return 1
    return 0


def _await_delivery(alertmanager: Any, requests: float, failed: float, deadline: float) -> str | None:
    """None once Alertmanager's request to Telegram came back fine; else what went wrong."""
    while time.monotonic() < deadline:
        if alertmanager.notification_requests()[0] > requests:
            time.sleep(0.2)  # the failure is counted right after the request: read once more
            if alertmanager.notification_requests()[1] > failed:
                return _why_telegram_failed()
            return None
        time.sleep(0.25)
    return (f"Alertmanager took the test alert but sent nothing before the timeout: is a silence or an inhibition "
            f"holding it? See {alertmanager.url}/#/alerts and `singularity-ops alerts list`")


def _why_telegram_failed() -> str:
    from singularity_ops.alerting.alertmanager_config import telegram_settings
    from singularity_ops.alerting.client import telegram_problem

    try:
        settings = telegram_settings(os.environ)
    except ConfigError:
        return ("Alertmanager could not deliver to Telegram (its log says why); set TELEGRAM_BOT_TOKEN and "
                "TELEGRAM_CHAT_ID here too and this command asks Telegram itself")
    problem = telegram_problem(settings.api_url, settings.bot_token.get_secret_value(), settings.chat_id,
                               "singularity-ops alerts test: checking why Alertmanager could not send")
    if problem is None:
        return ("Alertmanager could not deliver to Telegram, yet Telegram accepts these TELEGRAM_* settings from here: "
                "Alertmanager runs with other ones; restart `singularity-ops stack` with these")
    hints = {"401": "the bot token is wrong (TELEGRAM_BOT_TOKEN)",
             "chat not found": "TELEGRAM_CHAT_ID is not a chat this bot is in: send the bot a message, or add it to "
                               "the group, then use the chat's id"}
    hint = next((text for key, text in hints.items() if key in problem), "")
    return f"Alertmanager could not deliver to Telegram: {problem}" + (f"; {hint}" if hint else "")
