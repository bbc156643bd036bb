"""The alert thresholds the user configured, as gauges the alerting rules compare against.

Sample exposition::

    singularity_alert_threshold{alert="HostMemoryHigh"} 0.85

Only configured thresholds are published; each rule falls back to its documented default for the rest, so
changing ``alerts.thresholds`` in the config file changes an alert without editing any rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class AlertThresholds(Collector):
    def __init__(self, thresholds: Mapping[str, float]) -> None:
        self.thresholds = dict(thresholds)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("singularity_alert_threshold",
                                   "Configured threshold of an alert (alerts.thresholds); absent means the default",
                                   labels=["alert"])
        for alert, value in sorted(self.thresholds.items()):
            family.add_metric([alert], value)
        yield family
