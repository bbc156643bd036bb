"""The backup controller: runs each kind when its schedule fires (once, across replicas), verifies, prunes, tells
Alertmanager how it went; and the metrics the BackupFailed/BackupStale alerts read."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from singularity_ops.alerting.push import AlertPusher
from singularity_ops.config import Config
from singularity_ops.controllers.backup.controller import BackupController
from singularity_ops.controllers.backup.store import SUFFIX
from singularity_ops.controllers.registry import load_all
from singularity_ops.exporter.collectors.backup import BackupCollector
from tests.controllers.backup.helpers import AlertSink, backup_config, catalogue, fill, open_backups


@pytest.fixture
def alertmanager() -> Iterator[AlertSink]:
    with AlertSink() as sink:
        yield sink


def controller(config: Config, alertmanager: AlertSink, clock=None) -> BackupController:
    pusher = AlertPusher(alertmanager.url, instance="box-1", retry_seconds=0.1).start()
    return BackupController(config, alerts=pusher, clock=clock or (lambda: datetime.now(UTC)))


def every_minute(tmp_path: Path, database_url: str, **backup: object) -> Config:
    return backup_config(tmp_path, database_url, daily="* * * * *", weekly=None, **backup)


def test_it_is_registered_as_backup() -> None:
    assert "backup" in load_all()


def test_a_due_backup_is_made_verified_and_announced_once(tmp_path: Path, database_url: str,
                                                          alertmanager: AlertSink) -> None:
    fill(database_url, rows=100)
    backups = controller(every_minute(tmp_path, database_url), alertmanager)
    try:
        backups.tick()
        backups.tick()  # same minute: nothing more to do
    finally:
        backups.close()
    [(backup_id, kind, status, error)] = catalogue(database_url)
    assert (kind, status, error) == ("daily", "ok", None)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT verified_at IS NOT NULL FROM backups").fetchone() == (True,)
    [alert] = alertmanager.alerts
    assert alert["labels"] == {"alertname": "BackupSucceeded", "severity": "info", "instance": "box-1",
                               "kind": "daily"}
    assert alert["annotations"]["summary"].startswith("The daily backup succeeded: ")
    assert alert["annotations"]["summary"].endswith(" s, verified") and backup_id in alert["annotations"]["description"]


def test_each_new_firing_makes_one_more_and_retention_keeps_the_last_n(tmp_path: Path, database_url: str,
                                                                        alertmanager: AlertSink) -> None:
    now = [datetime.now(UTC)]
    backups = controller(every_minute(tmp_path, database_url, keep=2), alertmanager, clock=lambda: now[0])
    try:
        for _ in range(4):
            now[0] += timedelta(minutes=1)
            backups.tick()
    finally:
        backups.close()
    rows = catalogue(database_url)
    assert [status for _, _, status, _ in rows] == ["ok", "ok"]
    files = sorted(p.name for p in (tmp_path / "home" / "backups").glob(f"*{SUFFIX}"))
    assert files == sorted(f"{backup_id}{SUFFIX}" for backup_id, *_ in rows)


def test_a_failure_is_recorded_announced_with_its_error_and_not_retried_until_the_next_firing(
        tmp_path: Path, database_url: str, alertmanager: AlertSink) -> None:
    config = backup_config(tmp_path, database_url, key=False, daily="* * * * *", weekly=None)
    backups = controller(config, alertmanager)
    try:
        backups.tick()
        backups.tick()
    finally:
        backups.close()
    [(_, kind, status, error)] = catalogue(database_url)
    assert (kind, status) == ("daily", "failed") and "no backup key" in error
    [alert] = alertmanager.alerts
    assert alert["labels"]["alertname"] == "BackupFailed" and alert["labels"]["severity"] == "warning"
    assert alert["labels"]["kind"] == "daily"
    assert alert["annotations"]["summary"] == "The daily backup failed"
    assert "no backup key: set SINGULARITY_BACKUP_KEY_FILE" in alert["annotations"]["description"]
    assert not (tmp_path / "home" / "backups").exists() or not any((tmp_path / "home" / "backups").iterdir())


def test_two_replicas_at_the_same_moment_make_one_backup(tmp_path: Path, database_url: str,
                                                          alertmanager: AlertSink) -> None:
    config = every_minute(tmp_path, database_url)
    replicas = [controller(config, alertmanager) for _ in range(2)]
    start = threading.Barrier(2)

    def tick(replica: BackupController) -> None:
        start.wait()
        replica.tick()

    threads = [threading.Thread(target=tick, args=(replica,)) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for replica in replicas:
        replica.close()
    assert [(kind, status) for _, kind, status, _ in catalogue(database_url)] == [("daily", "ok")]


def test_a_missed_time_is_made_up_once_and_the_defaults_are_three_daily_four_on_sunday(
        tmp_path: Path, database_url: str, alertmanager: AlertSink) -> None:
    config = backup_config(tmp_path, database_url, timezone="Europe/Berlin")
    wednesday_noon = datetime(2025, 6, 4, 10, 0, tzinfo=UTC)
    backups = controller(config, alertmanager, clock=lambda: wednesday_noon)
    try:
        assert [(kind, fired.isoformat()) for kind, fired in backups.due(wednesday_noon)] == [
            ("daily", "2025-06-04T01:00:00+00:00"), ("weekly", "2025-06-01T02:00:00+00:00")]
        with psycopg.connect(database_url, autocommit=True) as conn:  # made on time, before the machine went off
            conn.execute("INSERT INTO backups (id, kind, status, host, started) VALUES "
                         "('d', 'daily', 'ok', 'h', '2025-06-03 01:00+00'), ('w', 'weekly', 'ok', 'h', "
                         "'2025-06-01 02:00+00')")
        assert [kind for kind, _ in backups.due(wednesday_noon)] == ["daily"]  # today's 03:00 was missed
        assert backups.due(datetime(2025, 6, 3, 23, 0, tzinfo=UTC)) == []
    finally:
        backups.close()


def test_disabled_means_nothing_is_due(tmp_path: Path, database_url: str, alertmanager: AlertSink) -> None:
    backups = controller(backup_config(tmp_path, database_url, enabled=False), alertmanager)
    assert backups.due(datetime.now(UTC)) == []
    backups.tick()
    backups.close()
    assert not (tmp_path / "home" / "backups").exists() and alertmanager.alerts == []


def test_with_backups_off_and_none_made_there_is_no_staleness_to_report(tmp_path: Path, database_url: str) -> None:
    config = backup_config(tmp_path, database_url, daily=None, weekly=None)
    open_backups(config)  # the catalogue exists, empty
    collector = BackupCollector(lambda: psycopg.connect(database_url), config.backup)
    families = {family.name: family for family in collector.collect()}
    collector.close()
    assert families["singularity_backup_last_success_timestamp_seconds"].samples == []
    assert [s.value for s in families["singularity_backup_failures"].samples] == [0, 0, 0]


def test_metrics_for_the_backup_alerts(tmp_path: Path, database_url: str, alertmanager: AlertSink) -> None:
    config = backup_config(tmp_path, database_url, daily="* * * * *")
    collector = BackupCollector(lambda: psycopg.connect(database_url), config.backup)
    backups = controller(config, alertmanager)

    def samples() -> dict[tuple[str, str], float]:
        return {(s.name, s.labels["kind"]): s.value for family in collector.collect() for s in family.samples}

    try:
        backups._service()  # migrate
        before = samples()
        assert before[("singularity_backup_last_success_timestamp_seconds", "daily")] == 0
        assert before[("singularity_backup_last_success_timestamp_seconds", "weekly")] == 0
        assert before[("singularity_backup_last_success_timestamp_seconds", "manual")] == 0
        assert {kind: before[("singularity_backup_failures_total", kind)] for kind in ("daily", "weekly", "manual")} \
            == {"daily": 0, "weekly": 0, "manual": 0}
        backups.tick()
        backups._service().create("manual", verify=False)  # written, not verified: not yet a success
        after = samples()
    finally:
        backups.close()
        collector.close()
    [daily] = [row for row in catalogue(database_url) if row[1] == "daily"]
    with psycopg.connect(database_url) as conn:
        finished, size = conn.execute("SELECT finished, bytes FROM backups WHERE id = %s", (daily[0],)).fetchone()
    assert after[("singularity_backup_last_success_timestamp_seconds", "daily")] == finished.timestamp()
    assert after[("singularity_backup_last_size_bytes", "daily")] == size
    assert 0 < after[("singularity_backup_duration_seconds", "daily")] < 60
    assert after[("singularity_backup_last_success_timestamp_seconds", "manual")] == 0
    assert after[("singularity_backup_last_size_bytes", "manual")] > 0


def test_failures_count_up_from_zero(tmp_path: Path, database_url: str, alertmanager: AlertSink) -> None:
    config = backup_config(tmp_path, database_url, key=False)
    collector = BackupCollector(lambda: psycopg.connect(database_url), config.backup)
    backups = controller(config, alertmanager)
    try:
        backups._service()
        from singularity_ops.controllers.backup.format import BackupError

        for _ in range(2):
            with pytest.raises(BackupError):
                backups._service().create("weekly")
        families = {family.name: family for family in collector.collect()}
    finally:
        backups.close()
        collector.close()
    failures = {s.labels["kind"]: s.value for s in families["singularity_backup_failures"].samples}
    assert failures == {"daily": 0, "weekly": 2, "manual": 0}
