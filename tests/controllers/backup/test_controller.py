"""The backup controller: runs each kind when its schedule fires (once, across replicas), verifies, prunes, tells
Alertmanager how it went; and the metrics the BackupFailed/BackupStale alerts read."""

from __future__ import annotations

import logging
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from singularity_ops.alerting.push import AlertPusher
from singularity_ops.config import Config
from singularity_ops.controllers.backup.catalogue import SUFFIX
from singularity_ops.controllers.backup.controller import BackupController
from singularity_ops.controllers.backup.keys import load_keys, write_new_key
from singularity_ops.controllers.registry import load_all
from singularity_ops.exporter.collectors.backup import BackupCollector
from tests.controllers.backup.helpers import AlertSink, backup_config, catalogue, fill, open_backups

AT = datetime(2025, 6, 4, 10, 0, 30, tzinfo=UTC)  # any fixed moment: these tests never read the wall clock


class Clock:
    """The controller's clock (and so its backups' start and finish times): still unless a test moves it, or
    ``step`` on every reading."""

    def __init__(self, at: datetime = AT, step: timedelta = timedelta(0)) -> None:
        self.now, self.step = at, step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def alertmanager() -> Iterator[AlertSink]:
    with AlertSink() as sink:
        yield sink


def controller(config: Config, alertmanager: AlertSink, clock: Clock | None = None) -> BackupController:
    pusher = AlertPusher(alertmanager.url, instance="box-1", retry_seconds=0.1).start()
    return BackupController(config, alerts=pusher, clock=clock or Clock())


def every_minute(tmp_path: Path, database_url: str, **backup: object) -> Config:
    return backup_config(tmp_path, database_url, daily="* * * * *", weekly=None, **backup)


def metrics(config: Config, database_url: str) -> dict[tuple[str, str], float]:
    collector = BackupCollector(lambda: psycopg.connect(database_url), config.backup)
    try:
        return {(s.name, s.labels.get("kind", "")): s.value for family in collector.collect() for s in family.samples}
    finally:
        collector.close()


def test_it_is_registered_as_backup() -> None:
    assert "backup" in load_all()


def test_a_due_backup_is_made_verified_and_announced_once(tmp_path: Path, database_url: str,
                                                          alertmanager: AlertSink) -> None:
    fill(database_url, rows=100)
    clock = Clock()
    backups = controller(every_minute(tmp_path, database_url), alertmanager, clock)
    try:
        backups.tick()
        clock.advance(seconds=29)
        backups.tick()  # the same minute: nothing more to do
    finally:
        backups.close()
    [(backup_id, kind, status, error)] = catalogue(database_url)
    assert (kind, status, error) == ("daily", "ok", None)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT started, verified_at IS NOT NULL FROM backups").fetchone() == (AT, True)
    [alert] = alertmanager.alerts
    assert alert["labels"] == {"alertname": "BackupSucceeded", "severity": "info", "instance": "box-1",
                               "kind": "daily"}
    assert alert["annotations"]["summary"].startswith("The daily backup succeeded: ")
    assert alert["annotations"]["summary"].endswith(" s, verified") and backup_id in alert["annotations"]["description"]
    assert "Retention deleted nothing." in alert["annotations"]["description"]
    assert not (tmp_path / "home" / "backup.key").exists()  # the key named by backup.key_file wins


@pytest.mark.slow
def test_each_new_firing_makes_one_more_and_retention_keeps_the_last_n_and_says_what_it_deleted(
        tmp_path: Path, database_url: str, alertmanager: AlertSink) -> None:
    clock = Clock()
    backups = controller(every_minute(tmp_path, database_url, keep=2), alertmanager, clock)
    try:
        for _ in range(4):
            clock.advance(minutes=1)
            backups.tick()
    finally:
        backups.close()
    rows = catalogue(database_url)
    assert [status for _, _, status, _ in rows] == ["ok", "ok"]
    files = sorted(p.name for p in (tmp_path / "home" / "backups").glob(f"*{SUFFIX}"))
    assert files == sorted(f"{backup_id}{SUFFIX}" for backup_id, *_ in rows)
    announced = [alert["annotations"]["description"] for alert in alertmanager.alerts]
    assert len(announced) == 4 and all("Retention deleted nothing." in text for text in announced[:2])
    first = announced[0].split()[1]  # "Backup <id> was restored ..."
    assert f"Retention deleted 2 files (backups {first}): {first}{SUFFIX}, {first}.manifest.json." in announced[2]


