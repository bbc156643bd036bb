"""The one reader of the machine's sensors: NVIDIA GPUs through NVML (with a backoff) and psutil's temperatures.

The GPU collector, the gateway's cost model (watts) and its rollups (temperatures) all read through here, so a
host without a GPU tries ``nvmlInit`` once a minute in total, not once per reader every few seconds.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import psutil

log = logging.getLogger(__name__)
RETRY_SECONDS = 60.0
NVML_LIBRARY = "libnvidia-ml.so.1"  # the name pynvml itself opens on Linux


@dataclass(frozen=True)
class GpuReading:
    """One GPU's sensors at one moment; a sensor the GPU lacks (or that failed) is None."""

    index: int
    name: str
    temperature_celsius: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    power_watts: float | None = None
    utilization_ratio: float | None = None


class NvmlLibraryMissing(Exception):
    """The NVIDIA driver's NVML library is not on this host (what pynvml would report, without importing it)."""


def _load_nvml(library: str = NVML_LIBRARY) -> ModuleType:
    # Importing pynvml costs the exporter 2 MB of RSS (bench/scrape.py): on a host without the driver -- most small
    # servers -- look for the library first and leave pynvml unimported.
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(library)
        except OSError as exc:
            raise NvmlLibraryMissing(f"{library} not found ({exc})") from None
    import pynvml  # from nvidia-ml-py

    return pynvml


class Nvml:
    """NVML, initialised on first use; a failed init is retried after ``retry_seconds``, never on every read."""

    def __init__(self, nvml: ModuleType | None = None, *, retry_seconds: float = RETRY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._nvml = nvml
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._ready = False
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def module(self) -> ModuleType | None:
        """The initialised NVML module, or None while it is unavailable."""
        with self._lock:
            if self._ready:
                return self._nvml
            if self._failed_at is not None and self._clock() - self._failed_at < self._retry_seconds:
                return None
            try:
                nvml = self._nvml or _load_nvml()
                nvml.nvmlInit()
            except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError…
                if self._failed_at is None:
                    log.info("no NVIDIA GPU metrics: %s", exc or type(exc).__name__)
                self._failed_at = self._clock()
                return None
            self._nvml, self._ready = nvml, True
            return nvml

    def gpus(self) -> list[GpuReading] | None:
        """Every GPU's readings, or None when NVML is unavailable (an empty list: NVML without GPUs)."""
        nvml = self.module()
        if nvml is None:
            return None
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            log.warning("NVML device count failed: %s", exc)
            return []
        readings = []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = nvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
            except nvml.NVMLError as exc:
                log.warning("NVML GPU %d unreadable: %s", index, exc)
                continue

            readings.append(self._read(nvml, index, name, handle))
        return readings

    @staticmethod
    def _read(nvml: ModuleType, index: int, name: str, handle: object) -> GpuReading:
        def read(get: Callable[[], float]) -> float | None:
            try:  # a GPU without a power sensor still reports the rest
                return float(get())
            except nvml.NVMLError:
                return None

        used = read(lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used)
        total = read(lambda: nvml.nvmlDeviceGetMemoryInfo(handle).total)
        return GpuReading(
            index, name,
            temperature_celsius=read(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            memory_used_bytes=used, memory_total_bytes=total,
            power_watts=read(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),  # milliwatts
            utilization_ratio=read(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0),
        )

    def power_watts(self) -> float | None:
        """The summed power draw of every GPU, or None without NVML or power sensors."""
        watts = [gpu.power_watts for gpu in self.gpus() or [] if gpu.power_watts is not None]
        return sum(watts) if watts else None

    def hottest_celsius(self) -> float | None:
        return max((gpu.temperature_celsius for gpu in self.gpus() or [] if gpu.temperature_celsius is not None),
                   default=None)


_shared: Nvml | None = None
_shared_lock = threading.Lock()


def shared_nvml() -> Nvml:
    """The process's one NVML reader."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Nvml()
        return _shared


def cpu_temperatures() -> list[tuple[str, float]]:
    """Every temperature sensor psutil sees, as (``chip/label``, °C); empty where there are none."""
    readings = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
    return [(f"{chip}/{sensor.label or index}", sensor.current)
            for chip, sensors in sorted(readings.items()) for index, sensor in enumerate(sensors)]


def hottest_cpu_celsius() -> float | None:
    return max((value for _, value in cpu_temperatures()), default=None)
