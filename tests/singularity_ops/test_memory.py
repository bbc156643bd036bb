"""The memory-fit estimator against what Ollama itself reports for real model shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from singularity_ops.config import MemoryConfig
from singularity_ops.memory import (
    MemoryBudget,
    assess_fit,
    cgroup_memory,
    estimate_need,
    kv_cache_bytes,
    measure_budget,
)
from singularity_ops.ollama_api import ModelDetails

GiB = 2**30


def llama_info(blocks: int, embedding: int, heads: int, heads_kv: int, vocab: int, trained: int) -> dict:
    return {
        "general.architecture": "llama",
        "llama.block_count": blocks,
        "llama.embedding_length": embedding,
        "llama.attention.head_count": heads,
        "llama.attention.head_count_kv": heads_kv,
        "llama.vocab_size": vocab,
        "llama.context_length": trained,
    }


# Published /api/ps answers (bytes) with the /api/tags size of the same model and the context it ran with.
# mistral:latest (v0.3, Q4_0): Ollama's docs/api.md /api/ps example, context 2048 (the default then).
# hermes3:8b (Llama 3.1 8B shape, Q4_0): an /api/ps capture with "context_length": 16384.
OBSERVED = [
    pytest.param(4_113_301_824, llama_info(32, 4096, 32, 8, 32768, 32768), 2048, 5_137_025_024, id="mistral-7b"),
    pytest.param(4_661_227_243, llama_info(32, 4096, 32, 8, 128256, 131072), 16384, 8_372_905_984, id="llama3.1-8b"),
]


@pytest.mark.parametrize(("blob", "info", "context", "reported"), OBSERVED)
def test_estimate_is_within_ten_percent_of_what_ollama_reports(blob: int, info: dict, context: int,
                                                                reported: int) -> None:
    need = estimate_need(blob, ModelDetails(model_info=info), MemoryConfig(context_length=context))
    assert need.context_length == context
    assert 0.90 <= need.total_bytes / reported <= 1.10, need.explain()


def test_kv_cache_matches_ollamas_own_figure_for_gemma2() -> None:
    # Ollama 0.3 log for gemma2:9b at --ctx-size 8192 (2048 x 4 parallel): memory.required.kv="2.6 GiB".
    gemma2 = ModelDetails(model_info={
        "general.architecture": "gemma2", "gemma2.block_count": 42, "gemma2.embedding_length": 3584,
        "gemma2.attention.head_count": 16, "gemma2.attention.head_count_kv": 8,
        "gemma2.attention.key_length": 256, "gemma2.attention.value_length": 256,
    })
    assert kv_cache_bytes(gemma2, 2048, 4, "f16") == int(2.625 * GiB)
    assert kv_cache_bytes(gemma2, 2048, 4, "q8_0") == int(2.625 * GiB / 2)


def test_per_layer_kv_head_counts_are_summed() -> None:
    details = ModelDetails(model_info={
        "general.architecture": "hybrid", "hybrid.block_count": 4, "hybrid.embedding_length": 256,
        "hybrid.attention.head_count": 4, "hybrid.attention.head_count_kv": [2, 0, 2, 0],
    })
    assert kv_cache_bytes(details, 100, 1, "f16") == 4 * (64 + 64) * 2 * 100


def test_context_comes_from_the_loaded_runner_then_num_ctx_then_default_capped_at_training() -> None:
    info = llama_info(28, 3072, 24, 8, 128256, 131072)
    settings = MemoryConfig(context_length=4096)
    assert estimate_need(1, ModelDetails(model_info=info), settings).context_length == 4096
    with_param = ModelDetails(model_info=info, parameters={"num_ctx": "8192"})
    assert estimate_need(1, with_param, settings).context_length == 8192
    assert estimate_need(1, with_param, settings, loaded_context=32768).context_length == 32768
    short = ModelDetails(model_info=llama_info(22, 2048, 32, 4, 32000, 2048))
    assert estimate_need(1, short, settings).context_length == 2048


def test_parallel_slots_multiply_the_kv_cache() -> None:
    details = ModelDetails(model_info=llama_info(28, 3072, 24, 8, 128256, 131072))
    one = estimate_need(1, details, MemoryConfig(num_parallel=1))
    four = estimate_need(1, details, MemoryConfig(num_parallel=4))
    assert four.kv_cache_bytes == 4 * one.kv_cache_bytes


def test_without_model_info_the_need_is_weights_plus_overhead_and_says_so() -> None:
    need = estimate_need(1000, None, MemoryConfig(overhead_bytes=10))
    assert need.total_bytes == 1010
    assert "KV cache unknown" in need.explain()


def test_phi4_does_not_fit_a_server_with_1_9_gb() -> None:
    phi4 = ModelDetails(model_info={
        "general.architecture": "phi3", "phi3.block_count": 40, "phi3.embedding_length": 5120,
        "phi3.attention.head_count": 40, "phi3.attention.head_count_kv": 10, "phi3.context_length": 16384,
    })
    need = estimate_need(9_053_114_464, phi4, MemoryConfig())
    budget = measure_budget(configured_bytes=int(1.9 * GiB), loaded_bytes=0)
    fit = assess_fit(need, budget, reserve_bytes=0)
    assert not fit.fits
    assert need.total_bytes > 9_053_114_464
    assert fit.reason.startswith("does not fit: needs 9.")
    assert "at most 1.9 GiB can be made available" in fit.reason


def test_unloading_other_models_counts_as_obtainable_memory() -> None:
    need = estimate_need(3 * GiB, None, MemoryConfig(overhead_bytes=0))
    crowded = MemoryBudget(capacity_bytes=8 * GiB, available_bytes=1 * GiB, loaded_bytes=4 * GiB, source="host")
    assert assess_fit(need, crowded, reserve_bytes=0).fits
    assert not assess_fit(need, crowded, reserve_bytes=3 * GiB).fits


def test_configured_memory_minus_loaded_models_is_what_is_free() -> None:
    budget = measure_budget(configured_bytes=10 * GiB, loaded_bytes=3 * GiB)
    assert (budget.available_bytes, budget.obtainable_bytes, budget.source) == (7 * GiB, 10 * GiB, "configured")


def test_cgroup_v2_limit_is_used_when_below_the_host(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text(f"{2 * GiB}\n")
    (tmp_path / "memory.current").write_text(f"{GiB}\n")
    (tmp_path / "memory.stat").write_text(f"anon 1\ninactive_file {GiB // 4}\n")
    assert cgroup_memory(tmp_path) == (2 * GiB, GiB - GiB // 4)
    budget = measure_budget(None, 0, cgroup_root=tmp_path)
    assert (budget.source, budget.capacity_bytes, budget.available_bytes) == ("cgroup", 2 * GiB, GiB + GiB // 4)


def test_cgroup_v1_unlimited_falls_back_to_the_host(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory/memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "memory/memory.usage_in_bytes").write_text("1000\n")
    assert cgroup_memory(tmp_path) is None
    assert measure_budget(None, 0, cgroup_root=tmp_path).source == "host"


def test_cgroup_v2_max_means_no_limit(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text("1000\n")
    assert cgroup_memory(tmp_path) is None
