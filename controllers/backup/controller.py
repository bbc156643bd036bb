"""The backup controller: runs the daily and weekly backups on their cron schedules, verifies each, prunes,
and says how it went through Alertmanager.

A kind is due when its schedule fired since the newest backup of that kind started (any status), so a time
missed while nothing ran (the machine was off) is made up at the next tick, once. Several replicas may run it:
the backup lock lets one work, and the check is repeated under the lock so the others do not repeat it.
Metrics come from the catalogue (exporter/collectors/backup.py), not from this process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from singularity_ops.alerting.push import AlertPusher
from singularity_ops.config import Config
from singularity_ops.controllers.backup.notices import announce_failure, announce_success, success_summary
from singularity_ops.controllers.registry import register
from singularity_ops.cron import Cron, zone_named
from singularity_ops.errors import SingularityError
from singularity_ops.store import Database

if TYPE_CHECKING:
    from singularity_ops.controllers.backup.store import Backups

log = logging.getLogger(__name__)


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

    def _service(self) -> Backups:
        """Imported on the first tick, so that `run` pays for cryptography only where backups run."""
        if self._backups is None:
            from singularity_ops.controllers.backup.store import Backups
            if self._database is None:
                self._database = Database.open_migrated(self.config.database, self.config.home)
            self._backups = Backups(self.config, self._database, config_file=self.config_file)
        return self._backups

    def due(self, now: datetime) -> list[tuple[str, datetime]]:
        """(kind, the firing time it is due for) for each kind whose schedule fired since its newest backup."""
        if not self.settings.enabled or not self.schedules:
            return []
        backups = self._service()
        with backups.database.connect() as conn:
            newest = dict(conn.execute("SELECT kind, max(started) FROM backups GROUP BY kind").fetchall())
        due = []
        for kind, cron in self.schedules.items():
            fired = cron.previous(now, self.zone)
            if newest.get(kind) is None or newest[kind] < fired:
                due.append((kind, fired))
        return due

    def tick(self) -> None:
        # Without the database this raises: the loop logs it once, and the exporter's database metrics alert.
        for kind, fired in self.due(self.clock()):
            self._run(kind, fired)

    def _run(self, kind: str, fired: datetime) -> None:
        from singularity_ops.controllers.backup.store import BackupBusy

        try:
            record = self._service().create(kind, verify=True, unless_since=fired, prune=True)
        except BackupBusy as exc:
            log.info("%s backup not started: %s", kind, exc)
            return
        except SingularityError as exc:
            self._failed(kind, exc)
            return
        if record is None:
            log.info("%s backup for %s already made by another process", kind, fired.isoformat())
            return
        log.info("%s (%s)", success_summary(record), record.id)
        if self.alerts is not None:
            announce_success(self.alerts, record)

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
