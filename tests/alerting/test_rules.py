"""Prometheus config, recording rules and alerts: checked and unit-tested by Debian's promtool, and held to the
conventions every alert shares (severity, annotations, a runbook section, thresholds as configuration, a firing
and a silent test case, only documented metrics)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "rules" / "tests").glob("*.yml"))
ALERTS_MD = REPO / "docs" / "ALERTS.md"
METRICS_MD = REPO / "docs" / "METRICS.md"
RUNBOOK_BASE = "https://github.com/singularity-ops/singularity-ops/blob/main/docs/ALERTS.md#"
THRESHOLD_RECORD = "instance:singularity_alert_threshold:effective"

# Issue 5 names these; no more, no fewer. BackupFailed is one of them too, but pushed by the process that saw the
# failure (with the error in it) rather than a rule: one source per alert name, so one message per fault (issue 16).
ISSUE_ALERTS = {
    "OllamaDown", "ExporterDown", "ModelWillNotFit", "HostMemoryHigh", "SwapThrashing", "ModelNotResponding",
    "CircuitBreakerOpen", "TokensPerSecondDrop", "CostGrowth", "TemperatureHigh", "HistoryWriteFailing",
    "ModelQualityDrop", "SecurityClientBlocked", "BackupStale",
}
# Series Prometheus makes itself, documented by Prometheus rather than docs/METRICS.md.
PROMETHEUS_OWN = {"up"}


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.skip("promtool is not installed (Debian: sudo apt-get install prometheus)")
    return found


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=REPO)


def groups() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        yield from yaml.safe_load(path.read_text())["groups"]


def rules() -> list[dict[str, Any]]:
    return [rule for group in groups() for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    return {github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)}


KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: strings, label matchers, ranges, grouping clauses, function
    names and keywords removed."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {name for name in names if name.lower() not in KEYWORDS}


def documented_metrics() -> set[str]:
    return set(re.findall(r"`([a-z_:][a-z0-9_:]*)`", METRICS_MD.read_text()))


def thresholded() -> dict[str, float]:
    """Alert name -> the default of its knob, read from its effective-threshold record."""
    defaults = {}
    for rule in rules():
        if rule.get("record") == THRESHOLD_RECORD:
            default = re.search(r"\*\s*0\s*\+\s*([0-9.e+]+)\s*$", rule["expr"].strip())
            assert default, f"no '* 0 + <default>' fallback in {rule}"
            defaults[rule["labels"]["alert"]] = float(default.group(1))
    return defaults


def test_prometheus_config_is_valid() -> None:
    result = run(promtool(), "check", "config", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_exporter_and_sends_to_the_local_alertmanager() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "singularity"
    assert job["scrape_interval"] == "15s"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9777"]}]
    assert config["rule_files"] == ["rules/*.yml"]
    assert config["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]


def test_rule_files_are_valid() -> None:
    result = run(promtool(), "check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_rule_unit_tests_pass() -> None:
    """Every file under prometheus/rules/tests/, one promtool each, side by side (the week-long ones take seconds)."""
    binary = promtool()
    assert TEST_FILES
    with ThreadPoolExecutor(max_workers=len(TEST_FILES)) as pool:
        results = dict(zip(TEST_FILES, pool.map(lambda path: run(binary, "test", "rules", path), TEST_FILES),
                           strict=True))
    failed = {path.name: r.stdout + r.stderr for path, r in results.items() if r.returncode != 0}
    assert not failed, "\n".join(failed.values())


def test_the_unit_tests_notice_a_changed_default(tmp_path: Path) -> None:
    """The promtool cases pin the thresholds: the same tests against a rule whose default moved must fail."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, copy)
    host = copy / "rules" / "host.yml"
    original = "count by (job, instance) (llm_host_memory_total_bytes) * 0 + 0.9"
    assert original in host.read_text()
    host.write_text(host.read_text().replace(original, original + "5"))
    result = run(promtool(), "test", "rules", copy / "rules" / "tests" / "host_memory_high_test.yml")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_the_issue_names_exists_and_no_other() -> None:
    assert set(alerts()) == ISSUE_ALERTS


def pushed_alerts() -> set[str]:
    """Every alert name the code pushes to Alertmanager itself (``….push("Name", …)``)."""
    names = set()
    for folder in ("singularity_ops", "cli", "exporter", "controllers"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r'\.push\(\s*"([A-Z]\w+)"', path.read_text()))
    return names


def test_one_source_per_alert_name_so_one_fault_is_one_message() -> None:
    pushed = pushed_alerts()
    assert {"BackupFailed", "BackupSucceeded", "ModelSkippedForMemory", "SecurityRequestSpike"} <= pushed
    assert pushed & set(alerts()) == set(), "a name both pushed and ruled reaches Telegram twice for one fault"
    sections = anchors(ALERTS_MD.read_text())
    assert {name.lower() for name in pushed} <= sections, "every pushed alert has its section in docs/ALERTS.md"


