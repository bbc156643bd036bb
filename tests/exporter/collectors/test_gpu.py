"""GPU metrics from NVML; without NVML, llm_gpu_up 0 and nothing else, never an exception."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from singularity_ops.exporter.collectors.gpu import GpuCollector
from singularity_ops.hardware import NvmlLibraryMissing, _load_nvml
from tests.helpers import series


def nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def scrape(collector: GpuCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


@pytest.mark.skipif(nvml_works(), reason="this machine has a working NVIDIA driver")
def test_without_nvml_only_llm_gpu_up_0_is_served() -> None:
    text = scrape(GpuCollector())
    assert series(text, "llm_gpu_up") == {"": 0.0}
    assert [line for line in text.splitlines() if line.startswith("llm_gpu_") and "up" not in line] == []
    assert series(scrape(GpuCollector()), "llm_gpu_up") == {"": 0.0}  # and again, still no exception


@pytest.mark.skipif(not nvml_works(), reason="needs an NVIDIA GPU with its driver")
def test_on_a_real_gpu_every_gpu_reports_temperature_and_memory() -> None:
    import pynvml

    pynvml.nvmlInit()
    count = pynvml.nvmlDeviceGetCount()
    text = scrape(GpuCollector())
    assert series(text, "llm_gpu_up") == {"": 1.0}
    assert len(series(text, "llm_gpu_temperature_celsius")) == count
    total = series(text, "llm_gpu_memory_total_bytes")
    assert len(total) == count and all(v > 2**30 for v in total.values())


@pytest.mark.skipif(nvml_works(), reason="this machine has a working NVIDIA driver")
def test_without_the_driver_library_pynvml_is_never_imported() -> None:
    # pynvml costs 2 MB of RSS; a GPU-less host learns "no NVML" from the missing library alone.
    program = ("import sys\n"
               "from singularity_ops.exporter.collectors.gpu import GpuCollector\n"
               "list(GpuCollector().collect())\n"
               "print('pynvml' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_missing_library_is_reported_by_name() -> None:
    with pytest.raises(NvmlLibraryMissing, match=re.escape("libnvidia-ml-absent.so.1 not found")):
        _load_nvml("libnvidia-ml-absent.so.1")
