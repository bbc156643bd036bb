"""compose.yaml as data, and its start-up shell snippets run here with the container paths mapped to real ones."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

COMPOSE = REPO / "compose.yaml"
CHAT_ID = "-1001234567890"
ENV = {"TELEGRAM_CHAT_ID": CHAT_ID}  # the one variable compose.yaml requires


def load() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose is needed to validate compose.yaml: apt-get install docker-compose (Debian's 1.29)"
    return found


def docker_compose_config(directory: Path, extra_env: dict[str, str] | None = None
                          ) -> subprocess.CompletedProcess[str]:
    """``docker-compose config``: interpolates and validates against the Compose schema, no engine needed."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory), **ENV, **(extra_env or {})}
    return subprocess.run([docker_compose(), "--no-ansi", "-f", "compose.yaml", "config"], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=60)


def script(service: dict[str, Any]) -> str:
    """The ``sh -c`` script of a service's entrypoint, as the shell gets it (compose's ``$$`` is one ``$``)."""
    entrypoint = service["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"], entrypoint
    return entrypoint[2].replace("$$", "$")


def run_script(text: str, paths: dict[str, str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a start-up script with each container path in ``paths`` (in order) replaced; every one must occur, so a
    change to the script that the mapping no longer covers fails here instead of in a container."""
    for container_path, here in paths.items():
        assert container_path in text, f"{container_path!r} is no longer in the script: {text}"
        text = text.replace(container_path, here)
    return subprocess.run(["/bin/sh", "-c", text, "sh"], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=30)


def published(service: dict[str, Any]) -> list[int]:
    """Host ports a service publishes (short syntax ``[IP:]HOST:CONTAINER`` or long syntax)."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append(int(entry["published"]))
        else:
            parts = str(entry).split(":")
            ports.append(int(parts[-2] if len(parts) > 1 else parts[-1]))
    return ports


def image_tag(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    return (name, tag) if name and "/" not in tag else (image, "")


def version_of_project() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert match
    return match[1]
