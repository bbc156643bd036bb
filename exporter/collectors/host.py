"""The host's memory, swap, CPU, load and temperatures, via psutil.

Sample exposition::

    llm_host_memory_total_bytes 2.04e+09
    llm_host_memory_available_bytes 1.1e+09
    llm_host_swap_in_bytes_total 0.0
    llm_host_cpu_seconds_total{mode="user"} 1234.5
    llm_host_load_average{period="1m"} 0.42
    llm_cpu_temperature_celsius{sensor="coretemp/Package id 0"} 48.0

Check by hand: ``free -b``, ``cat /proc/loadavg``, ``sensors``. No sensors → no temperature series.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.hardware import cpu_temperatures


class HostCollector(Collector):
    name = "host"

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        ram, swap = psutil.virtual_memory(), psutil.swap_memory()
        yield GaugeMetricFamily("llm_host_memory_total_bytes", "Physical memory", value=ram.total)
        yield GaugeMetricFamily("llm_host_memory_available_bytes",
                                "Memory available to new processes without swapping", value=ram.available)
        yield GaugeMetricFamily("llm_host_swap_total_bytes", "Swap space", value=swap.total)
        yield GaugeMetricFamily("llm_host_swap_free_bytes", "Unused swap space", value=swap.free)
        yield CounterMetricFamily("llm_host_swap_in_bytes", "Bytes swapped in from disk", value=swap.sin)
        yield CounterMetricFamily("llm_host_swap_out_bytes", "Bytes swapped out to disk", value=swap.sout)

        cpu = CounterMetricFamily("llm_host_cpu_seconds", "CPU time spent in each mode, all cores",
                                  labels=["mode"])
        for mode, seconds in psutil.cpu_times()._asdict().items():
            cpu.add_metric([mode], seconds)
        yield cpu
        yield GaugeMetricFamily("llm_host_cpus", "Logical CPUs", value=psutil.cpu_count() or 0)
        load = GaugeMetricFamily("llm_host_load_average", "System load average", labels=["period"])
        for period, value in zip(("1m", "5m", "15m"), os.getloadavg(), strict=True):
            load.add_metric([period], value)
        yield load

        temperature = GaugeMetricFamily("llm_cpu_temperature_celsius", "Temperature of each sensor",
                                        labels=["sensor"])
        for sensor, celsius in cpu_temperatures():
            temperature.add_metric([sensor], celsius)
        yield temperature
