"""One import name when installed: a wheel holds singularity_ops.* only, migrations included."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

PROBE = (
    "import singularity_ops, singularity_ops.exporter.app, singularity_ops.cli.main;"
    "from singularity_ops.migrate import load_migrations;"
    "print(singularity_ops.__file__); print(','.join(m.name for m in load_migrations()))"
)


@pytest.mark.slow
def test_wheel_installs_under_one_import_name_and_imports(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("singularity_ops-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"singularity_ops"}
    assert "singularity_ops/migrations/0001_model_catalogue.sql" in names
    assert "singularity_ops/exporter/collectors/ollama.py" in names

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    location, migrations = result.stdout.split()
    assert location.startswith(str(target))
    assert migrations == ",".join(sorted(p.name for p in (REPO / "migrations").glob("*.sql")))


@pytest.mark.slow
def test_editable_install_imports_from_the_repository(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    location, migrations = result.stdout.split()
    assert location.startswith(str(REPO / "singularity_ops"))
    assert migrations == ",".join(sorted(p.name for p in (REPO / "migrations").glob("*.sql")))
