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

Check by hand: ``singularity-ops backup list``, or ``SELECT kind, status, started, finished, bytes, verified_at
FROM backups ORDER BY started DESC``. A success is a backup that was written *and* verified; a kind without one
reports 0 (for BackupStale) unless scheduled backups are off and there never was one. Failures count the
``failed`` rows, which are never deleted.
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
       count(*) FILTER (WHERE status = 'failed'),
       (array_agg(bytes ORDER BY started DESC) FILTER (WHERE status = 'ok'))[1],
       (array_agg(extract(epoch FROM finished - started) ORDER BY started DESC) FILTER (WHERE status = 'ok'))[1]
FROM backups GROUP BY kind
"""


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
        rows = {row[0]: row[1:] for row in self.connection.run(lambda conn: conn.execute(_READ).fetchall())}
        success = GaugeMetricFamily("singularity_backup_last_success_timestamp_seconds",
                                    "When the newest verified backup finished (Unix time; 0: none yet)",
                                    labels=["kind"])
        size = GaugeMetricFamily("singularity_backup_last_size_bytes", "Size of the newest backup's encrypted file",
                                 labels=["kind"])
        duration = GaugeMetricFamily("singularity_backup_duration_seconds",
                                     "How long the newest backup took, verification included", labels=["kind"])
        failures = CounterMetricFamily("singularity_backup_failures", "Backup attempts that failed (failed rows)",
                                       labels=["kind"])
        expected = self.scheduled or any(row[0] is not None for row in rows.values())
        for kind in KINDS:
            last, failed, last_bytes, seconds = rows.get(kind, (None, 0, None, None))
            if expected:
                success.add_metric([kind], last.timestamp() if last is not None else 0.0)
            if last_bytes is not None:
                size.add_metric([kind], last_bytes)
            if seconds is not None:
                duration.add_metric([kind], float(seconds))
            failures.add_metric([kind], failed)
        yield from (success, size, duration, failures)

    def close(self) -> None:
        self.connection.close()
