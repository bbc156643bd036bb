"""Restoring a backup into a database of the user's choosing (and its files into a folder), after authenticating
all of it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from singularity_ops.controllers.backup.catalogue import BackupRecord, Progress, one_line
from singularity_ops.controllers.backup.errors import BackupError
from singularity_ops.controllers.backup.keys import load_keys
from singularity_ops.controllers.backup.pg import find_tools, server_major, user_relations
from singularity_ops.controllers.backup.verify import Verifying, inside
from singularity_ops.logs import redact
from singularity_ops.store import redact_url

log = logging.getLogger(__name__)


@dataclass
class RestoreResult:
    record: BackupRecord
    target: str  # redacted
    tables: dict[str, int]
    files: list[str]
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"backup": self.record.id, "target": self.target, "tables": self.tables, "files": self.files,
                "seconds": round(self.seconds, 3)}


class Restoring(Verifying):
    # -- restore ---------------------------------------------------------------------------------------------
    def restore(self, reference: str, target_url: str, *, force: bool = False, files_to: Path | None = None,
                progress: Progress | None = None) -> RestoreResult:
        """Restore into the database at ``target_url`` (and the files into ``files_to``). The whole backup is
        authenticated first, so a damaged one restores nothing; the database part is one transaction."""
        began = time.monotonic()
        record = self.find(reference)
        keys = load_keys(self.key_file)
        shown = redact(redact_url(target_url))
        try:
            with psycopg.connect(target_url, connect_timeout=10) as conn:
                major = server_major(conn)
                present = user_relations(conn, ("r", "p", "v", "m", "S"))
        except psycopg.Error as exc:
            raise BackupError(f"cannot connect to the restore target {shown}: {one_line(exc)}; create the "
                              "database first (createdb) or fix the URL") from None
        if present and not force:
            raise BackupError(f"the restore target {shown} is not empty ({len(present)} relations, e.g. "
                              f"{present[0]}); restore into an empty database, or add --force to replace what the "
                              "backup holds")
        tools = find_tools(major, self.settings.pg_bin_dir)
        self._read(record, keys, None, None, None)  # authenticate everything before touching anything
        if files_to is not None and not force:
            manifest = record.manifest or {}
            clashes = [m["name"] for m in manifest.get("contents", [])
                       if m["type"] == "file" and inside(files_to, m["name"]).exists()]
            if clashes:
                raise BackupError(f"{inside(files_to, clashes[0])} already exists; choose an empty --files folder "
                                  "or add --force")
        manifest, tables = self._restore_into(record, keys, tools, target_url, clean=force, files_to=files_to,
                                              progress=progress)
        files = [m["name"] for m in manifest["contents"] if m["type"] == "file"] if files_to is not None else []
        seconds = time.monotonic() - began
        log.info("backup %s restored into %s in %.1f s", record.id, shown, seconds)
        return RestoreResult(record, shown, tables, files, seconds)
