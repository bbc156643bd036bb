"""The model manager's decisions as metrics, read from PostgreSQL at scrape time, so that whichever process serves
/metrics shows them whether the manager runs inside ``run`` or as ``controller model-manager`` elsewhere.

Sample exposition::

    singularity_model_manager_actions_total{action="load",result="ok"} 3.0
    singularity_model_manager_actions_total{action="load",result="refused"} 0.0
    singularity_model_manager_actions_total{action="skip",result="memory"} 1.0
    singularity_model_desired{model="qwen2.5-coder:1.5b"} 1.0
    singularity_model_desired{model="phi4:14b"} 0.0
    singularity_model_manager_profile{profile="morning"} 1.0
    singularity_model_manager_profile{profile="none"} 0.0
    singularity_model_manager_last_plan_timestamp_seconds 1.7489328e+09

Check by hand: ``SELECT action, result, count(*) FROM model_manager_events GROUP BY 1, 2`` and
``SELECT * FROM model_manager_state``; ``singularity-ops models plan`` shows the plan behind them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.store import KeptConnection, kept

# Every (action, result) the manager records, exposed from 0 so that increase() sees the first event.
OUTCOMES = {
    "profile": ("ok",),
    "load": ("ok", "error", "refused"),
    "unload": ("ok", "error"),
    "refresh": ("ok", "error"),
    "skip": ("memory", "refused", "demoted", "not_installed", "backoff"),
}


class ModelManagerCollector(Collector):
    """Register it inside the exporter's ScrapeCollector: a database outage then reads as
    ``singularity_collector_success{collector="model_manager"} 0``, not as a failed scrape."""

    name = "model_manager"

    def __init__(self, connection: KeptConnection | Callable[[], psycopg.Connection],
                 profiles: Sequence[str] = ()) -> None:
        self.connection = kept(connection)
        self.profiles = list(profiles)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        counts, state = self.connection.run(self._read)
        actions = CounterMetricFamily("singularity_model_manager_actions",
                                      "Decisions of the model manager (model_manager_events rows)",
                                      labels=["action", "result"])
        recorded = {(action, result): count for action, result, count in counts}
        known = [(action, result) for action, results in OUTCOMES.items() for result in results]
        for action, result in known + sorted(set(recorded) - set(known)):
            actions.add_metric([action, result], recorded.get((action, result), 0))
        yield actions
        if state is None:
            return
        at, profile, desired, installed = state
        wanted = GaugeMetricFamily("singularity_model_desired",
                                   "1 when the model manager wants the model loaded, else 0", labels=["model"])
        for model in sorted(set(installed) | set(desired)):
            wanted.add_metric([model], 1 if model in desired else 0)
        yield wanted
        active = GaugeMetricFamily("singularity_model_manager_profile",
                                   "1 on the active profile (\"none\": outside every profile)", labels=["profile"])
        for name in dict.fromkeys([*self.profiles, "none", profile or "none"]):
            active.add_metric([name], 1 if name == (profile or "none") else 0)
        yield active
        yield GaugeMetricFamily("singularity_model_manager_last_plan_timestamp_seconds",
                                "When the acting model manager last planned (Unix time)", value=at.timestamp())

    @staticmethod
    def _read(conn: psycopg.Connection) -> tuple[list[tuple[str, str, int]], tuple | None]:
        counts = conn.execute(
            "SELECT action, result, count(*) FROM model_manager_events GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
        state = conn.execute("SELECT at, profile, desired, installed FROM model_manager_state").fetchone()
        return counts, state

    def close(self) -> None:
        self.connection.close()
