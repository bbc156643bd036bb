"""Controllers' own alerts reach a real Alertmanager through its v2 API, and never block their caller."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from singularity_ops.alerting.push import AlertPusher
from tests.conftest import free_port
from tests.helpers import wait_for

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def start_alertmanager(tmp_path: Path, port: int, config: Path | None = None) -> subprocess.Popen[bytes]:
    """A real Alertmanager on ``port`` (with ``config``, or one that routes everything nowhere), once ready."""
    assert ALERTMANAGER, "Alertmanager is needed: apt-get install prometheus-alertmanager (scripts/test does it)"
    if config is None:
        config = tmp_path / "am.yml"
        config.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
    process = subprocess.Popen([ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def ready() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
            return True
        except OSError:
            return False

    try:
        wait_for(ready, timeout=30, interval=0.1, what="Alertmanager answering /-/ready")
    except AssertionError:
        process.kill()
        raise
    return process


def alerts(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/alerts", timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def pusher() -> Iterator[AlertPusher]:
    port = free_port()
    pusher = AlertPusher(f"http://127.0.0.1:{port}", instance="box-1", retry_seconds=0.2).start()
    yield pusher
    pusher.stop()


def test_a_pushed_alert_arrives_with_the_rules_label_scheme(pusher: AlertPusher, tmp_path: Path) -> None:
    port = int(pusher.url.rsplit(":", 1)[1])
    process = start_alertmanager(tmp_path, port)
    try:
        pusher.push("BackupFailed", "critical", "Backup daily failed", "pg_dump exited 1", {"kind": "daily"})
        assert pusher.flush()
        (alert,) = alerts(port)
        assert alert["labels"] == {"alertname": "BackupFailed", "severity": "critical", "instance": "box-1",
                                   "kind": "daily"}
        assert alert["annotations"]["summary"] == "Backup daily failed"
        assert alert["annotations"]["runbook_url"].endswith("ALERTS.md#backupfailed")
        assert alert["status"]["state"] == "active"

        pusher.push("BackupFailed", "critical", "Backup daily failed", labels={"kind": "daily"}, resolved=True)
        assert pusher.flush()
        wait_for(lambda: not [a for a in alerts(port) if a["status"]["state"] == "active"],
                 what="the resolved alert leaving the active ones")
    finally:
        process.terminate()
        process.wait(10)


def test_without_alertmanager_push_never_blocks_and_delivers_later(pusher: AlertPusher, tmp_path: Path) -> None:
    for n in range(100):  # how long push() takes: bench/alert_push.py
        pusher.push("ModelDemoted", "info", f"model {n} demoted", labels={"model": f"m{n}"})
    wait_for(lambda: pusher.failures >= 1, what="a failed post")
    assert len(pusher._queue) == 100
    port = int(pusher.url.rsplit(":", 1)[1])
    process = start_alertmanager(tmp_path, port)
    try:
        assert pusher.flush(timeout=20)
        assert len(alerts(port)) == 100
    finally:
        process.terminate()
        process.wait(10)


def test_the_queue_is_bounded() -> None:
    pusher = AlertPusher("http://127.0.0.1:1", max_queued=10)  # not started: nothing leaves the queue
    for n in range(25):
        pusher.push("X", "info", str(n))
    assert len(pusher._queue) == 10 and pusher.dropped == 15
    assert [a.annotations["summary"] for a in pusher._queue] == [str(n) for n in range(15, 25)]


def test_retries_back_off_doubling_up_to_the_cap_and_stamp_alerts_with_the_injected_clock() -> None:
    waits: list[float] = []
    stamp = datetime(2026, 11, 30, 8, 55, tzinfo=UTC)
    pusher = AlertPusher("http://127.0.0.1:1", retry_seconds=1, max_retry_seconds=8, backoff=waits.append,
                         clock=lambda: stamp).start()  # port 1: every post is refused at once
    try:
        pusher.push("ModelDemoted", "info", "phi4 demoted")
        wait_for(lambda: len(waits) >= 6, what="six failed posts")
    finally:
        pusher.stop()
    assert waits[:6] == [1, 2, 4, 8, 8, 8]
    (alert,) = pusher._queue
    assert alert.starts_at == stamp and alert.ends_at == stamp + timedelta(hours=1)
