"""Check the import directions between the parts (shared/DESIGN.md, "The layout") with import-linter.

import-linter reads a package from one folder, but ours is assembled from several (``package-dir`` in
pyproject.toml maps cli/, exporter/, controllers/ into ``singularity_ops``). So this lays the installed layout out
in a temporary folder, exactly as the wheel would, and runs ``lint-imports`` on it with the contracts from
``.importlinter``. Exit status: lint-imports' own (non-zero on a broken contract).

    python scripts/lint_imports.py [--root DIR]   # DIR: a checkout other than this one (the tests use it)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path


def assemble(root: Path, into: Path) -> None:
    """Copy every mapped package's .py files to where the installed package would have them."""
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = setuptools["package-dir"]
    for package in setuptools["packages"]:
        parent = max((name for name in mapping if package == name or package.startswith(name + ".")), key=len)
        source = root / mapping[parent] / package[len(parent):].lstrip(".").replace(".", "/")
        target = into / package.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for module in source.glob("*.py"):
            shutil.copy2(module, target / module.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    root = args.root.resolve()
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        print("lint_imports: needs import-linter (pip install import-linter)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="singularity-layout-") as folder:
        assemble(root, Path(folder))
        environ = {**os.environ, "PYTHONPATH": folder}
        return subprocess.run([lint, str(root / ".importlinter"), "--no-cache"], cwd=folder,
                              env=environ).returncode


if __name__ == "__main__":
    sys.exit(main())
