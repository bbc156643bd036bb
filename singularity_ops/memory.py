"""The one memory-fit estimator: what a model needs to load, what could be made available, and the verdict.

Used by ``check-memory``, the Ollama collector (``ollama_model_required_bytes``, ``ollama_model_fits``)
and the model manager. The formula and its sources are in docs/MEMORY.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

from singularity_ops.config import MemoryConfig
from singularity_ops.ollama_api import ModelDetails

# Bytes per cached K/V element by OLLAMA_KV_CACHE_TYPE, as Ollama's kvCacheBytesPerElement.
KV_BYTES_PER_ELEMENT = {"f16": 2.0, "q8_0": 1.0, "q4_0": 0.5}
CGROUP_UNLIMITED = 1 << 60
BATCH = 512  # Ollama's default num_batch  # v1 reports "no limit" as a page-rounded 2**63-1


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Need:
    weights_bytes: int
    kv_cache_bytes: int
    graph_bytes: int
    overhead_bytes: int
    context_length: int
    num_parallel: int
    kv_known: bool = True

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.graph_bytes + self.overhead_bytes

    def explain(self) -> str:
        kv = (f"KV cache {human_bytes(self.kv_cache_bytes)} at {self.context_length} tokens"
              f"{f' x {self.num_parallel} parallel' if self.num_parallel > 1 else ''}"
              if self.kv_known else "KV cache unknown (no attention shape in model_info)")
        return (f"weights {human_bytes(self.weights_bytes)} + {kv} + compute graph "
                f"{human_bytes(self.graph_bytes)} + overhead {human_bytes(self.overhead_bytes)}")


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
        return int(value)
    return None


def effective_context(details: ModelDetails | None, settings: MemoryConfig, loaded_context: int | None = None) -> int:
    """The context Ollama would load with: the running one, else the model's ``num_ctx`` parameter, else the
    server default (``OLLAMA_CONTEXT_LENGTH``) — capped at the context the model was trained for, as Ollama does."""
    context = loaded_context or settings.context_length
    if details is not None:
        context = loaded_context or _positive_int(details.parameters.get("num_ctx")) or context
        trained = _positive_int(details.arch_value("context_length"))
        if trained:
            context = min(context, trained)
    return context


def kv_cache_bytes(details: ModelDetails, context: int, num_parallel: int, cache_type: str) -> int | None:
    """f16 K and V for every layer at ``context`` x ``num_parallel`` tokens (Ollama's ggml GraphSize ``kv``).

    head_count_kv may be a per-layer list (sliding-window and hybrid models); then it is summed per layer.
    """
    layers = _positive_int(details.arch_value("block_count"))
    heads = details.arch_value("attention.head_count")
    heads_kv = details.arch_value("attention.head_count_kv")
    embedding = _positive_int(details.arch_value("embedding_length"))
    if isinstance(heads, list):
        heads = max((h for h in heads if isinstance(h, int)), default=None)
    heads = _positive_int(heads)
    if heads_kv is None:
        heads_kv = heads
    if not layers or not heads or not embedding:
        return None
    head_dim_k = _positive_int(details.arch_value("attention.key_length")) or embedding // heads
    head_dim_v = _positive_int(details.arch_value("attention.value_length")) or embedding // heads
    if isinstance(heads_kv, list):
        kv_heads_total = sum(h for h in heads_kv[:layers] if isinstance(h, int) and h > 0)
    elif _positive_int(heads_kv):
        kv_heads_total = layers * int(heads_kv)
    else:
        return None
    per_token = kv_heads_total * (head_dim_k + head_dim_v) * KV_BYTES_PER_ELEMENT[cache_type]
    return int(per_token * context * num_parallel)


def graph_bytes(details: ModelDetails, context: int, num_parallel: int, batch: int = BATCH) -> int:
    """Scratch buffers of the compute graph: Ollama's llama-family ``fullOffload`` formula, used for every
    architecture: max(4·b·(1 + 4·E + c·(1 + H)), 4·b·(E + V)) with b = min(context, batch), c = context·parallel.
    The vocabulary term is left out when model_info does not give the vocabulary size."""
    embedding = _positive_int(details.arch_value("embedding_length"))
    heads = details.arch_value("attention.head_count")
    if isinstance(heads, list):
        heads = max((h for h in heads if isinstance(h, int)), default=None)
    heads = _positive_int(heads)
    if not embedding or not heads:
        return 0
    tokens = details.model_info.get("tokenizer.ggml.tokens")
    vocab = _positive_int(details.arch_value("vocab_size")) or (len(tokens) if isinstance(tokens, list) else 0)
    b, c = min(context, batch), context * num_parallel
    return max(4 * b * (1 + 4 * embedding + c * (1 + heads)), 4 * b * (embedding + vocab))


def estimate_need(
    size_bytes: int,
    details: ModelDetails | None,
    settings: MemoryConfig,
    loaded_context: int | None = None,
) -> Need:
    context = effective_context(details, settings, loaded_context)
    kv = kv_cache_bytes(details, context, settings.num_parallel, settings.kv_cache_type) if details else None
    return Need(
        weights_bytes=size_bytes,
        kv_cache_bytes=kv or 0,
        graph_bytes=graph_bytes(details, context, settings.num_parallel) if details else 0,
        overhead_bytes=settings.overhead_bytes,
        context_length=context,
        num_parallel=settings.num_parallel,
        kv_known=kv is not None,
    )


@dataclass(frozen=True)
class MemoryBudget:
    """Memory (RAM + swap) of the machine Ollama runs on, as Ollama's own load check sees it."""

    capacity_bytes: int
    available_bytes: int
    loaded_bytes: int
    source: str  # "configured" (SINGULARITY_OLLAMA_MEMORY_BYTES), "cgroup" or "host"

    @property
    def obtainable_bytes(self) -> int:
        """Free now plus what unloading every loaded model would free."""
        return self.available_bytes + self.loaded_bytes


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_memory(root: Path = Path("/sys/fs/cgroup")) -> tuple[int, int] | None:
    """(limit, usage) of this process's memory cgroup when a limit is set (v2, then v1), else None."""
    limit, usage = _read_int(root / "memory.max"), _read_int(root / "memory.current")
    reclaimable = 0
    if limit is None:
        limit = _read_int(root / "memory/memory.limit_in_bytes")
        usage = _read_int(root / "memory/memory.usage_in_bytes")
        stat = root / "memory/memory.stat"
        key = "total_inactive_file"
    else:
        stat = root / "memory.stat"
        key = "inactive_file"
    if limit is None or usage is None or limit >= CGROUP_UNLIMITED:
        return None
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                reclaimable = int(value)
    except OSError:
        pass
    return limit, max(0, usage - reclaimable)


def measure_budget(
    configured_bytes: int | None,
    loaded_bytes: int,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
) -> MemoryBudget:
    if configured_bytes is not None:
        return MemoryBudget(configured_bytes, max(0, configured_bytes - loaded_bytes), loaded_bytes, "configured")
    ram, swap = psutil.virtual_memory(), psutil.swap_memory()
    cgroup = cgroup_memory(cgroup_root)
    if cgroup is not None and cgroup[0] < ram.total:
        limit, usage = cgroup
        return MemoryBudget(limit, max(0, limit - usage), loaded_bytes, "cgroup")
    return MemoryBudget(ram.total + swap.total, ram.available + swap.free, loaded_bytes, "host")


@dataclass(frozen=True)
class Fit:
    need: Need
    obtainable_bytes: int
    fits: bool
    reason: str


def assess_fit(need: Need, budget: MemoryBudget, reserve_bytes: int) -> Fit:
    """A model fits when its need ≤ free memory + what unloading the loaded models frees − the reserve."""
    obtainable = max(0, budget.obtainable_bytes - reserve_bytes)
    fits = need.total_bytes <= obtainable
    verb = "fits" if fits else "does not fit"
    held = f"{human_bytes(budget.loaded_bytes)} held by loaded models"
    where = {
        "configured": f"{human_bytes(budget.capacity_bytes)} configured (SINGULARITY_OLLAMA_MEMORY_BYTES)",
        "cgroup": f"cgroup limit {human_bytes(budget.capacity_bytes)}",
        "host": f"{human_bytes(budget.capacity_bytes)} RAM + swap on this host",
    }[budget.source]
    reserve = f", reserve {human_bytes(reserve_bytes)}" if reserve_bytes else ""
    reason = (f"{verb}: needs {human_bytes(need.total_bytes)} ({need.explain()}); at most "
              f"{human_bytes(obtainable)} can be made available ({human_bytes(budget.available_bytes)} free + "
              f"{held}; {where}{reserve})")
    return Fit(need, obtainable, fits, reason)
