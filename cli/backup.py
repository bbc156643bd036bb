"""``singularity-ops backup create|list|verify|restore|prune|keygen``: thin commands over the backup engine
(controllers/backup, ``Backups`` in store.py). Wired into the main CLI with ``add_parser(commands, _common)`` and
``COMMANDS["backup"] = run``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from singularity_ops.cli.tables import print_table
from singularity_ops.config import Config
from singularity_ops.memory import human_bytes

if TYPE_CHECKING:  # imported when a backup command runs: `singularity-ops exporter` never pays for the encryption
    from singularity_ops.controllers.backup.catalogue import BackupRecord
    from singularity_ops.controllers.backup.store import Backups

KINDS = ("daily", "weekly", "manual")


def add_parser(subparsers: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    backup = subparsers.add_parser("backup", help="encrypted, verified backups: create, list, verify, restore, prune")
    actions = backup.add_subparsers(dest="backup_command", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="back up the history database and the config now, then verify it")
    create.add_argument("--kind", choices=KINDS, default="manual", help="catalogue kind (default manual); "
                        "retention keeps backup.keep of each kind")
    create.add_argument("--no-verify", action="store_true",
                        help="skip the restore into a scratch database (the backup then does not count as a success)")
    create.add_argument("--notify", action="store_true",
                        help="push BackupSucceeded/BackupFailed to Alertmanager (alerts.alertmanager_url), as the "
                             "backup controller does; for backups run by a timer")

    listing = actions.add_parser("list", help="the catalogue, and backups known only from their manifest files")

    verify = actions.add_parser("verify", help="decrypt, restore into a scratch database, compare row counts")
    which = verify.add_mutually_exclusive_group()
    which.add_argument("id", nargs="?", metavar="ID", help="backup id, or the path of a backup file")
    which.add_argument("--latest", action="store_true", help="the newest successful backup (the default)")

    restore = actions.add_parser("restore", help="restore a backup into a database (and its files into a folder)")
    restore.add_argument("id", metavar="ID", help="backup id, or the path of a backup file (.tar.gz.age, or .sgbk from "
                                                  "before the age format) with its manifest beside it")
    restore.add_argument("--to", required=True, metavar="URL",
                         help="target PostgreSQL URL, or 'embedded' for the embedded server under --home")
    restore.add_argument("--force", action="store_true",
                         help="restore into a non-empty database (replacing what the backup holds) or over files")
    restore.add_argument("--files", metavar="DIR", help="also write the backed-up files (config, includes) here")

    prune = actions.add_parser("prune", help="delete backups beyond backup.keep per kind (never the newest verified), "
                                             "listing every file it deletes")
    prune.add_argument("--dry-run", action="store_true", help="only say what would be deleted")

    keygen = actions.add_parser("keygen", help="write a new age identity as the backup key (mode 0600); never replaces "
                                               "one (a key file from before the age format gets one added)")
    keygen.add_argument("--output", metavar="FILE",
                        help="where (default: $SINGULARITY_BACKUP_KEY_FILE, else HOME/backup.key, used from there)")

    for parser in (create, listing, verify, restore, prune, keygen):
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        common(parser)


class TerminalProgress:
    """Bytes and rate on one self-rewriting line, only when ``stream`` is a terminal."""

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.label, self.done = label, 0
        self.began = self.shown = time.monotonic()

    def __call__(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self.shown >= 0.2:
            self.shown = now
            rate = self.done / max(now - self.began, 1e-9)
            self.stream.write(f"\r{self.label}: {human_bytes(self.done)}, {human_bytes(rate)}/s   ")
            self.stream.flush()

    def end(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()


def _config_file(args: argparse.Namespace) -> Path | None:
    path = getattr(args, "config", None) or os.environ.get("SINGULARITY_CONFIG")
    return Path(path).expanduser() if path else None


def _backups(config: Config, args: argparse.Namespace, *, need_database: bool) -> Backups:
    from singularity_ops.controllers.backup.store import Backups
    from singularity_ops.errors import DatabaseError
    from singularity_ops.store import Database

    try:
        database = Database.open_migrated(config.database, config.home)
    except DatabaseError:
        if need_database:
            raise
        database = None  # list and restore still work from the manifest files
    return Backups(config, database, config_file=_config_file(args))


def _line(record: BackupRecord) -> list[str]:
    verified = f"{record.verified_at:%Y-%m-%d %H:%M}" if record.verified_at else "-"
    return [record.id, record.kind, record.format or "-", record.status,
            f"{record.started.astimezone():%Y-%m-%d %H:%M}",
            human_bytes(record.bytes) if record.bytes is not None else "-", verified, record.error or ""]


def _create(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.errors import SingularityError

    alerts = None
    if args.notify:
        from singularity_ops.alerting.push import AlertPusher

        alerts = AlertPusher(config.alerts.alertmanager_url).start()
    progress = TerminalProgress("backing up")
    try:
        backups = _backups(config, args, need_database=True)
        record = backups.create(args.kind, verify=not args.no_verify, progress=progress)
    except SingularityError as exc:
        if alerts is not None:
            from singularity_ops.controllers.backup.notices import announce_failure

            announce_failure(alerts, args.kind, exc)
        raise
    else:
        if alerts is not None:
            from singularity_ops.controllers.backup.notices import announce_success

            announce_success(alerts, record)  # type: ignore[arg-type]
    finally:
        progress.end()
        if alerts is not None and not alerts.flush(10):
            print(f"could not reach Alertmanager at {config.alerts.alertmanager_url} to announce it",
                  file=sys.stderr)
        if alerts is not None:
            alerts.stop()
    assert record is not None
    if args.json:
        print(json.dumps(record.as_json(), indent=2))
    else:
        took = (record.finished - record.started).total_seconds() if record.finished else 0
        state = "verified" if record.verified_at else "NOT verified (--no-verify)"
        print(f"backup {record.id}: {human_bytes(record.bytes or 0)} in {took:.1f} s, {state}; {record.path}")
    return 0


def _list(config: Config, args: argparse.Namespace) -> int:
    records = _backups(config, args, need_database=False).list()
    if args.json:
        print(json.dumps({"backups": [record.as_json() for record in records]}, indent=2))
    elif not records:
        print("no backups yet; make one with: singularity-ops backup create")
    else:
        print_table([["ID", "KIND", "FORMAT", "STATUS", "STARTED", "SIZE", "VERIFIED", "ERROR"],
                      *(_line(record) for record in records)])
    return 0


def _verify(config: Config, args: argparse.Namespace) -> int:
    progress = TerminalProgress("verifying")
    try:
        result = _backups(config, args, need_database=True).verify(args.id, progress)
    finally:
        progress.end()
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        print(f"backup {result.record.id} verified: restored into a scratch database in {result.seconds:.1f} s, "
              f"{len(result.tables)} tables and {sum(result.tables.values())} rows match its manifest")
    return 0


def _restore(config: Config, args: argparse.Namespace) -> int:
    backups = _backups(config, args, need_database=False)
    target = args.to
    if target == "embedded":
        from singularity_ops.store import start_embedded

        target = start_embedded(config.home)
    progress = TerminalProgress("restoring")
    try:
        result = backups.restore(args.id, target, force=args.force, files_to=Path(args.files) if args.files else None,
                                 progress=progress)
    finally:
        progress.end()
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        print(f"restored backup {result.record.id} into {result.target} in {result.seconds:.1f} s: "
              f"{len(result.tables)} tables, {sum(result.tables.values())} rows, as in its manifest")
        for name in result.files:
            print(f"  wrote {Path(args.files) / name}")
    return 0


def _prune(config: Config, args: argparse.Namespace) -> int:
    pruned = _backups(config, args, need_database=True).prune(dry_run=args.dry_run)
    if args.json:
        print(json.dumps(pruned.as_json(), indent=2))
    else:
        verb = "would remove" if args.dry_run else "removed"
        for record in pruned.removed:
            print(f"{verb} {record.id}")
        for path in pruned.files:
            print(f"  {'would delete' if args.dry_run else 'deleted'} {path}")
        from singularity_ops.controllers.backup.notices import file_count

        print(f"{len(pruned.removed)} {verb}, {len(pruned.kept)} kept, {file_count(len(pruned.files))} "
              f"{'would be deleted' if args.dry_run else 'deleted'} (backup.keep = {config.backup.keep} per kind)")
    return 0


def _keygen(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.controllers.backup.catalogue import default_key_file, key_file_for
    from singularity_ops.controllers.backup.errors import BackupError
    from singularity_ops.controllers.backup.keys import load_keys, write_new_key

    path = Path(args.output).expanduser() if args.output else config.backup.key_file or default_key_file(config)
    current = key_file_for(config)
    carry = None
    if current is not None and current != path and current.exists():
        try:  # a new key file elsewhere takes the old-format key along, so that it reads the older backups too
            carry = load_keys(current).legacy
        except BackupError:
            carry = None
    made = write_new_key(path, carry)
    if args.json:
        print(json.dumps({"path": str(path), "public_key": made.public_key, "old_key_id": made.kept_old_key}))
        return 0
    use = ("Backups use it from there" if path in (config.backup.key_file, default_key_file(config))
           else f"Set SINGULARITY_BACKUP_KEY_FILE={path}")
    if made.kept_old_key and path == current:
        print(f"added an age identity to {path} (public key {made.public_key}); the old key (key id "
              f"{made.kept_old_key}) stays in it and still reads the backups made before the age format.")
    else:
        old = (f"; it carries the old key (key id {made.kept_old_key}) along, to read the older backups"
               if made.kept_old_key else "")
        print(f"wrote a new backup key to {path} (mode 0600, an age identity with public key {made.public_key}"
              f"{old}).")
    print(f"{use}; keep a copy away from this machine: without it no backup can be read.")
    return 0


ACTIONS = {"create": _create, "list": _list, "verify": _verify, "restore": _restore, "prune": _prune,
           "keygen": _keygen}


def run(config: Config, args: argparse.Namespace) -> int:
    return ACTIONS[args.backup_command](config, args)
