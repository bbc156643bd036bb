"""Backup metrics, read from the catalogue at scrape time, so that whichever process serves /metrics shows them
whether the backup controller runs inside ``run``, as ``controller backup`` elsewhere, or backups come from
``backup create`` on a timer.

Sample exposition::

    singularity_backup_last_success_timestamp_seconds{kind="daily"} 1.7487468e+09
    singularity_backup_last_success_timestamp_seconds{kind="weekly"} 0.0
    singularity_backup_last_success_timestamp_seconds{kind="manual"} 0.0
    singularity_backup_last_size_bytes{kind="daily"} 1.2345678e+07
    singularity_backup_duration_seconds{kind="daily"} 4.2
    singularity_backup_failures_total{kind="daily"} 1.0
    singularity_backup_configured 1.0

Check by hand: ``singularity-ops backup list``, or ``SELECT kind, status, started, finished, bytes, verified_at
FROM backups ORDER BY started DESC``. A success is a backup that was written *and* verified; a kind without one
reports 0 (for BackupStale) unless scheduled backups are off, or not set up (no key, ``backup.auto_keygen``
false), and there never was one. Failures count the rows of ``backup_failures`` (one per failed attempt or
verification, never deleted). ``configured`` is what the backup controllers found when they last looked for their
key (``backup_controllers``, the last 10 minutes; 0 if any of them has none); absent when none has looked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.config import BackupConfig
from singularity_ops.store import KeptConnection, kept

KINDS = ("daily", "weekly", "manual")
_READ = """
SELECT kind,
       max(finished) FILTER (WHERE status = 'ok' AND verified_at IS NOT NULL),
       (array_agg(bytes ORDER BY started DESC) FILTER (WHERE status = 'ok'))[1],
       (array_agg(extract(epoch FROM finished - started) ORDER BY started DESC) FILTER (WHERE status = 'ok'))[1]
FROM backups GROUP BY kind
"""
_FAILURES = "SELECT kind, count(*) FROM backup_failures GROUP BY kind"
# The controllers' latest look for their key; NULL when none looked in the last 10 minutes.
_CONFIGURED = "SELECT bool_and(configured) FROM backup_controllers WHERE checked > now() - interval '10 minutes'"


class BackupCollector(Collector):
    """Register it inside the exporter's ScrapeCollector: a database outage then reads as
    ``singularity_collector_success{collector="backup"} 0``, not as a failed scrape."""

    name = "backup"

    def __init__(self, connection: KeptConnection | Callable[[], psycopg.Connection], settings: BackupConfig) -> None:
        self.connection = kept(connection)
        self.scheduled = bool(settings.enabled and (settings.daily or settings.weekly))

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        def read(conn: psycopg.Connection) -> tuple[dict, dict, bool | None]:
            return ({row[0]: row[1:] for row in conn.execute(_READ).fetchall()},
                    dict(conn.execute(_FAILURES).fetchall()), conn.execute(_CONFIGURED).fetchone()[0])

        rows, failed_by_kind, configured = self.connection.run(read)
        success = GaugeMetricFamily("singularity_backup_last_success_timestamp_seconds",
                                    "When the newest verified backup finished (Unix time; 0: none yet)",
                                    labels=["kind"])
        size = GaugeMetricFamily("singularity_backup_last_size_bytes", "Size of the newest backup's encrypted file",
                                 labels=["kind"])
        duration = GaugeMetricFamily("singularity_backup_duration_seconds",
                                     "How long the newest backup took, verification included", labels=["kind"])
        failures = CounterMetricFamily("singularity_backup_failures",
                                       "Backup attempts and verifications that failed", labels=["kind"])
        set_up = GaugeMetricFamily("singularity_backup_configured",
                                   "1: the backup controller has a key for scheduled backups; 0: it has none and "
                                   "backup.auto_keygen is false")
        if configured is not None:
            set_up.add_metric([], 1.0 if configured else 0.0)
        # Not set up on purpose is not stale: no BackupStale until a first backup exists.
        expected = (self.scheduled and configured is not False) or any(row[0] is not None for row in rows.values())
        for kind in KINDS:
            last, last_bytes, seconds = rows.get(kind, (None, None, None))
            if expected:
                success.add_metric([kind], last.timestamp() if last is not None else 0.0)
            if last_bytes is not None:
                size.add_metric([kind], last_bytes)
            if seconds is not None:
                duration.add_metric([kind], float(seconds))
            failures.add_metric([kind], failed_by_kind.get(kind, 0))
        yield from (success, size, duration, failures, set_up)

    def close(self) -> None:
        self.connection.close()