def test_a_failure_is_recorded_announced_with_its_error_and_not_retried_until_the_next_firing(
        tmp_path: Path, database_url: str, alertmanager: AlertSink) -> None:
    missing = tmp_path / "missing.key"  # named by SINGULARITY_BACKUP_KEY_FILE, but not there: a fault
    config = backup_config(tmp_path, database_url, key=False, key_file=str(missing), daily="* * * * *", weekly=None)
    clock = Clock()
    backups = controller(config, alertmanager, clock)
    try:
        backups.tick()
        clock.advance(seconds=20)
        backups.tick()
    finally:
        backups.close()
    [(_, kind, status, error)] = catalogue(database_url)
    assert (kind, status) == ("daily", "failed") and "cannot read backup key file" in error
    [alert] = alertmanager.alerts
    assert alert["labels"]["alertname"] == "BackupFailed" and alert["labels"]["severity"] == "warning"
    assert alert["labels"]["kind"] == "daily"
    assert alert["annotations"]["summary"] == "The daily backup failed"
    assert f"cannot read backup key file {missing}: No such file" in alert["annotations"]["description"]
    assert not (tmp_path / "home" / "backups").exists() or not any((tmp_path / "home" / "backups").iterdir())
    assert not missing.exists() and not (tmp_path / "home" / "backup.key").exists()  # never a key in its place