@pytest.mark.parametrize("name", sorted(ISSUE_ALERTS))
def test_every_alert_has_a_severity_a_summary_a_description_and_its_runbook(name: str) -> None:
    rule = alerts()[name]
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip() and annotations["description"].strip()
    assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower()
    assert name.lower() in anchors(ALERTS_MD.read_text()), f"docs/ALERTS.md has no section '## {name}'"


def test_every_alert_with_a_measured_value_shows_it_humanized() -> None:
    # Alerts whose expression is a plain 0/1 state have no value worth printing.
    states = {"OllamaDown", "ExporterDown"}
    for name, rule in alerts().items():
        if name in states:
            continue
        description = rule["annotations"]["description"]
        assert re.search(r"\$value \| (humanize\w*)|printf \"%\.\d+f\" \$value", description), name


def test_every_threshold_knob_is_documented_with_its_default() -> None:
    documented = {}
    for knob, default in re.findall(r"^\| `alerts\.thresholds\.(\w+)` \| `([0-9.e+]+)`[^|]*\|", ALERTS_MD.read_text(),
                                    flags=re.MULTILINE):
        documented[knob] = float(default)
    assert documented == thresholded()


def test_every_thresholded_alert_compares_with_its_effective_threshold() -> None:
    for name in thresholded():
        expr = alerts()[name]["expr"]
        assert f'{THRESHOLD_RECORD}{{alert="{name}"}}' in expr, name
        assert "on (job, instance) group_left ()" in expr, name


def test_threshold_records_sit_before_their_alert_in_the_same_group() -> None:
    for group in groups():
        seen: set[str] = set()
        for rule in group["rules"]:
            if rule.get("record") == THRESHOLD_RECORD:
                seen.add(rule["labels"]["alert"])
            elif rule.get("alert") in thresholded():
                assert rule["alert"] in seen, f"{rule['alert']}'s threshold is not recorded before it"


def unit_cases() -> list[dict[str, Any]]:
    """Every alert_rule_test of every test group, with that group's input series."""
    cases = []
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            series = " ".join(s["series"] for s in test.get("input_series", []))
            for case in test.get("alert_rule_test", []):
                cases.append({**case, "series": series, "where": f"{path.name}: {test.get('name')}"})
    return cases


@pytest.mark.parametrize("name", sorted(ISSUE_ALERTS))
def test_every_alert_has_a_case_that_fires_and_one_that_stays_silent(name: str) -> None:
    cases = [c for c in unit_cases() if c["alertname"] == name]
    firing = [c for c in cases if c.get("exp_alerts")]
    assert firing, f"no promtool case fires {name}"
    assert any(not c.get("exp_alerts") for c in cases), f"no promtool case keeps {name} silent"
    for case in firing:
        for expected in case["exp_alerts"]:
            assert expected["exp_labels"]["severity"] == alerts()[name]["labels"]["severity"], case["where"]
            assert set(expected["exp_annotations"]) == {"summary", "description", "runbook_url"}, case["where"]


@pytest.mark.parametrize("name", sorted(thresholded()))
def test_every_knob_is_tested_published_and_defaulted(name: str) -> None:
    gauge = f'alert="{name}"'
    cases = [c for c in unit_cases() if c["alertname"] == name]
    published = [c for c in cases if "singularity_alert_threshold" in c["series"] and gauge in c["series"]]
    defaulted = [c for c in cases if "singularity_alert_threshold" not in c["series"]]
    assert any(c.get("exp_alerts") for c in published), f"no case fires {name} against a published threshold"
    assert any(c.get("exp_alerts") for c in defaulted), f"no case fires {name} against its default"
    assert any(not c.get("exp_alerts") for c in published + defaulted)


def test_recording_rules_are_unit_tested() -> None:
    tested = set()
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            for case in test.get("promql_expr_test", []):
                tested |= metric_names(case["expr"])
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    assert recorded <= tested, recorded - tested


def test_every_metric_the_rules_use_is_documented_or_recorded() -> None:
    known = documented_metrics() | {rule["record"] for rule in rules() if "record" in rule} | PROMETHEUS_OWN
    histogram_parts = re.compile(r"_(?:bucket|sum|count)$")
    for rule in rules():
        for name in metric_names(rule["expr"]):
            assert name in known or histogram_parts.sub("", name) in known, (
                f"{name} (in {rule.get('alert') or rule.get('record')}) is neither in docs/METRICS.md nor recorded")


def test_metric_names_finds_selectors_only() -> None:
    expr = ('sum by (job, instance) (rate(a_total{status=~"5..", model!="none"}[5m])) / on (job) group_left () '
            'b_seconds offset 1d > 0.5 and absent(up{job="x"}) or label_replace(c, "model", "$1", "breaker", "(.*)")'
            " unless time() - d:rec:rate5m > 1e9")
    assert metric_names(expr) == {"a_total", "b_seconds", "up", "c", "d:rec:rate5m"}
