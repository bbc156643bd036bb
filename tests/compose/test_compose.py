"""compose.yaml: valid for Compose, pinned, healthy, closed to the outside but for Grafana and the gateway, secrets
from ./secrets, and its start-up snippets produce configs that Prometheus' own checker accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.compose.compose import (
    CHAT_ID,
    COMPOSE,
    docker_compose_config,
    image_tag,
    load,
    published,
    run_script,
    script,
    version_of_project,
)
from tests.conftest import REPO

SERVICES = load()["services"]
CLI = Path(sys.executable).with_name("singularity-ops")
SINGULARITY_IMAGE = f"singularity-ops:{version_of_project()}"


def singularity_services() -> dict[str, dict]:
    return {name: s for name, s in SERVICES.items() if s.get("image") == SINGULARITY_IMAGE}


def test_docker_compose_accepts_the_file() -> None:
    result = docker_compose_config(REPO)
    assert result.returncode == 0, result.stderr
    assert set(yaml.safe_load(result.stdout)["services"]) == set(SERVICES)


def test_docker_compose_rejects_a_mistake_so_its_acceptance_means_something(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(COMPOSE.read_text().replace("restart: unless-stopped", "restrat: no", 1))
    result = docker_compose_config(tmp_path)
    assert result.returncode != 0
    assert "restrat" in result.stderr


def test_the_telegram_chat_id_is_required() -> None:
    result = docker_compose_config(REPO, {"TELEGRAM_CHAT_ID": ""})
    assert result.returncode != 0
    assert "TELEGRAM_CHAT_ID" in result.stderr


def test_the_services_are_the_stack_and_the_commands_that_exist() -> None:
    assert {"ollama", "exporter", "postgres", "prometheus", "alertmanager", "grafana"} <= set(SERVICES)
    from singularity_ops.controllers.registry import load_all

    assert set(singularity_services()) == {"exporter", *load_all()}, "the exporter and one service per controller"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_image_is_pinned_to_an_exact_version(name: str) -> None:
    _image, tag = image_tag(SERVICES[name]["image"])
    assert tag and tag != "latest", f"{name}: {SERVICES[name]['image']} is not pinned"
    version = re.fullmatch(r"v?(\d+)\.(\d+)(\.\d+)?(-[a-z0-9.-]+)?", tag)
    assert version, f"{name}: {tag} is not a version"
    # major.minor.patch; PostgreSQL's own versions are major.minor (16.4), which is exact for it.
    assert version[3] or name == "postgres", f"{name}: {tag} floats over patch releases"


def test_alertmanager_is_a_version_with_bot_token_file() -> None:
    _, tag = image_tag(SERVICES["alertmanager"]["image"])
    major, minor, _patch = (int(part) for part in tag.lstrip("v").split("-")[0].split("."))
    assert (major, minor) >= (0, 26)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck_and_restarts(name: str) -> None:
    check = SERVICES[name].get("healthcheck")
    assert check and not check.get("disable"), f"{name} has no healthcheck"
    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1
    assert SERVICES[name].get("restart") == "unless-stopped"


def test_only_grafana_and_the_gateway_are_published() -> None:
    ports = {name: published(s) for name, s in SERVICES.items() if published(s)}
    assert ports == {"grafana": [3000], "exporter": [11435]}
    assert not [name for name, s in SERVICES.items() if s.get("network_mode") == "host"]


def test_the_gateway_listens_where_it_is_published_and_metrics_stay_inside() -> None:
    command = SERVICES["exporter"]["command"]
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    assert flags == {"--metrics-listen": "0.0.0.0:9777", "--gateway-listen": "0.0.0.0:11435"}
    assert SERVICES["exporter"]["environment"]["OLLAMA_HOST"] == "http://ollama:11434"


def test_secrets_are_files_under_secrets_and_kept_out_of_the_image() -> None:
    secrets = load()["secrets"]
    assert {"telegram_bot_token", "backup_key", "postgres_password"} <= set(secrets)
    assert all(entry["file"] == f"./secrets/{name}" for name, entry in secrets.items())
    used = {ref if isinstance(ref, str) else ref["source"] for s in SERVICES.values() for ref in s.get("secrets", [])}
    assert used <= set(secrets)
    assert "secrets" in (REPO / ".dockerignore").read_text().split()
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "telegram_bot_token" in SERVICES["alertmanager"]["secrets"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_data_lives_in_named_volumes_and_configuration_is_mounted_read_only(name: str) -> None:
    declared = set(load()["volumes"])
    for volume in SERVICES[name].get("volumes", []):
        source, target, *mode = volume.split(":")
        if source.startswith("./"):
            assert (REPO / source).is_dir(), f"{name}: {source} is not in the repository"
            assert mode == ["ro"], f"{name}: {volume} should be read-only"
        else:
            assert source in declared, f"{name}: {volume} is neither a named volume nor a repository folder"
        assert target.startswith("/")


def cli_help(*args: str) -> str:
    result = subprocess.run([str(CLI), *args, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def cli_commands() -> set[str]:
    """The commands `singularity-ops --help` lists under COMMAND."""
    listing = cli_help().split("COMMAND\n", 2)[-1].split("\noptions:")[0]
    return set(re.findall(r"^    (\S+)", listing, re.M))


def controller_names() -> set[str]:
    """The controllers `singularity-ops controller NAME` can run (its registry)."""
    from singularity_ops.controllers.registry import load_all

    return set(load_all())


@pytest.mark.parametrize("name", sorted(singularity_services()))
def test_the_image_runs_only_commands_and_flags_the_cli_has(name: str) -> None:
    command = SERVICES[name]["command"]
    assert command[0] in cli_commands(), f"`singularity-ops {command[0]}` does not exist"
    if command[0] == "controller":
        assert command[1] in controller_names(), f"there is no controller {command[1]!r} yet"
    help_text = cli_help(command[0])
    for flag in (arg for arg in command[1:] if arg.startswith("--")):
        assert flag in help_text, f"`singularity-ops {command[0]}` has no {flag}"


def test_the_cli_parsing_above_finds_the_commands_and_controllers() -> None:
    assert {"run", "exporter", "migrate", "check-memory"} <= cli_commands()


@pytest.mark.parametrize("name", sorted(singularity_services()))
def test_the_database_url_is_built_from_the_postgres_secret(name: str, tmp_path: Path) -> None:
    """The app reads the URL from the environment only; the entrypoint builds it from the password file and
    hands over to the CLI with the service's command. Run with ``env`` in place of the CLI to see what it gets."""
    postgres = SERVICES["postgres"]["environment"]
    (tmp_path / "password").write_text("s3cret\n")
    result = run_script(script(SERVICES[name]), {"/run/secrets/postgres_password": str(tmp_path / "password"),
                                                 'exec singularity-ops "$@"': 'exec env "$@"'},
                        env={})
    assert result.returncode == 0, result.stderr
    user, database = postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]
    assert f"SINGULARITY_DATABASE_URL=postgresql://{user}:s3cret@postgres:5432/{database}" in result.stdout.split("\n")
    assert "postgres_password" in SERVICES[name]["secrets"]
    assert SERVICES[name]["entrypoint"][3] == "singularity-ops"  # $0; the command follows as "$@"


