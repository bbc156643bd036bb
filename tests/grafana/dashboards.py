"""The dashboards in grafana/dashboards/ as data: their panels, queries and variables, and Grafana's interpolation."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.conftest import REPO

DASHBOARDS = REPO / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What the test substitutes for Grafana's built-in interval variables: ranges that cover the whole test run.
BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "10m"}
# Metric names this project serves, as they appear in expressions (histograms with their _bucket/_count/_sum).
_SELECTOR = re.compile(r"\b((?:ollama|llm|gen_ai|singularity)_[a-z0-9_]+)\b\s*(\{[^}]*\})?")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$", re.S)


@dataclass(frozen=True)
class Target:
    dashboard: str  # file stem
    panel: dict[str, Any]
    target: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.dashboard}/{self.panel['title']}/{self.target['refId']}"

    @property
    def expr(self) -> str:
        return str(self.target["expr"])

    def selectors(self) -> list[tuple[str, str]]:
        """``(metric name, "{matchers}" or "")`` for every series selector of this project's metrics."""
        return selectors(self.expr)

    def metrics(self) -> set[str]:
        """Metric families the expression reads (histogram series named by their family)."""
        found = set()
        for name, _selector in self.selectors():
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix):
                    name = name.removesuffix(suffix)
                    break
            found.add(name)
        return found


def selectors(expr: str) -> list[tuple[str, str]]:
    """Series selectors in a PromQL expression, once label lists (``by (…)``, ``on (…)``) are set aside."""
    expr = _LABEL_LIST.sub("", expr)
    return [(m[1], m[2] or "") for m in _SELECTOR.finditer(expr)]


def load_all() -> dict[str, dict[str, Any]]:
    """``{file stem: dashboard}`` for every JSON file in grafana/dashboards/."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows; rows themselves are not panels with queries."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def targets(dashboards: dict[str, dict[str, Any]]) -> list[Target]:
    return [Target(stem, panel, target) for stem, dashboard in dashboards.items()
            for panel in panels(dashboard) for target in panel.get("targets", [])]


def query_variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return query["query"] if isinstance(query, dict) else query


def parse_label_values(query: str) -> tuple[str | None, str]:
    """``label_values(selector, label)`` → (selector or None, label)."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match["selector"], match["label"]


def regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape: backslashes doubled so they survive the PromQL string literal."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m[0], value)


def interpolate_all(variable: dict[str, Any], values: list[str]) -> str:
    """What Grafana puts in a query for a multi-value variable set to All."""
    if variable.get("includeAll") and variable.get("allValue"):
        return str(variable["allValue"])
    escaped = [regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(text: str, values: dict[str, str]) -> str:
    """Replace ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]``; an unknown name is an error."""
    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name in BUILTINS:
            return BUILTINS[name]
        if name not in values:
            raise KeyError(f"unknown variable ${name} in {text!r}")
        return values[name]

    return _VARIABLE.sub(replace, text)


def resolve_variables(dashboard: dict[str, Any], label_values: Callable[[str | None, str], list[str]]
                      ) -> dict[str, list[str]]:
    """Each query variable's values, in dashboard order, with the earlier variables set to All."""
    chosen: dict[str, str] = {}
    resolved: dict[str, list[str]] = {}
    for variable in query_variables(dashboard):
        selector, label = parse_label_values(interpolate(variable_query(variable), chosen))
        values = resolved[variable["name"]] = label_values(selector, label)
        chosen[variable["name"]] = interpolate_all(variable, values) if values else "$^"
    return resolved


def all_selected(dashboard: dict[str, Any], resolved: dict[str, list[str]]) -> dict[str, str]:
    """Variable values as Grafana interpolates them with every query variable at All (datasource unused)."""
    by_name = {v["name"]: v for v in query_variables(dashboard)}
    return {"datasource": "Prometheus",
            **{name: interpolate_all(by_name[name], values) for name, values in resolved.items()}}


def documented_metrics() -> set[str]:
    """Metric names in the first column of docs/METRICS.md's tables."""
    text = (REPO / "docs" / "METRICS.md").read_text(encoding="utf-8")
    first_cells = [line.split("|")[1] for line in text.splitlines() if line.startswith("|")]
    return {name for cell in first_cells for name in re.findall(r"`([a-z_][a-z0-9_]*)`", cell)}
