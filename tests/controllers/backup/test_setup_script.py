"""scripts/setup_automated_backups.sh: creates the key, installs timers (or crontab lines), idempotent, removable.
systemctl and crontab are stand-ins that record what they are asked; everything else is real."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "setup_automated_backups.sh"
BIN = f"{sys.executable} -m singularity_ops.cli"


@pytest.fixture
def box(tmp_path: Path) -> dict[str, Path]:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "crontab").write_text(f"""#!/bin/sh
table={tmp_path}/crontab.txt
if [ "$1" = -l ]; then [ -f "$table" ] || exit 1; cat "$table"; else cat > "$table"; fi
""")
    (tools / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.log\n')
    for tool in tools.iterdir():
        tool.chmod(0o755)
    return {"tmp": tmp_path, "tools": tools, "config": tmp_path / "etc", "crontab": tmp_path / "crontab.txt",
            "units": tmp_path / "units", "systemctl": tmp_path / "systemctl.log"}


def setup(box: dict[str, Path], *options: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{box['tools']}:/usr/bin:/bin", "HOME": str(box["tmp"]), "SYSTEMCTL": "systemctl",
           "SINGULARITY_HOME": str(box["tmp"] / "home"), "SINGULARITY_DATABASE_URL": "postgresql://u:pw@db/history",
           "PYTHONPATH": str(REPO)}
    return subprocess.run(["bash", str(SCRIPT), "--bin", BIN, "--config-dir", str(box["config"]), *options],
                          capture_output=True, text=True, env=env, timeout=60)


def test_cron_mode_creates_the_key_and_two_lines_once_and_uninstall_removes_them(box: dict[str, Path]) -> None:
    box["crontab"].write_text("15 * * * * /usr/bin/something-else\n")
    for _ in range(2):
        result = setup(box, "--mode", "cron", "--daily", "02:30", "--weekly", "Sat 05:00")
        assert result.returncode == 0, result.stderr
    lines = box["crontab"].read_text().splitlines()
    assert lines[0] == "15 * * * * /usr/bin/something-else"
    ours = [line for line in lines if "# singularity-ops-backup" in line]
    assert [line.split(" set -a")[0] for line in ours] == ["30 2 * * *", "0 5 * * 6"]
    assert "backup create --kind daily --notify && " in ours[0] and "backup prune" in ours[0]

    key = box["config"] / "backup.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and "\nAGE-SECRET-KEY-1" in key.read_text()  # an age identity
    environment = box["config"] / "backup.env"
    assert stat.S_IMODE(environment.stat().st_mode) == 0o600
    assert f"SINGULARITY_BACKUP_KEY_FILE='{key}'" in environment.read_text()
    assert "SINGULARITY_DATABASE_URL='postgresql://u:pw@db/history'" in environment.read_text()

    first_key = key.read_text()
    result = setup(box, "--mode", "cron", "--uninstall")
    assert result.returncode == 0 and "kept" in result.stdout
    assert box["crontab"].read_text().splitlines() == ["15 * * * * /usr/bin/something-else"]
    assert key.read_text() == first_key  # never removed, never replaced


def test_systemd_mode_writes_a_service_and_two_persistent_timers(box: dict[str, Path]) -> None:
    for _ in range(2):
        result = setup(box, "--mode", "systemd", "--unit-dir", str(box["units"]))
        assert result.returncode == 0, result.stderr
    service = (box["units"] / "singularity-ops-backup@.service").read_text()
    assert f"EnvironmentFile={box['config'] / 'backup.env'}" in service
    assert f"ExecStart={sys.executable} -m singularity_ops.cli backup create --kind %i --notify" in service
    daily = (box["units"] / "singularity-ops-backup-daily.timer").read_text()
    weekly = (box["units"] / "singularity-ops-backup-weekly.timer").read_text()
    assert "OnCalendar=*-*-* 03:00:00" in daily and "Persistent=true" in daily
    assert "OnCalendar=Sun *-*-* 04:00:00" in weekly and "Unit=singularity-ops-backup@weekly.service" in weekly
    calls = box["systemctl"].read_text().splitlines()
    enable = [c for c in calls if "enable --now" in c]
    assert len(enable) == 2 and "singularity-ops-backup-daily.timer singularity-ops-backup-weekly.timer" in enable[0]

    assert setup(box, "--mode", "systemd", "--unit-dir", str(box["units"]), "--uninstall").returncode == 0
    assert list(box["units"].iterdir()) == []
    assert any("disable --now" in c for c in box["systemctl"].read_text().splitlines())


@pytest.mark.parametrize(("options", "problem"), [
    (("--daily", "25:00"), "bad time '25:00'; write HH:MM"),
    (("--weekly", "someday 04:00"), "bad day in --weekly"),
    (("--mode", "launchd"), "--mode is auto, systemd or cron"),
    (("--frequently",), "unknown option --frequently"),
])
def test_bad_options_are_one_line_errors(box: dict[str, Path], options: tuple[str, ...], problem: str) -> None:
    result = setup(box, *options)
    assert result.returncode == 2 and problem in result.stderr and len(result.stderr.splitlines()) == 1
    assert not box["crontab"].exists() and not (box["config"] / "backup.key").exists()


def test_an_existing_key_is_used_as_it_is(box: dict[str, Path]) -> None:
    key = box["tmp"] / "my.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    before = key.read_text()
    assert setup(box, "--mode", "cron", "--key", str(key)).returncode == 0
    assert key.read_text() == before and not (box["config"] / "backup.key").exists()
    assert f"SINGULARITY_BACKUP_KEY_FILE='{key}'" in (box["config"] / "backup.env").read_text()
