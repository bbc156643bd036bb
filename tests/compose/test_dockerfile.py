"""The Dockerfile: a pinned slim Python, the package installed from a build context that holds all of it, a
non-root user, the CLI as entrypoint, and a healthcheck that really asks /healthz."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from singularity_ops.config import load_config
from singularity_ops.exporter.app import Exporter
from tests.compose.compose import load
from tests.conftest import REPO, free_port
from tests.helpers import Running

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            logical.append(current)
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def only(name: str) -> str:
    (found,) = [args for instruction, args in instructions() if instruction == name]
    return found


def test_the_base_image_is_a_pinned_slim_python_3_11() -> None:
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", only("FROM"))


def test_it_runs_as_a_user_that_is_not_root() -> None:
    users = [args for instruction, args in instructions() if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    order = [instruction for instruction, _ in instructions()]
    assert order.index("USER") > max(i for i, name in enumerate(order) if name == "RUN"), "RUN after USER as root?"


def test_the_entrypoint_is_the_cli_and_the_default_command_the_exporter() -> None:
    assert json.loads(only("ENTRYPOINT")) == ["singularity-ops"]
    assert json.loads(only("CMD")) == ["exporter"]


def healthcheck_command() -> list[str]:
    args = only("HEALTHCHECK")
    _options, _, command = args.partition("CMD ")
    return json.loads(command)


def test_compose_and_the_image_check_health_the_same_way() -> None:
    assert load()["services"]["exporter"]["healthcheck"]["test"] == ["CMD", *healthcheck_command()]


@pytest.fixture
def exporter(ollama, clean_env) -> Iterator[Running]:
    config = load_config(environ={"OLLAMA_HOST": ollama.host, "SINGULARITY_METRICS_LISTEN": f"127.0.0.1:{free_port()}"})
    with Running(Exporter.build(config, with_database=False)) as running:
        yield running


def run_healthcheck(port: str) -> subprocess.CompletedProcess[str]:
    command = healthcheck_command()
    assert command[0] == "python", "the slim image has no curl or wget"
    assert "127.0.0.1:9777/healthz" in command[-1]
    return subprocess.run([sys.executable, *command[1:-1], command[-1].replace("9777", port)],
                          capture_output=True, text=True, timeout=30)


def test_the_healthcheck_passes_against_a_running_exporter(exporter: Running) -> None:
    result = run_healthcheck(exporter.url.rsplit(":", 1)[1])
    assert result.returncode == 0, result.stderr


def test_the_healthcheck_fails_when_nothing_answers() -> None:
    assert run_healthcheck(str(free_port())).returncode != 0


def ignored(relative: Path, patterns: list[str]) -> bool:
    """.dockerignore matching for the patterns this repository uses (no ``!`` exceptions): a path is left out when
    it or a folder above it matches a pattern; ``**/`` matches at any depth."""
    for depth in range(1, len(relative.parts) + 1):
        prefix = Path(*relative.parts[:depth])
        for pattern in patterns:
            if fnmatch.fnmatch(str(prefix), pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatch(prefix.name, pattern[3:]):
                return True
    return False


def build_context(destination: Path) -> Path:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "the matcher above does not handle exceptions"
    for path in REPO.rglob("*"):
        relative = path.relative_to(REPO)
        if path.is_file() and not ignored(relative, patterns):
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination / relative)
    return destination


@pytest.mark.slow
def test_the_build_context_holds_the_whole_package_and_no_secrets_or_virtualenv(tmp_path: Path) -> None:
    context = build_context(tmp_path / "context")
    assert not (context / "secrets").exists() and not (context / ".venv").exists() and not (context / ".git").exists()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                    str(context)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("singularity_ops-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"singularity_ops/{p.relative_to(REPO / 'singularity_ops')}" for p in
                (REPO / "singularity_ops").rglob("*.py")}
    expected |= {f"singularity_ops/exporter/{p.relative_to(REPO / 'exporter')}" for p in
                 (REPO / "exporter").rglob("*.py")}
    expected |= {f"singularity_ops/migrations/{p.name}" for p in (REPO / "migrations").glob("*.sql")}
    assert expected - names == set()
