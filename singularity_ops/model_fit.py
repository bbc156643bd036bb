"""Per installed model: size, estimated need, loaded size, real RSS and the fit verdict (``check-memory``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from singularity_ops.config import MemoryConfig
from singularity_ops.memory import Fit, MemoryBudget, assess_fit, estimate_need, measure_budget
from singularity_ops.ollama_state import OllamaSnapshot
from singularity_ops.runners import blob_key


@dataclass(frozen=True)
class ModelFit:
    name: str
    size_bytes: int
    loaded_bytes: int | None
    vram_bytes: int | None
    rss_bytes: int | None
    fit: Fit

    def as_json(self) -> dict[str, Any]:
        need = self.fit.need
        return {
            "model": self.name,
            "size_bytes": self.size_bytes,
            "required_bytes": need.total_bytes,
            "required": {
                "weights_bytes": need.weights_bytes,
                "kv_cache_bytes": need.kv_cache_bytes,
                "graph_bytes": need.graph_bytes,
                "overhead_bytes": need.overhead_bytes,
                "context_length": need.context_length,
                "num_parallel": need.num_parallel,
            },
            "loaded": self.loaded_bytes is not None,
            "loaded_bytes": self.loaded_bytes,
            "vram_bytes": self.vram_bytes,
            "runner_rss_bytes": self.rss_bytes,
            "obtainable_bytes": self.fit.obtainable_bytes,
            "fits": self.fit.fits,
            "reason": self.fit.reason,
        }


def assess_models(
    snapshot: OllamaSnapshot,
    settings: MemoryConfig,
    rss_by_blob: dict[str, int] | None = None,
    budget: MemoryBudget | None = None,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
) -> tuple[MemoryBudget, list[ModelFit]]:
    """Fit of every installed model against one budget, in /api/tags order."""
    if budget is None:
        budget = measure_budget(settings.ollama_memory_bytes, snapshot.loaded_bytes, cgroup_root)
    loaded = {m.name: m for m in snapshot.loaded}
    rows = []
    for model in snapshot.installed:
        details = snapshot.details_for(model.digest)
        running = loaded.get(model.name)
        need = estimate_need(model.size_bytes, details, settings, running.context_length if running else None)
        rss = None
        if running is not None and details is not None and details.blob_path and rss_by_blob is not None:
            rss = rss_by_blob.get(blob_key(details.blob_path))
        rows.append(ModelFit(
            name=model.name,
            size_bytes=model.size_bytes,
            loaded_bytes=running.size_bytes if running else None,
            vram_bytes=running.vram_bytes if running else None,
            rss_bytes=rss,
            fit=assess_fit(need, budget, settings.reserve_bytes),
        ))
    return budget, rows