def test_prometheus_config_written_at_start_scrapes_the_exporter_service_and_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed: apt-get install prometheus (scripts/test does it)"
    written = tmp_path / "prometheus.yml"
    result = run_script(script(SERVICES["prometheus"]), {
        " /prometheus/prometheus.yml": f" {written}",  # the copy it writes (the leading space keeps /etc/... apart)
        "/etc/prometheus": str(REPO / "prometheus"),  # the mounted repository folder
        'exec /bin/prometheus "$@"': "true",
    }, env={})
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(written.read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "exporter:9777" in targets and not [t for t in targets if t.startswith("127.0.0.1")]
    alertmanagers = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"]
                     for t in sc["targets"]]
    assert alertmanagers == ["alertmanager:9093"]
    assert all(path.startswith(str(REPO / "prometheus" / "rules")) for path in config["rule_files"])
    check = subprocess.run([promtool, "check", "config", str(written)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "--config.file=/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]


def render_alertmanager(tmp_path: Path, chat_id: str) -> subprocess.CompletedProcess[str]:
    return run_script(script(SERVICES["alertmanager"]), {
        " /alertmanager/alertmanager.yml": f" {tmp_path / 'alertmanager.yml'}",
        "/etc/alertmanager/alertmanager.yml": str(REPO / "alertmanager" / "alertmanager.yml"),
        'exec /bin/alertmanager "$@"': "true",
    }, env={"TELEGRAM_CHAT_ID": chat_id, "TELEGRAM_API_URL": "http://telegram.test"})


def test_alertmanager_config_written_at_start_reads_the_token_from_the_secret(tmp_path: Path) -> None:
    result = render_alertmanager(tmp_path, CHAT_ID)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "alertmanager.yml").read_text()
    config = yaml.safe_load(text)
    telegram = [c for r in config["receivers"] for c in r.get("telegram_configs", [])]
    assert telegram, "no Telegram receiver"
    for entry in telegram:
        assert entry["bot_token_file"] == "/run/secrets/telegram_bot_token" and "bot_token" not in entry
        assert entry["chat_id"] == int(CHAT_ID)
        assert entry["api_url"] == "http://telegram.test"
    assert "RENDERED-FROM" not in text
    for pattern in config["templates"]:
        assert pattern.startswith("/etc/alertmanager/templates/")
        assert list((REPO / "alertmanager").glob(pattern.removeprefix("/etc/alertmanager/"))), pattern
    assert "--config.file=/alertmanager/alertmanager.yml" in SERVICES["alertmanager"]["command"]


def test_alertmanager_refuses_to_start_without_a_numeric_chat_id(tmp_path: Path) -> None:
    result = render_alertmanager(tmp_path, "@mychannel")
    assert result.returncode == 1
    assert "TELEGRAM_CHAT_ID must be an integer" in result.stderr


def test_grafana_gets_the_provisioning_and_the_dashboards_where_the_provider_looks() -> None:
    mounts = dict(v.split(":")[:2] for v in SERVICES["grafana"]["volumes"])
    assert mounts["./grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts["./grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    providers = [p for path in (REPO / "grafana/provisioning/dashboards").glob("*.yml")
                 for p in yaml.safe_load(path.read_text())["providers"]]
    assert [p["options"]["path"] for p in providers] == [mounts["./grafana/dashboards"]]
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(mounts["./grafana/dashboards"] + "/")
    assert (REPO / "grafana/dashboards" / Path(home).name).is_file()
    datasources = [d for path in (REPO / "grafana/provisioning/datasources").glob("*.yml")
                   for d in yaml.safe_load(path.read_text())["datasources"]]
    prometheus_port = next(a for a in SERVICES["prometheus"]["command"] if a.startswith("--web.listen-address"))
    assert {d["url"] for d in datasources if d["type"] == "prometheus"} == {
        f"http://prometheus:{prometheus_port.rsplit(':', 1)[1]}"}


def test_the_published_gateway_needs_api_keys_from_a_secret() -> None:
    """Published beyond loopback without keys the gateway refuses to start (docs/ANOMALY_DETECTION.md)."""
    exporter = SERVICES["exporter"]
    assert exporter["environment"]["SINGULARITY_API_KEYS_FILE"] == "/run/secrets/gateway_api_keys"
    assert "gateway_api_keys" in exporter["secrets"]
    assert load()["secrets"]["gateway_api_keys"] == {"file": "./secrets/gateway_api_keys"}
