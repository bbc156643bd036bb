"""Retention (``prune``) against a real PostgreSQL: what it keeps, what it deletes, that every deletion is reported,
and that a backup whose latest verification passed is never deleted, whatever happened to it before (issue 15)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from singularity_ops.controllers.backup.catalogue import PARTIAL, SIDECAR, SUFFIX
from singularity_ops.controllers.backup.errors import BackupCorrupt
from tests.controllers.backup.helpers import backup_config, catalogue, fill, flip, open_backups


@pytest.mark.slow
def test_retention_keeps_exactly_the_last_seven_and_never_the_newest_verified(tmp_path: Path,
                                                                              database_url: str) -> None:
    backups = open_backups(backup_config(tmp_path, database_url))
    made = [backups.create("daily", verify=False) for _ in range(9)]
    manual = backups.create("manual", verify=False)
    backups.verify(made[0].id)  # the only verified one is the oldest
    pruned = backups.prune()
    assert [r.id for r in pruned.removed] == [made[1].id]
    assert {r.id for r in pruned.kept} == {r.id for r in made[2:]} | {made[0].id, manual.id}
    assert sorted(pruned.files) == sorted([made[1].path, made[1].path.with_name(f"{made[1].id}{SIDECAR}")])
    on_disk = sorted(p.name.removesuffix(SUFFIX) for p in backups.directory.glob(f"*{SUFFIX}"))
    assert on_disk == sorted([made[0].id, *(r.id for r in made[2:]), manual.id])
    assert not (backups.directory / f"{made[1].id}{SIDECAR}").exists()

    backups.verify(made[-1].id)  # now the newest verified is among the last seven
    pruned = backups.prune()
    assert [r.id for r in pruned.removed] == [made[0].id]
    assert len([r for r in pruned.kept if r.kind == "daily"]) == 7


def test_prune_dry_run_deletes_nothing_and_says_what_it_would(tmp_path: Path, database_url: str) -> None:
    backups = open_backups(backup_config(tmp_path, database_url, keep=1))
    first, second = backups.create("daily", verify=False), backups.create("daily", verify=False)
    pruned = backups.prune(dry_run=True)
    assert [r.id for r in pruned.removed] == [first.id] and first.path.exists() and second.path.exists()
    assert first.path in pruned.files and pruned.dry_run


@pytest.mark.slow
def test_a_backup_that_failed_verification_and_was_put_right_verifies_again_and_prune_keeps_it(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 15: create, flip the last byte, verify fails (row failed), put the original back, verify passes: the
    row is good again, and prune deletes nothing."""
    fill(database_url, rows=50)
    backups = open_backups(backup_config(tmp_path, database_url))
    older = backups.create("manual", verify=False)
    record = backups.create("manual")
    genuine = record.path.read_bytes()
    record.path.write_bytes(flip(genuine, len(genuine) - 1))
    with pytest.raises(BackupCorrupt, match="fails authentication"):
        backups.verify(record.id)
    [failed] = [r for r in backups.list() if r.id == record.id]
    assert failed.status == "failed" and "fails authentication" in failed.error

    record.path.write_bytes(genuine)
    result = backups.verify(record.id)
    assert result.record.status == "ok" and result.record.error is None
    assert result.record.verified_at > record.verified_at  # the new pass is recorded
    [listed] = [r for r in backups.list() if r.id == record.id]
    assert (listed.status, listed.verified_at) == ("ok", result.record.verified_at)

    caplog.set_level("INFO")
    pruned = backups.prune()
    assert (pruned.removed, pruned.files) == ([], [])
    assert {r.id for r in pruned.kept} == {older.id, record.id}
    assert record.path.read_bytes() == genuine and record.path.with_name(f"{record.id}{SIDECAR}").exists()
    assert "deleted" not in caplog.text


@pytest.mark.slow
def test_prune_after_a_crash_mid_backup_deletes_only_what_the_crash_left_and_reports_it(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    fill(database_url, rows=50)
    backups = open_backups(backup_config(tmp_path, database_url, keep=1))
    good = backups.create("daily")
    # What a process killed while writing leaves: its row still running (newer than the good one), a partial file,
    # no sidecar, never verified. The advisory lock went with the dead process.
    crashed = "20991231T000000Z-daily-dead"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO backups (id, kind, status, host, started) VALUES (%s, 'daily', 'running', 'gone', "
                     "now())", (crashed,))
    partial = backups.directory / f".{crashed}{SUFFIX}{PARTIAL}"
    partial.write_bytes(os.urandom(10_000))

    caplog.set_level("INFO")
    pruned = backups.prune()
    assert pruned.removed == [] and [r.id for r in pruned.kept] == [good.id]
    assert pruned.files == [partial] and not partial.exists()
    assert f"deleted {partial}" in caplog.text and "1 file deleted" in caplog.text
    rows = {backup_id: (status, error) for backup_id, _, status, error in catalogue(database_url)}
    assert rows[good.id] == ("ok", None)
    assert rows[crashed][0] == "failed" and rows[crashed][1].startswith("interrupted")
    assert sorted(backups.directory.iterdir()) == sorted([good.path, good.path.with_name(f"{good.id}{SIDECAR}")])
    assert backups.verify(good.id).record.status == "ok"


@pytest.mark.slow
def test_a_damaged_backup_keeps_its_file_within_retention_and_loses_it_beyond(tmp_path: Path,
                                                                               database_url: str) -> None:
    backups = open_backups(backup_config(tmp_path, database_url, keep=2))
    damaged = backups.create("daily", verify=False)
    damaged.path.write_bytes(flip(damaged.path.read_bytes(), -1))
    with pytest.raises(BackupCorrupt):
        backups.verify(damaged.id)
    newer = backups.create("daily", verify=False)
    pruned = backups.prune()  # one good backup: the damaged one is within the newest two
    assert pruned.files == [] and damaged.id in {r.id for r in pruned.kept} and damaged.path.exists()

    newest = backups.create("daily", verify=False)
    pruned = backups.prune()  # two good ones now, both newer: the damaged file is beyond retention
    assert [r.id for r in pruned.removed] == [damaged.id]
    assert sorted(pruned.files) == sorted([damaged.path, damaged.path.with_name(f"{damaged.id}{SIDECAR}")])
    assert {r.id for r in pruned.kept} == {newer.id, newest.id}
    assert [status for backup_id, _, status, _ in catalogue(database_url) if backup_id == damaged.id] == ["failed"]


@pytest.mark.slow
def test_every_failure_is_counted_for_good(tmp_path: Path, database_url: str) -> None:
    """The failure count never goes down: not when a backup that failed verification verifies again, nor when
    retention deletes its row."""
    backups = open_backups(backup_config(tmp_path, database_url, keep=1))
    record = backups.create("weekly", verify=False)
    genuine = record.path.read_bytes()
    record.path.write_bytes(flip(genuine, -1))
    with pytest.raises(BackupCorrupt):
        backups.verify(record.id)
    record.path.write_bytes(genuine)
    backups.verify(record.id)
    backups.create("weekly")
    backups.create("weekly")
    assert record.id in [r.id for r in backups.prune().removed]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT kind, backup_id FROM backup_failures").fetchall() == [("weekly", record.id)]
