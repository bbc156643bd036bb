"""The Grafana dashboards: well-formed, portable (datasource and instance are variables), documented, and every
panel's query parses and returns data from a real Prometheus that scraped the real exporter under test traffic."""

from __future__ import annotations

import math
import re

import pytest

from tests.conftest import REPO
from tests.grafana.conftest import Live
from tests.grafana.dashboards import (
    DATASOURCE,
    Target,
    all_selected,
    documented_metrics,
    interpolate,
    load_all,
    panels,
    parse_label_values,
    query_variables,
    resolve_variables,
    targets,
    variable_query,
)

DASHBOARDS = load_all()
TARGETS = targets(DASHBOARDS)
UIDS = {"overview": "singularity-overview", "models": "singularity-models", "breakers": "singularity-breakers",
        "cost": "singularity-cost"}
# Series that exist only on some hardware; a panel on them may be empty where the exporter does not serve them.
HARDWARE = {
    "llm_cpu_temperature_celsius": "this machine exposes no hwmon temperature sensor (most VMs and containers)",
    "llm_gpu_temperature_celsius": "no NVIDIA GPU with NVML on this machine",
    "llm_gpu_memory_used_bytes": "no NVIDIA GPU with NVML on this machine",
}
# Targets that may show 0 all through the test traffic, and why.
MAY_STAY_ZERO = {
    "overview/Memory/D": "swap in use depends on the machine; it is often 0",
}


