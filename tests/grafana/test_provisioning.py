"""Grafana provisioning: a Prometheus datasource with a stable uid that the dashboards' variable picks up by default,
and a file provider that loads the dashboards folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO
from tests.grafana.dashboards import load_all

PROVISIONING = REPO / "grafana" / "provisioning"


def documents(folder: str) -> list[dict[str, Any]]:
    paths = sorted((PROVISIONING / folder).glob("*.y*ml"))
    assert paths, f"nothing in grafana/provisioning/{folder}"
    return [yaml.safe_load(path.read_text(encoding="utf-8")) for path in paths]


def test_one_default_prometheus_datasource_with_a_stable_uid() -> None:
    datasources = [d for doc in documents("datasources") for d in doc["datasources"]]
    assert all(doc["apiVersion"] == 1 for doc in documents("datasources"))
    (prometheus,) = [d for d in datasources if d["type"] == "prometheus"]
    assert prometheus["uid"] == "singularity-prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    assert prometheus["access"] == "proxy"
    assert prometheus["isDefault"] is True, "the dashboards' ${datasource} variable starts on the default one"
    assert [d["name"] for d in datasources if d.get("isDefault")] == [prometheus["name"]]
    assert len({d["uid"] for d in datasources}) == len(datasources)


def test_the_scrape_interval_grafana_assumes_is_prometheus_own() -> None:
    (prometheus,) = [d for doc in documents("datasources") for d in doc["datasources"] if d["type"] == "prometheus"]
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    intervals = {job.get("scrape_interval", config["global"]["scrape_interval"]) for job in config["scrape_configs"]}
    assert intervals == {prometheus["jsonData"]["timeInterval"]}, "$__rate_interval is computed from it"


def test_a_file_provider_loads_the_dashboards_into_their_folder() -> None:
    providers = [p for doc in documents("dashboards") for p in doc["providers"]]
    (provider,) = providers
    assert provider["type"] == "file"
    assert provider["folder"] and provider["folderUid"]
    assert Path(provider["options"]["path"]).is_absolute()
    assert provider["allowUiUpdates"] is False, "the JSON in git is the source; edits in the UI would be lost"
    assert load_all(), "no dashboards to provision"
