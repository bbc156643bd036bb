"""The Ollama collector's exposition, rendered from recorded API answers, compared byte for byte.

A change in output must show up here as a diff of ``golden/ollama.prom``. After an intended change:
``UPDATE_GOLDEN=1 .venv/bin/pytest tests/exporter/collectors/test_ollama_golden.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from singularity_ops.config import MemoryConfig
from singularity_ops.exporter.collectors.ollama import OllamaCollector
from singularity_ops.ollama_api import parse_ps, parse_show, parse_tags, parse_version
from singularity_ops.ollama_state import OllamaSnapshot

GOLDEN = Path(__file__).parent / "golden"


class RecordedState:
    def __init__(self, snapshot: OllamaSnapshot) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> OllamaSnapshot:
        return self._snapshot


def recorded() -> tuple[OllamaSnapshot, datetime]:
    answers = json.loads((GOLDEN / "ollama_api.json").read_text())
    installed = parse_tags(answers["tags"])
    details = {m.digest: parse_show(answers["show"][m.name]) for m in installed}
    snapshot = OllamaSnapshot(True, None, parse_version(answers["version"]), installed, parse_ps(answers["ps"]),
                              details)
    return snapshot, datetime.fromisoformat(answers["recorded_at"])


def render() -> str:
    snapshot, recorded_at = recorded()
    collector = OllamaCollector(RecordedState(snapshot),  # type: ignore[arg-type]
                                MemoryConfig(ollama_memory_bytes=8 * 2**30, reserve_bytes=256 * 2**20),
                                now=lambda: recorded_at)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_exposition_matches_the_golden_file() -> None:
    text = render()
    golden = GOLDEN / "ollama.prom"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
