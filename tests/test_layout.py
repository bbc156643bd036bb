"""The layout is the architecture (shared/DESIGN.md, "The layout"): one folder per part, each saying its job,
modules small enough to have one job, and the import directions between the parts checked by import-linter."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
PART_FOLDERS = ["singularity_ops", "cli", "exporter", "controllers"]
MAX_LINES = 400


def product_modules() -> list[Path]:
    # resolved: singularity_ops/cli is a link to cli/ (see test_the_parts_are_linked_into_the_import_layout)
    return sorted({p.resolve() for folder in PART_FOLDERS for p in (REPO / folder).rglob("*.py")
                   if "__pycache__" not in p.parts})


def package_folders() -> list[Path]:
    return sorted({p.parent.resolve() for folder in PART_FOLDERS for p in (REPO / folder).rglob("__init__.py")})


def test_no_module_is_over_400_lines() -> None:
    too_long = {str(p.relative_to(REPO)): n for p in [*product_modules(), *(REPO / "bench").glob("*.py")]
                if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert too_long == {}, "a module over 400 lines does two jobs; split it"


@pytest.mark.parametrize("folder", package_folders(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_package_says_its_job_in_its_first_docstring(folder: Path) -> None:
    docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
    assert docstring and len(docstring) > 40, f"{folder.relative_to(REPO)}/__init__.py needs a docstring"


def test_every_package_folder_is_in_the_wheel() -> None:
    mapping = {folder: name for name, folder in SETUPTOOLS["package-dir"].items()}
    listed = set(SETUPTOOLS["packages"])
    for folder in package_folders():
        relative = folder.relative_to(REPO)
        top = relative.parts[0]
        name = ".".join([mapping[top], *relative.parts[1:]])
        assert name in listed, f"{relative} is not listed in pyproject.toml's packages as {name}"


def test_the_controllers_each_have_their_own_folder_once_they_span_several_files() -> None:
    folders = {p.name for p in (REPO / "controllers").iterdir() if (p / "__init__.py").exists()}
    assert {"backup", "model_manager"} <= folders
    flat = {p.stem for p in (REPO / "controllers").glob("*.py")} - {"__init__", "base", "registry"}
    for name in flat:
        assert not any(p.stem.startswith(f"{name}_") for p in (REPO / "controllers").glob("*.py")), name


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """Plain ``lint-imports`` on the checkout at ``root``, as scripts/test runs it."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint_imports), "--no-cache", str(root / ".importlinter")], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120)


def test_the_parts_are_linked_into_the_import_layout() -> None:
    """import-linter reads one folder per root package, so singularity_ops/ links to the parts mapped into it
    (pyproject's package-dir): the folder tree then reads as the installed package does."""
    mapping = SETUPTOOLS["package-dir"]
    for name, folder in mapping.items():
        if name != "singularity_ops":
            link = REPO / name.replace(".", "/")
            assert link.is_symlink() and link.resolve() == (REPO / folder).resolve(), name


def test_the_import_contracts_hold() -> None:
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("module", "forbidden"), [
    ("singularity_ops/store.py", "singularity_ops.exporter.app"),             # core → exporter
    ("controllers/base.py", "singularity_ops.exporter.collectors.host"),    # controllers → exporter
    ("exporter/collectors/host.py", "singularity_ops.exporter.gateway.cost"),  # collectors → gateway
    ("exporter/gateway/cost.py", "singularity_ops.cli.tables"),             # a part → cli
])
def test_a_wrong_arrow_breaks_the_lint(tmp_path: Path, module: str, forbidden: str) -> None:
    copy = tmp_path / "repo"
    for item in [*PART_FOLDERS, "migrations", "pyproject.toml", ".importlinter"]:
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, copy / item, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, copy / item)
    target = copy / module
    target.write_text(target.read_text() + f"\nimport {forbidden}  # noqa\n")
    result = lint(copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout or "broken" in result.stdout.lower()