def test_the_four_dashboards_are_there_with_stable_uids() -> None:
    assert {stem: d["uid"] for stem, d in DASHBOARDS.items()} == UIDS
    assert len({d["uid"] for d in DASHBOARDS.values()}) == len(DASHBOARDS)
    assert all(len(uid) <= 40 for uid in UIDS.values())  # Grafana's limit


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_a_dashboard_is_a_grafana_10_dashboard_with_tags_and_titled_panels(stem: str) -> None:
    dashboard = DASHBOARDS[stem]
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["id"] is None, "an exported id would clash on import"
    assert dashboard["title"].startswith("Singularity Ops / ")
    assert "singularity-ops" in dashboard["tags"], "the dashboards' links menu finds its siblings by this tag"
    found = list(panels(dashboard))
    assert found, "no panels"
    ids = [p["id"] for p in found]
    titles = [p["title"] for p in found]
    assert len(set(ids)) == len(ids), "panel ids repeat"
    assert len(set(titles)) == len(titles), "panel titles repeat (docs/DASHBOARDS.md refers to panels by title)"
    assert all(p.get("description") for p in found), "every panel says what it shows"
    assert all(p.get("targets") for p in found), "a panel without a query"


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_every_panel_and_variable_uses_the_datasource_variable(stem: str) -> None:
    dashboard = DASHBOARDS[stem]
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]
    assert all(v["datasource"] == DATASOURCE for v in query_variables(dashboard))


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_job_instance_and_model_are_label_values_variables_chained_in_order(stem: str) -> None:
    variables = {v["name"]: v for v in query_variables(DASHBOARDS[stem])}
    assert list(variables) == ["job", "instance", "model"]
    for name, needs in (("job", ()), ("instance", ("$job",)), ("model", ("$job", "$instance"))):
        query = variable_query(variables[name])
        selector, label = parse_label_values(query)
        assert label == name
        assert all(var in (selector or "") for var in needs), f"{name} is not narrowed by {needs}: {query}"
        assert variables[name]["includeAll"] and variables[name]["multi"]
    assert variables["model"]["allValue"] == ".*", "All must also match model=\"other\" and \"none\""


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.id)
def test_every_selector_is_narrowed_by_job_and_instance_and_no_instance_is_hard_coded(target: Target) -> None:
    expr = target.expr
    assert not re.search(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|localhost|:\d{4,5}\b", expr), "a hard-coded address"
    for matcher in re.findall(r"\binstance\s*(?:=~|!~|!=|=)\s*\"[^\"]*\"", expr):
        assert matcher.replace(" ", "") == 'instance=~"$instance"', matcher
    for name, selector in target.selectors():
        assert selector, f"{name} without a selector reads every job and instance"
        assert 'job=~"$job"' in selector and 'instance=~"$instance"' in selector, f"{name}{selector}"


def test_every_metric_a_panel_reads_is_one_the_exporter_documents() -> None:
    documented = documented_metrics()
    unknown = {f"{t.id}: {name}" for t in TARGETS for name in t.metrics() if name not in documented}
    assert not unknown, "not in docs/METRICS.md: " + ", ".join(sorted(unknown))


def expected_unit(panel: dict) -> str | None:
    """The unit a panel must have given what it plots (prefix), or None when no rule applies."""
    exprs = "\n".join(t["expr"] for t in panel["targets"])
    if panel["type"] == "table":
        return None
    if "llm_cost_total" in exprs:
        return "currency"
    if "_celsius" in exprs:
        return "celsius"
    if "llm_energy_joules_total" in exprs:
        return "watt" if "rate(" in exprs else "joule"
    if "histogram_quantile" in exprs and "_seconds_bucket" in exprs:
        return "s"
    names = set(re.findall(r"\b(?:ollama|llm)_[a-z0-9_]+", exprs))
    if names and all(n.endswith("_bytes") for n in names) and "/" not in exprs and "count(" not in exprs:
        return "bytes"
    return None


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_units_follow_what_is_plotted(stem: str) -> None:
    wrong = []
    for panel in panels(DASHBOARDS[stem]):
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        expected = expected_unit(panel)
        if expected and not unit.startswith(expected):
            wrong.append(f"{panel['title']}: {unit!r}, expected {expected}")
    assert not wrong


def test_the_docs_describe_every_dashboard_and_panel() -> None:
    text = (REPO / "docs" / "DASHBOARDS.md").read_text(encoding="utf-8")
    missing = [f"{d['title']}" for d in DASHBOARDS.values() if d["title"] not in text]
    missing += [f"{stem}: {p['title']}" for stem, d in DASHBOARDS.items() for p in panels(d)
                if f"**{p['title']}**" not in text]
    assert not missing, "not described in docs/DASHBOARDS.md: " + "; ".join(missing)


# --- against the live stack -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def selected(live: Live) -> dict[str, dict[str, str]]:
    """Per dashboard, the variables as Grafana interpolates them with All selected."""
    return {stem: all_selected(d, resolve_variables(d, live.prometheus.label_values)) for stem, d in DASHBOARDS.items()}


def test_the_traffic_got_answers_errors_and_a_refusal(live: Live) -> None:
    assert {200, 404, 500, 503} <= set(live.statuses), live.statuses


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_every_variable_lists_values(live: Live, stem: str) -> None:
    resolved = resolve_variables(DASHBOARDS[stem], live.prometheus.label_values)
    assert all(resolved.values()), resolved
    assert "llama3.2:3b" in resolved["model"]


def _served(exposition: str, name: str) -> bool:
    return re.search(rf"^{re.escape(name)}[{{ ]", exposition, re.M) is not None


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.id)
def test_every_panel_query_parses_and_shows_the_test_traffic(live: Live, selected: dict[str, dict[str, str]],
                                                             target: Target) -> None:
    """Evaluated over the test's lifetime as Grafana evaluates a time series panel (one step a second): at least
    one series, and a value other than 0 at some step — a broken left side of ``… or vector(0)`` shows as zeros."""
    expr = interpolate(target.expr, selected[target.dashboard])
    # PrometheusError carries Prometheus' own message when the expression does not parse.
    series = live.prometheus.query_range(expr, live.start, live.end)
    absent = [name for name in target.metrics() & HARDWARE.keys() if not _served(live.exposition, name)]
    if not series and absent:
        pytest.skip(f"{', '.join(absent)}: {HARDWARE[absent[0]]}")
    assert series, f"no series for {expr}"
    values = [float(value) for s in series for _t, value in s["values"]]
    assert any(not math.isnan(v) for v in values), f"only NaN for {expr}"
    if target.id not in MAY_STAY_ZERO:
        assert any(v != 0 and not math.isnan(v) for v in values), f"only zeros for {expr}"
