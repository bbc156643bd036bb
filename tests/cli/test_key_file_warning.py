"""A one-shot command logs only errors by default (its own output says what went wrong), except the warning that
a backup key file can be read by other users: that one is about a secret, and nothing else would say it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "singularity_ops.cli"]


@pytest.mark.slow
def test_a_key_file_others_can_read_is_a_warning_at_the_default_level(tmp_path: Path, database_url: str) -> None:
    key = tmp_path / "backup.key"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SINGULARITY_", "OLLAMA_"))},
           "SINGULARITY_HOME": str(tmp_path / "home"), "SINGULARITY_DATABASE_URL": database_url,
           "SINGULARITY_BACKUP_KEY_FILE": str(key)}
    subprocess.run([*CLI, "backup", "keygen"], env=env, check=True, capture_output=True)
    key.chmod(0o644)
    result = subprocess.run([*CLI, "backup", "create", "--json"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines  # once per reading of the key (the backup, then its verification), and nothing else
    for line in lines:
        assert "WARNING" in line and f"backup key file {key} can be read by other users (mode 644)" in line
    assert key.read_text().strip() not in result.stderr
