"""The guard's metrics, read from its state at scrape time. Client ids never go into labels.

Sample exposition::

    singularity_security_events_total{kind="brute_force",action="ban"} 1.0
    singularity_security_banned_clients 1.0
    singularity_security_auth_failures_total 5.0
    singularity_security_spike_active 0.0
    singularity_security_tracked_clients 42.0
    singularity_untrusted_forwarded_requests_total 0.0

Check by hand: ``singularity-ops security events --since 1h``, ``singularity-ops security bans list``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from singularity_ops.exporter.gateway.guard.detector import Guard


class GuardMetrics(Collector):
    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        guard = self.guard
        events = CounterMetricFamily("singularity_security_events",
                                     "Threat-detector detections and admin calls, by kind and what was done (allow: an "
                                     "admin call let through, flag: recorded, throttle: 429, block: 403, ban: the "
                                     "client is banned)", labels=["kind", "action"])
        for (kind, action), count in guard.events.items():
            events.add_metric([kind, action], count)
        yield events
        yield GaugeMetricFamily("singularity_security_banned_clients", "Clients banned right now",
                                value=guard.bans.count_active(guard.clock()))
        yield CounterMetricFamily("singularity_security_auth_failures",
                                  "Requests refused for a missing or wrong API key", value=guard.auth_failures)
        yield GaugeMetricFamily("singularity_security_spike_active",
                                "1 while the global request rate is a spike against its baseline",
                                value=1 if guard.spike is not None and guard.spike.active else 0)
        yield GaugeMetricFamily("singularity_security_tracked_clients",
                                "Clients whose state the detector keeps (at most guard.max_clients)",
                                value=len(guard.clients))
        yield CounterMetricFamily("singularity_untrusted_forwarded_requests",
                                  "Requests from an exempt address carrying X-Forwarded-For or Forwarded while the "
                                  "peer is not in gateway.trusted_proxies", value=guard.forwarded.total)
