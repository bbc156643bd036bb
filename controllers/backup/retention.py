"""Retention: which backups ``prune`` deletes, and a report of every file it deletes.

Per kind the newest ``backup.keep`` good backups stay (status ok: written, and not failed by its latest
verification), and so does the newest verified one however old, so that a run of unverifiable backups cannot push
out the last good one. A backup whose latest verification failed does not count among them, but its file stays
while it is no older than the ``keep``-th newest good one: it may be put right (the original file copied back and
verified again). Older than that, its file goes and its row stays (failed rows are the failure record). Prune also
clears what an interrupted backup left. Nothing else is deleted, and every deleted file is in the result, in a log
line and, from the controller or ``prune --notify``, in a notice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from singularity_ops.controllers.backup.catalogue import KINDS, BackupRecord, Catalogue
from singularity_ops.controllers.backup.notices import file_count

log = logging.getLogger(__name__)


@dataclass
class Pruned:
    """What a prune deleted (dry run: would delete)."""

    removed: list[BackupRecord]  # beyond retention: their files deleted, and their rows unless failed
    kept: list[BackupRecord]  # every backup whose file stays
    files: list[Path]  # every file deleted, what interrupted backups left included
    dry_run: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "removed": [r.id for r in self.removed], "kept": [r.id for r in self.kept],
                "files": [str(path) for path in self.files]}

    def summary(self) -> str:
        removed = f"{len(self.removed)} beyond retention ({', '.join(r.id for r in self.removed)})" \
            if self.removed else "none beyond retention"
        verb = "would be deleted" if self.dry_run else "deleted"
        return f"{removed}; {file_count(len(self.files))} {verb}; {len(self.kept)} kept"


class Retention(Catalogue):
    def prune(self, *, dry_run: bool = False) -> Pruned:
        with self._lock() as conn:
            files = self._sweep(conn, dry_run=dry_run)
            removed, kept = self._choose(conn)
            gone = []
            for record in removed:
                deleted = self._remove(conn, record, dry_run=dry_run)
                if deleted is None:
                    kept.append(record)
                else:
                    gone.append(record)
                    files += deleted
        pruned = Pruned(gone, kept, files, dry_run)
        if files and not dry_run:
            log.info("prune: %s", pruned.summary())
        return pruned

    def _choose(self, conn: psycopg.Connection) -> tuple[list[BackupRecord], list[BackupRecord]]:
        removed: list[BackupRecord] = []
        kept: list[BackupRecord] = []
        keep = self.settings.keep
        for kind in KINDS:
            written = self._catalogue(conn, "kind = %s AND status IN ('ok', 'failed')", (kind,))
            good = [record for record in written if record.status == "ok"]
            stay = {record.id for record in good[:keep]}
            verified = [record for record in good if record.verified_at is not None]
            if verified:
                stay.add(verified[0].id)  # the newest: the catalogue reads newest first
            window = good[keep - 1].started if len(good) >= keep else None
            for record in written:
                if record.status == "ok":
                    (kept if record.id in stay else removed).append(record)
                elif any(path.exists() for path in self._files_of(record.id)):  # failed its latest verification
                    (removed if window is not None and record.started < window else kept).append(record)
        return removed, kept

    def _remove(self, conn: psycopg.Connection, record: BackupRecord, *, dry_run: bool) -> list[Path] | None:
        """Delete one backup beyond retention; None when its row changed since it was chosen (``backup verify``
        does not take the lock): then it stays, and the next prune decides again."""
        why = f"beyond retention: backup.keep = {self.settings.keep} {record.kind} backups"
        if dry_run:
            return self._remove_files(record.id, why, dry_run=True)
        with conn.transaction():
            now = conn.execute("SELECT status, verified_at FROM backups WHERE id = %s FOR UPDATE",
                               (record.id,)).fetchone()
            if now != (record.status, record.verified_at):
                log.info("backup %s changed while prune ran; kept until the next prune", record.id)
                return None
            deleted = self._remove_files(record.id, why)
            if record.status == "ok":
                conn.execute("DELETE FROM backups WHERE id = %s", (record.id,))
        log.info("pruned backup %s (%s)", record.id, why)
        return deleted
