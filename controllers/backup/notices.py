"""The Telegram-bound notices of a backup, pushed to Alertmanager: ``BackupSucceeded`` (info: size, duration,
verified, and what retention deleted), ``BackupFailed`` (warning: the error), each with a ``kind`` label, and
``BackupNotConfigured`` (info: scheduled backups have no key and ``backup.auto_keygen`` is off). Used by the backup
controller and by ``backup create --notify`` (timers installed by scripts/setup_automated_backups.sh)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from singularity_ops.alerting.push import AlertPusher
from singularity_ops.logs import redact
from singularity_ops.memory import human_bytes

if TYPE_CHECKING:
    from singularity_ops.controllers.backup.catalogue import BackupRecord
    from singularity_ops.controllers.backup.retention import Pruned


def file_count(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def success_summary(record: BackupRecord) -> str:
    took = (record.finished - record.started).total_seconds() if record.finished else 0.0
    state = "verified" if record.verified_at else "NOT verified"
    return f"The {record.kind} backup succeeded: {human_bytes(record.bytes or 0)} in {took:.0f} s, {state}"


def pruned_summary(pruned: Pruned) -> str:
    """Every file retention deleted, by name: a deletion is never silent."""
    if not pruned.files:
        return "Retention deleted nothing."
    names = ", ".join(path.name for path in pruned.files)
    backups = f" (backups {', '.join(record.id for record in pruned.removed)})" if pruned.removed else ""
    return f"Retention deleted {file_count(len(pruned.files))}{backups}: {names}."


def announce_success(alerts: AlertPusher, record: BackupRecord, pruned: Pruned | None = None) -> None:
    verified = ("was restored into a scratch database and its row counts match its manifest" if record.verified_at
                else "was not verified: it does not count as a success until `singularity-ops backup verify` passes")
    description = f"Backup {record.id} {verified}."
    if pruned is not None:
        description += f" {pruned_summary(pruned)}"
    alerts.push("BackupSucceeded", "info", success_summary(record), description, {"kind": record.kind})


def announce_failure(alerts: AlertPusher, kind: str, error: BaseException | str) -> None:
    alerts.push("BackupFailed", "warning", f"The {kind} backup failed", redact(str(error)), {"kind": kind})


def announce_not_configured(alerts: AlertPusher, key_file: Path, *, resolved: bool = False) -> None:
    """Info, not a failure: nothing is broken, backups are simply not set up. Resolved once a key appears."""
    alerts.push("BackupNotConfigured", "info", "Scheduled backups are not set up: no backup key",
                f"Nothing is backed up: there is no backup key and backup.auto_keygen is false. Create one with "
                f"`singularity-ops backup keygen` (it writes {key_file}, which is then used), or set "
                "SINGULARITY_BACKUP_KEY_FILE.", resolved=resolved)
