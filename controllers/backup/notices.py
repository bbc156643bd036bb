"""The Telegram-bound notices of a backup, pushed to Alertmanager: ``BackupSucceeded`` (info: size, duration,
verified) and ``BackupFailed`` (warning: the error), each with a ``kind`` label. Used by the backup controller and
by ``backup create --notify`` (timers installed by scripts/setup_automated_backups.sh)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from singularity_ops.alerting.push import AlertPusher
from singularity_ops.logs import redact
from singularity_ops.memory import human_bytes

if TYPE_CHECKING:
    from singularity_ops.controllers.backup.store import BackupRecord


def success_summary(record: BackupRecord) -> str:
    took = (record.finished - record.started).total_seconds() if record.finished else 0.0
    state = "verified" if record.verified_at else "NOT verified"
    return f"The {record.kind} backup succeeded: {human_bytes(record.bytes or 0)} in {took:.0f} s, {state}"


def announce_success(alerts: AlertPusher, record: BackupRecord) -> None:
    verified = ("was restored into a scratch database and its row counts match its manifest" if record.verified_at
                else "was not verified: it does not count as a success until `singularity-ops backup verify` passes")
    alerts.push("BackupSucceeded", "info", success_summary(record), f"Backup {record.id} {verified}.",
                {"kind": record.kind})


def announce_failure(alerts: AlertPusher, kind: str, error: BaseException | str) -> None:
    alerts.push("BackupFailed", "warning", f"The {kind} backup failed", redact(str(error)), {"kind": kind})
