"""docs/BACKUPS.md's "restore without singularity-ops", run as written: the real age binary, tar and the server's
own pg_restore bring back the database, the config and the included files; and a backup encrypted to an extra
recipient opens with that recipient's key alone, which never was on the machine that made it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from pyrage import x25519

from singularity_ops.controllers.backup.pg import find_tools
from singularity_ops.controllers.backup.store import Backups
from tests.controllers.backup.helpers import backup_config, checksums, fill, open_backups

REPO = Path(__file__).resolve().parents[3]
AGE = shutil.which("age")
pytestmark = [pytest.mark.skipif(AGE is None or shutil.which("tar") is None,
                                 reason="needs Debian's age and GNU tar (scripts/test installs age)"),
              pytest.mark.slow]  # two backups, then age, tar, createdb and pg_restore as separate programs


def documented_commands() -> list[str]:
    """The shell block of docs/BACKUPS.md#restore-without-singularity-ops, comments dropped."""
    text = (REPO / "docs" / "BACKUPS.md").read_text()
    section = text[text.index("## Restore without singularity-ops"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def libpq_environment(url: str, tools_folder: Path) -> dict[str, str]:
    """What a shell on the server would have: the server's tools on PATH, PGHOST/PGUSER/PGPORT pointing at it."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    env = {**os.environ, "PATH": f"{tools_folder}{os.pathsep}{os.environ['PATH']}"}
    for key, variable in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"), ("password", "PGPASSWORD")):
        if params.get(key):
            env[variable] = str(params[key])
    return env


def test_three_shell_commands_restore_a_backup_without_singularity_ops(tmp_path: Path, database_url: str) -> None:
    fill(database_url, rows=300)
    config_file = tmp_path / "singularity.yaml"
    config_file.write_text("history:\n  retention_days: 9\n")
    (tmp_path / "home" / "state").mkdir(parents=True)
    (tmp_path / "home" / "state" / "notes.txt").write_text("kept\n")
    backups = open_backups(backup_config(tmp_path, database_url, include=["state"]), config_file=config_file)
    record = backups.create("manual", verify=False)
    assert record.manifest["contents"][0]["parts"] > 1  # the parts are joined by cat

    commands = documented_commands()
    assert commands == [
        "age -d -i backup.key 20250601T010000Z-daily-3f9a.tar.gz.age | tar -xz",
        "createdb singularity",
        "cat database.dump.* | pg_restore --no-owner --no-privileges --dbname=singularity",
    ]
    workdir = tmp_path / "restore"
    workdir.mkdir()
    shutil.copyfile(tmp_path / "backup.key", workdir / "backup.key")
    shutil.copyfile(record.path, workdir / "20250601T010000Z-daily-3f9a.tar.gz.age")
    with psycopg.connect(database_url) as conn:
        tools = find_tools(conn.info.server_version // 10000)
    restored = f"restored_{os.urandom(4).hex()}"
    env = libpq_environment(database_url, tools.pg_restore.parent)
    try:
        for command in commands:
            result = subprocess.run(["bash", "-o", "pipefail", "-c", command.replace("singularity", restored)],
                                    cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, (command, result.stderr)
        restored_url = psycopg.conninfo.make_conninfo(database_url, dbname=restored)
        tables = ("public.people", 'extra."Odd.Name"')
        assert checksums(restored_url, tables) == checksums(database_url, tables)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{restored}" WITH (FORCE)')
    assert (workdir / "config" / "singularity.yaml").read_text() == config_file.read_text()
    assert (workdir / "home" / "state" / "notes.txt").read_text() == "kept\n"
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest == {k: v for k, v in record.manifest.items() if k not in ("file", "finished")}


def test_an_extra_recipient_opens_a_backup_with_a_key_that_never_was_on_the_machine(
        tmp_path: Path, database_url: str) -> None:
    offsite = x25519.Identity.generate()  # kept by the operator elsewhere: only its public key is configured
    fill(database_url, rows=50)
    config = backup_config(tmp_path, database_url, recipients=[str(offsite.to_public())])
    backups = open_backups(config)
    record = backups.create("manual")  # verified with the machine's own key
    assert record.manifest["encryption"]["recipients"][1] == str(offsite.to_public())
    assert str(offsite) not in (tmp_path / "backup.key").read_text()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "offsite.key").write_text(f"{offsite}\n")
    result = subprocess.run(f"{AGE} -d -i offsite.key {record.path} | tar -xz", shell=True, cwd=elsewhere,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads((elsewhere / "manifest.json").read_text())["id"] == record.id

    (elsewhere / "offsite.key").chmod(0o600)
    with_offsite_key = Backups(backup_config(tmp_path, database_url, key_file=str(elsewhere / "offsite.key")),
                               backups.database)
    assert with_offsite_key.verify(record.id).tables["public.people"] == 50
