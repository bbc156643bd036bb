"""The backup controller: runs the daily and weekly backups on their cron schedules, verifies each, prunes,
and says how it went through Alertmanager.

A kind is due when its schedule fired since the newest backup of that kind started (any status), so a time
missed while nothing ran (the machine was off) is made up at the next tick, once. Several replicas may run it:
the backup lock lets one work, and the check is repeated under the lock so the others do not repeat it.

First run: with no key anywhere (``backup.key_file``/``SINGULARITY_BACKUP_KEY_FILE`` unset, no
``SINGULARITY_HOME/backup.key``) it writes one there (an age identity), as ``backup keygen`` does, and says once
to keep a copy.
With ``backup.auto_keygen: false`` it does not: scheduled backups wait for a key, which is not a failure (one
warning, an info notice, ``singularity_backup_configured 0``). Each tick records what it found in
``backup_controllers``, which the exporter reads. Other metrics come from the catalogue
(exporter/collectors/backup.py), not from this process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from singularity_ops.alerting.push import AlertPusher
from singularity_ops.config import Config
from singularity_ops.controllers.backup.notices import (
    announce_failure,
    announce_not_configured,
    announce_success,
    success_summary,
)
from singularity_ops.controllers.registry import register
from singularity_ops.cron import Cron, zone_named
from singularity_ops.errors import SingularityError
from singularity_ops.store import Database

if TYPE_CHECKING:
    import psycopg

    from singularity_ops.controllers.backup.retention import Pruned
    from singularity_ops.controllers.backup.store import Backups

log = logging.getLogger(__name__)

NOT_CONFIGURED_REPEAT = timedelta(minutes=30)  # the info notice is pushed again while it lasts (it lasts 1 h)


class BackupController:
    name = "backup"
    interval_seconds = 30.0

    def __init__(self, config: Config, *, database: Database | None = None, alerts: AlertPusher | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), config_file: Path | None = None) -> None:
        self.config = config
        self.settings = config.backup
        self.alerts = alerts
        self.clock = clock
        self.zone: tzinfo | None = zone_named(self.settings.timezone)
        self.schedules = {kind: Cron.parse(text) for kind, text in (("daily", self.settings.daily),
                                                                     ("weekly", self.settings.weekly)) if text}
        if config_file is None and os.environ.get("SINGULARITY_CONFIG"):
            config_file = Path(os.environ["SINGULARITY_CONFIG"]).expanduser()
        self.config_file = config_file
        self._database = database
        self._backups: Backups | None = None
        self._configured: bool | None = None  # None: not looked yet
        self._not_configured_pushed: datetime | None = None

    def _service(self) -> Backups:
        """Imported on the first tick, so that `run` pays for the encryption libraries only where backups run."""
        if self._backups is None:
            from singularity_ops.controllers.backup.store import Backups
            if self._database is None:
                self._database = Database.open_migrated(self.config.database, self.config.home)
            self._backups = Backups(self.config, self._database, config_file=self.config_file, clock=self.clock)
        return self._backups

    @property
    def scheduled(self) -> bool:
        return bool(self.settings.enabled and self.schedules)

    def due(self, now: datetime) -> list[tuple[str, datetime]]:
        """(kind, the firing time it is due for) for each kind whose schedule fired since its newest backup."""
        if not self.scheduled:
            return []
        with self._service().database.connect() as conn:
            return self._due(conn, now)

    def _due(self, conn: psycopg.Connection, now: datetime) -> list[tuple[str, datetime]]:
        newest = dict(conn.execute("SELECT kind, max(started) FROM backups GROUP BY kind").fetchall())
        due = []
        for kind, cron in self.schedules.items():
            fired = cron.previous(now, self.zone)
            if newest.get(kind) is None or newest[kind] < fired:
                due.append((kind, fired))
        return due

    def tick(self) -> None:
        # Without the database this raises: the loop logs it once, and the exporter's database metrics alert.
        if not self.scheduled:
            return
        now = self.clock()
        with self._service().database.connect() as conn:
            configured = self._key_ready(conn, now)
            conn.execute("INSERT INTO backup_controllers (host, configured) VALUES (%s, %s) ON CONFLICT (host) "
                         "DO UPDATE SET configured = EXCLUDED.configured, checked = now()",
                         (self._service().host, configured))
            due = self._due(conn, now) if configured else []
        for kind, fired in due:
            self._run(kind, fired)

    def _key_ready(self, conn: psycopg.Connection, now: datetime) -> bool:
        """Whether scheduled backups have a key; on the first run without one, make it (unless auto_keygen is off).
        Only the first run: once backups were made with a key, a missing key is a fault, and the attempts say so
        (BackupFailed), as they do for a key named by backup.key_file that cannot be read."""
        from singularity_ops.controllers.backup.catalogue import default_key_file, key_file_for
        from singularity_ops.controllers.backup.errors import BackupError
        from singularity_ops.controllers.backup.keys import write_new_key

        default = default_key_file(self.config)
        configured = key_file_for(self.config) is not None
        if not configured and conn.execute("SELECT 1 FROM backups WHERE manifest IS NOT NULL LIMIT 1").fetchone():
            configured = True  # the key was lost: never replace it silently
        elif not configured and self.settings.auto_keygen:
            try:
                key = write_new_key(default)
            except BackupError as exc:  # e.g. a read-only home: the backup attempt then fails, and pages
                log.error("cannot create a backup key: %s", exc)
            else:
                log.warning("backups were not set up: wrote a new backup key to %s (mode 0600, an age identity with "
                            "public key %s); keep a copy of it off this machine: without it no backup can be read",
                            default, key.public_key)
            configured = True
        if not configured:
            if self._configured is not False:
                log.warning("scheduled backups are off: there is no backup key (SINGULARITY_BACKUP_KEY_FILE is "
                            "unset and %s does not exist) and backup.auto_keygen is false; create one with "
                            "`singularity-ops backup keygen`", default)
            if self.alerts is not None and (self._not_configured_pushed is None
                                            or now - self._not_configured_pushed >= NOT_CONFIGURED_REPEAT):
                announce_not_configured(self.alerts, default)
                self._not_configured_pushed = now
        elif self._configured is False:
            log.info("backup key found at %s: scheduled backups start", key_file_for(self.config) or default)
            if self.alerts is not None:
                announce_not_configured(self.alerts, default, resolved=True)
            self._not_configured_pushed = None
        self._configured = configured
        return configured

    def _run(self, kind: str, fired: datetime) -> None:
        from singularity_ops.controllers.backup.catalogue import BackupBusy

        try:
            record = self._service().create(kind, verify=True, unless_since=fired)
        except BackupBusy as exc:
            log.info("%s backup not started: %s", kind, exc)
            return
        except SingularityError as exc:
            self._failed(kind, exc)
            return
        if record is None:
            log.info("%s backup for %s already made by another process", kind, fired.isoformat())
            return
        pruned = self._prune()
        log.info("%s (%s)", success_summary(record), record.id)
        if self.alerts is not None:
            announce_success(self.alerts, record, pruned)

    def _prune(self) -> Pruned | None:
        """Retention after each new backup. Not done this time when another job holds the lock: the next run
        does it."""
        from singularity_ops.controllers.backup.catalogue import BackupBusy

        try:
            return self._service().prune()
        except BackupBusy as exc:
            log.info("retention not applied this time: %s", exc)
        except SingularityError as exc:
            log.warning("retention failed: %s", exc)
        return None

    def _failed(self, kind: str, exc: BaseException) -> None:
        log.error("%s backup failed: %s", kind, exc)
        if self.alerts is not None:
            announce_failure(self.alerts, kind, exc)

    def close(self) -> None:
        if self.alerts is not None:
            self.alerts.flush(5)
            self.alerts.stop()
        if self._database is not None:
            self._database.close()


@register("backup")
def build(config: Config) -> BackupController:
    return BackupController(config, alerts=AlertPusher(config.alerts.alertmanager_url).start())
