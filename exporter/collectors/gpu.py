"""NVIDIA GPUs via NVML: temperature, memory, power and utilisation per GPU.

Sample exposition::

    llm_gpu_up 1
    llm_gpu_temperature_celsius{gpu="0",name="NVIDIA H100 80GB HBM3"} 41.0
    llm_gpu_memory_used_bytes{gpu="0",name="NVIDIA H100 80GB HBM3"} 5.4e+08
    llm_gpu_power_watts{gpu="0",name="NVIDIA H100 80GB HBM3"} 71.3

Check by hand: ``nvidia-smi --query-gpu=index,name,temperature.gpu,memory.used,power.draw --format=csv``.
NVML missing (no driver, no GPU) → ``llm_gpu_up 0`` and nothing else; init is retried every minute
(``singularity_ops.hardware``, shared with the gateway's cost and rollups).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.hardware import Nvml, shared_nvml

_FAMILIES = (  # reading attribute, metric name, help
    ("temperature_celsius", "llm_gpu_temperature_celsius", "GPU core temperature"),
    ("memory_used_bytes", "llm_gpu_memory_used_bytes", "GPU memory in use"),
    ("memory_total_bytes", "llm_gpu_memory_total_bytes", "GPU memory installed"),
    ("power_watts", "llm_gpu_power_watts", "GPU power draw"),
    ("utilization_ratio", "llm_gpu_utilization_ratio", "Fraction of the last sample period the GPU was busy"),
)


class GpuCollector(Collector):
    name = "gpu"

    def __init__(self, nvml: Nvml | ModuleType | None = None) -> None:
        if nvml is None:
            nvml = shared_nvml()
        self._nvml = nvml if isinstance(nvml, Nvml) else Nvml(nvml)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        gpus = self._nvml.gpus()
        yield GaugeMetricFamily("llm_gpu_up", "1 when NVML answered, else 0", value=0 if gpus is None else 1)
        if gpus is None:
            return
        for attribute, name, documentation in _FAMILIES:
            family = GaugeMetricFamily(name, documentation, labels=["gpu", "name"])
            for gpu in gpus:
                value = getattr(gpu, attribute)
                if value is not None:
                    family.add_metric([str(gpu.index), gpu.name], value)
            yield family
