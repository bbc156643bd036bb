"""docs/PROMQL.md: every query parses and answers with data against a live Prometheus scraping the exporter
under the test traffic (the same live set-up the dashboards are checked against)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pytest

from tests.conftest import REPO
from tests.grafana.conftest import Live

COOKBOOK = REPO / "docs" / "PROMQL.md"
# Queries of hardware this machine may not have: skipped (not failed) when the exporter does not serve the metric.
HARDWARE = {"llm_cpu_temperature_celsius": "no hwmon temperature sensor here (most VMs and containers)",
            "llm_gpu_memory_used_bytes": "no NVIDIA GPU with NVML here"}


@dataclass(frozen=True)
class Recipe:
    question: str
    query: str
    reading: str


def recipes() -> list[Recipe]:
    found = []
    entry = re.compile(r"^### (?P<q>[^\n]+)\n```promql\n(?P<expr>.+?)\n```\n(?P<read>[^\n]+)$", re.M | re.S)
    for block in entry.finditer(COOKBOOK.read_text()):
        found.append(Recipe(block["q"].strip(), block["expr"].strip(), block["read"].strip()))
    return found


RECIPES = recipes()


def test_the_cookbook_answers_twenty_to_thirty_questions_each_with_how_to_read_it() -> None:
    assert 20 <= len(RECIPES) <= 30, len(RECIPES)
    assert len({r.question for r in RECIPES}) == len(RECIPES)
    every_block = re.findall(r"```promql\n", COOKBOOK.read_text())
    assert len(every_block) == len(RECIPES), "a query without its question heading or its reading line"
    for recipe in RECIPES:
        assert recipe.question.endswith("?"), recipe.question
        assert len(recipe.reading) > 20, recipe.question


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.question)
def test_every_query_returns_data_on_live_traffic(live: Live, recipe: Recipe) -> None:
    series = live.prometheus.query_range(recipe.query, live.start, live.end)
    missing = [name for name in HARDWARE if name in recipe.query and not re.search(rf"^{name}[{{ ]", live.exposition,
                                                                                    re.M)]
    if not series and missing:
        pytest.skip(HARDWARE[missing[0]])
    assert series, f"no data for: {recipe.query}"
    values = [float(value) for s in series for _t, value in s["values"]]
    assert any(not math.isnan(v) for v in values), f"only NaN for: {recipe.query}"
