"""Cross-model validation results as metrics, read from PostgreSQL at scrape time, so that whichever process serves
/metrics shows them, whether the validator runs inside ``run``, as ``controller validator`` or as ``validate``.

Per model, the figures of its latest validation in a run that finished (skipped and failed rows do not count)::

    singularity_model_quality_score{model="qwen2.5-coder:1.5b"} 0.8712
    singularity_model_validation_accuracy{model="qwen2.5-coder:1.5b"} 0.9394
    singularity_model_validation_latency_seconds{model="qwen2.5-coder:1.5b",quantile="0.5"} 1.23
    singularity_model_validation_latency_seconds{model="qwen2.5-coder:1.5b",quantile="0.95"} 3.41
    singularity_model_validation_tokens_per_second{model="qwen2.5-coder:1.5b"} 18.2
    singularity_model_validation_timestamp_seconds{model="qwen2.5-coder:1.5b"} 1.7489328e+09
    singularity_model_demoted{model="tinyllama:1.1b"} 1.0
    singularity_model_validation_last_run_timestamp_seconds 1.7489328e+09
    singularity_model_validation_last_run_success 1.0

Check by hand: ``SELECT * FROM model_validation_results ORDER BY at DESC`` and ``SELECT * FROM model_status``;
``singularity-ops validate --json`` prints the same figures for a new run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.store import KeptConnection, kept

LATEST = """
SELECT DISTINCT ON (r.model) r.model, r.quality_score, r.accuracy, r.latency_p50_seconds, r.latency_p95_seconds,
       r.tokens_per_second, r.at
FROM model_validation_results r JOIN validation_runs v ON v.id = r.run_id
WHERE v.status = 'ok' AND r.status IN ('ok', 'demoted', 'promoted') AND r.accuracy IS NOT NULL
ORDER BY r.model, r.at DESC
"""


class ValidationCollector(Collector):
    """Register it inside the exporter's ScrapeCollector: a database outage then reads as
    ``singularity_collector_success{collector="validation"} 0``, not as a failed scrape."""

    name = "validation"

    def __init__(self, connection: KeptConnection | Callable[[], psycopg.Connection]) -> None:
        self.connection = kept(connection)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        latest, statuses, last_run = self.connection.run(self._read)
        families = {
            "quality": GaugeMetricFamily("singularity_model_quality_score",
                                         "Quality score 0..1 of the model's latest validation "
                                         "(docs/MODEL_VALIDATION.md)",
                                         labels=["model"]),
            "accuracy": GaugeMetricFamily("singularity_model_validation_accuracy",
                                          "Weighted share 0..1 of the suite's cases the model passed in its latest "
                                          "validation", labels=["model"]),
            "latency": GaugeMetricFamily("singularity_model_validation_latency_seconds",
                                         "Answer time per case in the model's latest validation, median and 95th "
                                         "percentile", labels=["model", "quantile"]),
            "speed": GaugeMetricFamily("singularity_model_validation_tokens_per_second",
                                       "Generation speed over the model's latest validation", labels=["model"]),
            "at": GaugeMetricFamily("singularity_model_validation_timestamp_seconds",
                                    "When the model's latest validation finished (Unix time)", labels=["model"]),
        }
        for model, quality, accuracy, p50, p95, speed, at in latest:
            if quality is not None:
                families["quality"].add_metric([model], quality)
            families["accuracy"].add_metric([model], accuracy)
            for quantile, value in (("0.5", p50), ("0.95", p95)):
                if value is not None:
                    families["latency"].add_metric([model, quantile], value)
            if speed is not None:
                families["speed"].add_metric([model], speed)
            families["at"].add_metric([model], at.timestamp())
        yield from families.values()
        demoted = GaugeMetricFamily("singularity_model_demoted", "1 while the model is demoted (model_status): never "
                                    "preloaded nor routed to", labels=["model"])
        for model, status in statuses:
            demoted.add_metric([model], 1 if status == "demoted" else 0)
        yield demoted
        if last_run is not None:
            finished, status = last_run
            yield GaugeMetricFamily("singularity_model_validation_last_run_timestamp_seconds",
                                    "When the newest validation run finished (Unix time)", value=finished.timestamp())
            yield GaugeMetricFamily("singularity_model_validation_last_run_success",
                                    "1 when the newest validation run finished, 0 when it failed",
                                    value=1 if status == "ok" else 0)

    @staticmethod
    def _read(conn: psycopg.Connection) -> tuple[list[tuple], list[tuple], tuple | None]:
        latest = conn.execute(LATEST).fetchall()
        statuses = conn.execute("SELECT model, status FROM model_status ORDER BY model").fetchall()
        last_run = conn.execute("SELECT finished_at, status FROM validation_runs WHERE finished_at IS NOT NULL "
                                "ORDER BY finished_at DESC LIMIT 1").fetchone()
        return latest, statuses, last_run

    def close(self) -> None:
        self.connection.close()