@pytest.mark.slow
def test_the_first_run_without_a_key_makes_one_and_backs_up_with_it(
        tmp_path: Path, database_url: str, alertmanager: AlertSink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    config = every_minute(tmp_path, database_url, key=False)
    key_file = tmp_path / "home" / "backup.key"
    clock = Clock()
    backups = controller(config, alertmanager, clock)
    try:
        backups.tick()
        made = key_file.read_bytes()
        clock.advance(minutes=1)
        backups.tick()
        assert metrics(config, database_url)[("singularity_backup_configured", "")] == 1
    finally:
        backups.close()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and key_file.read_bytes() == made
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(key_file) in warning.getMessage() and "keep a copy of it off this machine" in warning.getMessage()
    assert made.decode().startswith("# created: ") and "\nAGE-SECRET-KEY-1" in made.decode()
    [public] = load_keys(key_file).public_keys
    assert public in warning.getMessage() and made.decode().split("\n")[2] not in caplog.text
    assert [(kind, status) for _, kind, status, _ in catalogue(database_url)] == [("daily", "ok"), ("daily", "ok")]
    assert [alert["labels"]["alertname"] for alert in alertmanager.alerts] == ["BackupSucceeded"] * 2
    [listed, _] = open_backups(config).list()
    assert listed.manifest["encryption"]["recipients"] == [public]


def test_a_key_lost_after_backups_were_made_is_a_failure_not_replaced(
        tmp_path: Path, database_url: str, alertmanager: AlertSink) -> None:
    config = every_minute(tmp_path, database_url, key=False)
    key_file = tmp_path / "home" / "backup.key"
    clock = Clock()
    backups = controller(config, alertmanager, clock)
    try:
        backups.tick()
        key_file.unlink()
        clock.advance(minutes=1)
        backups.tick()
    finally:
        backups.close()
    assert not key_file.exists()
    assert [status for _, _, status, _ in catalogue(database_url)] == ["ok", "failed"]
    assert [alert["labels"]["alertname"] for alert in alertmanager.alerts] == ["BackupSucceeded", "BackupFailed"]


def test_with_auto_keygen_off_and_no_key_backups_wait_without_a_page(
        tmp_path: Path, database_url: str, alertmanager: AlertSink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    config = every_minute(tmp_path, database_url, key=False, auto_keygen=False)
    key_file = tmp_path / "home" / "backup.key"
    clock = Clock()
    backups = controller(config, alertmanager, clock)
    try:
        for _ in range(3):
            backups.tick()
            clock.advance(minutes=1)
        off = metrics(config, database_url)
        write_new_key(key_file)  # as `singularity-ops backup keygen` does
        backups.tick()
        on = metrics(config, database_url)
    finally:
        backups.close()
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "backup.auto_keygen is false" in warning.getMessage() and str(key_file) in warning.getMessage()
    assert off[("singularity_backup_configured", "")] == 0
    assert ("singularity_backup_last_success_timestamp_seconds", "daily") not in off  # nothing stale: not set up
    assert off[("singularity_backup_failures_total", "daily")] == 0
    notice, resolved, succeeded = alertmanager.alerts
    assert notice["labels"] == {"alertname": "BackupNotConfigured", "severity": "info", "instance": "box-1"}
    assert "singularity-ops backup keygen" in notice["annotations"]["description"]
    assert resolved["labels"]["alertname"] == "BackupNotConfigured" and resolved["endsAt"] == resolved["startsAt"]
    assert succeeded["labels"]["alertname"] == "BackupSucceeded"
    assert on[("singularity_backup_configured", "")] == 1
    assert on[("singularity_backup_last_success_timestamp_seconds", "daily")] > 0
    assert [(kind, status) for _, kind, status, _ in catalogue(database_url)] == [("daily", "ok")]


def test_two_replicas_at_the_same_moment_make_one_backup(tmp_path: Path, database_url: str,
                                                          alertmanager: AlertSink) -> None:
    config = every_minute(tmp_path, database_url)
    clock = Clock()
    replicas = [controller(config, alertmanager, clock) for _ in range(2)]
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
    assert backups.due(AT) == []
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


@pytest.mark.slow
def test_metrics_for_the_backup_alerts(tmp_path: Path, database_url: str, alertmanager: AlertSink) -> None:
    config = backup_config(tmp_path, database_url, daily="* * * * *")
    backups = controller(config, alertmanager, Clock(step=timedelta(seconds=1)))  # each backup takes a few seconds
    try:
        backups._service()  # migrate
        before = metrics(config, database_url)
        assert before[("singularity_backup_last_success_timestamp_seconds", "daily")] == 0
        assert before[("singularity_backup_last_success_timestamp_seconds", "weekly")] == 0
        assert before[("singularity_backup_last_success_timestamp_seconds", "manual")] == 0
        assert {kind: before[("singularity_backup_failures_total", kind)] for kind in ("daily", "weekly", "manual")} \
            == {"daily": 0, "weekly": 0, "manual": 0}
        assert ("singularity_backup_configured", "") not in before  # no controller has looked for its key yet
        backups.tick()
        backups._service().create("manual", verify=False)  # written, not verified: not yet a success
        after = metrics(config, database_url)
    finally:
        backups.close()
    [daily] = [row for row in catalogue(database_url) if row[1] == "daily"]
    with psycopg.connect(database_url) as conn:
        started, finished, size = conn.execute("SELECT started, finished, bytes FROM backups WHERE id = %s",
                                               (daily[0],)).fetchone()
    assert after[("singularity_backup_last_success_timestamp_seconds", "daily")] == finished.timestamp()
    assert after[("singularity_backup_last_size_bytes", "daily")] == size
    assert after[("singularity_backup_duration_seconds", "daily")] == (finished - started).total_seconds() > 0
    assert after[("singularity_backup_last_success_timestamp_seconds", "manual")] == 0
    assert after[("singularity_backup_last_size_bytes", "manual")] > 0
    assert after[("singularity_backup_configured", "")] == 1


def test_failures_count_up_from_zero(tmp_path: Path, database_url: str, alertmanager: AlertSink) -> None:
    config = backup_config(tmp_path, database_url, key=False)
    collector = BackupCollector(lambda: psycopg.connect(database_url), config.backup)
    backups = controller(config, alertmanager)
    try:
        backups._service()
        from singularity_ops.controllers.backup.errors import BackupError

        for _ in range(2):
            with pytest.raises(BackupError):
                backups._service().create("weekly")
        families = {family.name: family for family in collector.collect()}
    finally:
        backups.close()
        collector.close()
    failures = {s.labels["kind"]: s.value for s in families["singularity_backup_failures"].samples}
    assert failures == {"daily": 0, "weekly": 2, "manual": 0}
