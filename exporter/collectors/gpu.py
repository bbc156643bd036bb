"""NVIDIA GPUs via NVML: temperature, memory, power and utilisation per GPU.

Sample exposition::

    llm_gpu_up 1
    llm_gpu_temperature_celsius{gpu="0",name="NVIDIA H100 80GB HBM3"} 41.0
    llm_gpu_memory_used_bytes{gpu="0",name="NVIDIA H100 80GB HBM3"} 5.4e+08
    llm_gpu_power_watts{gpu="0",name="NVIDIA H100 80GB HBM3"} 71.3

Check by hand: ``nvidia-smi --query-gpu=index,name,temperature.gpu,memory.used,power.draw --format=csv``.
NVML missing (no driver, no GPU) → ``llm_gpu_up 0`` and nothing else; init is retried every minute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from types import ModuleType

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
RETRY_SECONDS = 60.0


def _load_nvml() -> ModuleType:
    import pynvml  # from nvidia-ml-py

    return pynvml


class GpuCollector(Collector):
    name = "gpu"

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self._nvml = nvml
        self._ready = False
        self._failed_at = float("-inf")
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []

    def _init(self) -> ModuleType | None:
        with self._lock:
            if self._ready:
                return self._nvml
            if time.monotonic() - self._failed_at < RETRY_SECONDS:
                return None
            try:
                nvml = self._nvml or _load_nvml()
                nvml.nvmlInit()
            except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError…
                if self._failed_at == float("-inf"):
                    log.info("no NVIDIA GPU metrics: %s", exc or type(exc).__name__)
                self._failed_at = time.monotonic()
                return None
            self._nvml, self._ready = nvml, True
            return nvml

    def collect(self) -> Iterator[Metric]:
        nvml = self._init()
        yield GaugeMetricFamily("llm_gpu_up", "1 when NVML answered, else 0", value=1 if nvml else 0)
        if nvml is None:
            return
        labels = ["gpu", "name"]
        families = {
            "temperature": GaugeMetricFamily("llm_gpu_temperature_celsius", "GPU core temperature", labels=labels),
            "used": GaugeMetricFamily("llm_gpu_memory_used_bytes", "GPU memory in use", labels=labels),
            "total": GaugeMetricFamily("llm_gpu_memory_total_bytes", "GPU memory installed", labels=labels),
            "power": GaugeMetricFamily("llm_gpu_power_watts", "GPU power draw", labels=labels),
            "utilization": GaugeMetricFamily("llm_gpu_utilization_ratio",
                                             "Fraction of the last sample period the GPU was busy", labels=labels),
        }
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            log.warning("NVML device count failed: %s", exc)
            count = 0
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = nvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
            except nvml.NVMLError as exc:
                log.warning("NVML GPU %d unreadable: %s", index, exc)
                continue
            key = [str(index), name]
            readings = {
                "temperature": lambda h=handle: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
                "used": lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h).used,
                "total": lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h).total,
                "power": lambda h=handle: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0,  # milliwatts
                "utilization": lambda h=handle: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
            }
            for field, read in readings.items():
                try:  # a GPU without a power sensor still reports the rest
                    families[field].add_metric(key, read())
                except nvml.NVMLError:
                    continue
        yield from families.values()
