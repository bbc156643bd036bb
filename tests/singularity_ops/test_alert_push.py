"""Controllers' own alerts reach a real Alertmanager through its v2 API, and never block their caller."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from singularity_ops.alerting.push import AlertPusher
from tests.conftest import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def start_alertmanager(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    assert ALERTMANAGER, "Alertmanager is needed: apt-get install prometheus-alertmanager (scripts/test does it)"
    config = tmp_path / "am.yml"
    config.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
    process = subprocess.Popen([ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("Alertmanager did not start")


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
        time.sleep(0.2)
        assert [a for a in alerts(port) if a["status"]["state"] == "active"] == []
    finally:
        process.terminate()
        process.wait(10)


def test_without_alertmanager_push_never_blocks_and_delivers_later(pusher: AlertPusher, tmp_path: Path) -> None:
    started = time.perf_counter()
    for n in range(100):
        pusher.push("ModelDemoted", "info", f"model {n} demoted", labels={"model": f"m{n}"})
    assert time.perf_counter() - started < 0.1
    time.sleep(0.5)
    assert pusher.failures >= 1 and len(pusher._queue) == 100
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
