"""The `backup` commands as a user types them: create, list, verify, restore, prune, keygen; --json output, quiet
when not on a terminal, and the key nowhere in what they print."""

from __future__ import annotations

import argparse
import io
import json
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from singularity_ops.cli.backup import TerminalProgress, add_parser, run
from singularity_ops.cli.main import _common, config_from
from tests.controllers.backup.helpers import AlertSink, checksums, empty_database, fill


@pytest.fixture
def backup_cli(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, clean_env: None):
    """``backup_cli("create", "--json")`` → (exit code, stdout, stderr)."""
    monkeypatch.setenv("SINGULARITY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SINGULARITY_DATABASE_URL", database_url)
    monkeypatch.setenv("SINGULARITY_BACKUP_KEY_FILE", str(tmp_path / "backup.key"))
    fill(database_url, rows=200)

    def call(*argv: str) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="singularity-ops")
        add_parser(parser.add_subparsers(dest="command", required=True), _common)
        args = parser.parse_args(["backup", *argv])
        out, err = io.StringIO(), io.StringIO()
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            code = run(config_from(args), args)
        finally:
            sys.stdout, sys.stderr = old
        return code, out.getvalue(), err.getvalue()

    return call


def test_keygen_then_create_list_verify_prune(backup_cli, tmp_path: Path) -> None:
    code, out, _ = backup_cli("keygen", "--json")
    assert code == 0
    made = json.loads(out)
    assert made["path"] == str(tmp_path / "backup.key") and made["public_key"].startswith("age1")
    assert made["old_key_id"] is None
    assert stat.S_IMODE((tmp_path / "backup.key").stat().st_mode) == 0o600

    code, out, err = backup_cli("create", "--kind", "daily", "--json")
    assert code == 0 and err == ""  # no progress line: stderr is not a terminal
    created = json.loads(out)
    assert created["kind"] == "daily" and created["status"] == "ok" and created["verified_at"]
    assert created["tables"] >= 2 and created["rows"] >= 250
    assert created["recipients"] == [made["public_key"]]  # which key opens it, never the key
    assert created["format"] == "age" and created["path"].endswith(f"{created['id']}.tar.gz.age")

    code, out, _ = backup_cli("list", "--json")
    assert [b["id"] for b in json.loads(out)["backups"]] == [created["id"]]
    code, out, _ = backup_cli("list")
    assert out.splitlines()[0].split() == ["ID", "KIND", "FORMAT", "STATUS", "STARTED", "SIZE", "VERIFIED", "ERROR"]
    assert out.splitlines()[1].split()[:4] == [created["id"], "daily", "age", "ok"]

    code, out, _ = backup_cli("verify", "--latest", "--json")
    verified = json.loads(out)
    assert verified["verified"] and verified["backup"]["id"] == created["id"]
    assert verified["tables"]["public.people"] == 200
    code, out, _ = backup_cli("verify", created["id"])
    assert out.startswith(f"backup {created['id']} verified: restored into a scratch database")

    code, out, _ = backup_cli("prune", "--json")
    assert json.loads(out) == {"dry_run": False, "removed": [], "kept": [created["id"]], "files": []}

    [secret] = [line for line in (tmp_path / "backup.key").read_text().splitlines() if line.startswith("AGE-SECRET")]
    for text in (out, json.dumps(created), json.dumps(verified)):
        assert secret not in text


def test_restore_by_hand(backup_cli, tmp_path: Path, database_url: str, postgres_server_url: str) -> None:
    backup_cli("keygen")
    _, out, _ = backup_cli("create", "--no-verify", "--json")
    backup_id = json.loads(out)["id"]
    with empty_database(postgres_server_url) as target:
        code, out, _ = backup_cli("restore", backup_id, "--to", target, "--files", str(tmp_path / "files"))
        assert code == 0 and out.startswith(f"restored backup {backup_id} into ")
        assert checksums(target) == checksums(database_url)
        from singularity_ops.controllers.backup.errors import BackupError

        with pytest.raises(BackupError, match="not empty"):
            backup_cli("restore", backup_id, "--to", target)
        code, out, _ = backup_cli("restore", backup_id, "--to", target, "--force", "--json")
        assert json.loads(out)["tables"]["public.people"] == 200


def test_prune_lists_every_file_it_deletes(backup_cli, database_url: str, tmp_path: Path) -> None:
    backup_cli("keygen")
    _, out, _ = backup_cli("create", "--json")
    kept = json.loads(out)["id"]
    with psycopg.connect(database_url, autocommit=True) as conn:  # what a backup killed mid-way leaves
        conn.execute("INSERT INTO backups (id, kind, status, host, started) VALUES ('x-daily-dead', 'daily', "
                     "'running', 'gone', now())")
    partial = tmp_path / "home" / "backups" / ".x-daily-dead.tar.gz.age.partial"
    partial.write_bytes(b"half a backup")
    code, out, _ = backup_cli("prune", "--dry-run")
    assert out.splitlines() == [f"  would delete {partial}",
                                "0 would remove, 1 kept, 1 file would be deleted (backup.keep = 7 per kind)"]
    assert partial.exists()
    code, out, _ = backup_cli("prune")
    assert code == 0 and out.splitlines() == [f"  deleted {partial}",
                                              "0 removed, 1 kept, 1 file deleted (backup.keep = 7 per kind)"]
    assert not partial.exists() and (tmp_path / "home" / "backups" / f"{kept}.tar.gz.age").exists()


def test_keygen_writes_the_default_key_where_backups_find_it(backup_cli, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.delenv("SINGULARITY_BACKUP_KEY_FILE")
    code, out, _ = backup_cli("keygen")
    assert code == 0 and f"wrote a new backup key to {tmp_path / 'home' / 'backup.key'}" in out
    assert "Backups use it from there; keep a copy away from this machine" in out
    _, out, _ = backup_cli("create", "--no-verify", "--json")
    assert json.loads(out)["status"] == "ok"


def test_keygen_upgrades_an_old_key_file_in_place_or_carries_its_key_to_a_new_one(backup_cli,
                                                                                  tmp_path: Path) -> None:
    old = "ab" * 32  # a key file from before the age format
    (tmp_path / "backup.key").write_text(old + "\n")
    (tmp_path / "backup.key").chmod(0o600)
    from singularity_ops.controllers.backup.errors import BackupError

    with pytest.raises(BackupError, match=r"holds an old-format key .*Run `singularity-ops backup keygen`"):
        backup_cli("create")
    code, out, _ = backup_cli("keygen", "--output", str(tmp_path / "elsewhere.key"))
    assert code == 0 and "it carries the old key (key id " in out and "Set SINGULARITY_BACKUP_KEY_FILE=" in out
    assert (tmp_path / "backup.key").read_text() == old + "\n"  # untouched
    assert old in (tmp_path / "elsewhere.key").read_text()
    code, out, _ = backup_cli("keygen")
    assert code == 0 and out.startswith(f"added an age identity to {tmp_path / 'backup.key'} (public key age1")
    assert "the old key (key id " in out and "still reads the backups made before the age format" in out
    assert old not in out
    _, out, _ = backup_cli("create", "--no-verify", "--json")
    assert json.loads(out)["format"] == "age"


def test_create_without_a_key_is_refused(backup_cli) -> None:
    from singularity_ops.controllers.backup.errors import BackupError

    with pytest.raises(BackupError, match=r"cannot read backup key file .*backup\.key: No such file"):
        backup_cli("create")


def test_progress_shows_bytes_and_rate_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    quiet, loud = io.StringIO(), Terminal()
    for stream in (quiet, loud):
        progress = TerminalProgress("backing up", stream)
        progress.shown -= 1  # as if the last line was a second ago
        progress(5 * 2**20)
        progress.end()
    assert quiet.getvalue() == ""
    assert loud.getvalue().startswith("\rbacking up: 5.0 MiB, ") and "/s" in loud.getvalue()


def test_the_module_runs_alone_and_errors_are_one_line(tmp_path: Path, database_url: str) -> None:
    env = {"SINGULARITY_HOME": str(tmp_path), "SINGULARITY_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "singularity_ops.cli", "backup", "create"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "singularity-ops backup create: error: no backup key: set SINGULARITY_BACKUP_KEY_FILE to a key file (create "
        "one with `singularity-ops backup keygen`); backups are never written unencrypted"]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT status FROM backups").fetchall() == [("failed",)]


def test_notify_announces_success_and_failure_to_alertmanager(backup_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from singularity_ops.controllers.backup.errors import BackupError

    with AlertSink() as alertmanager:
        monkeypatch.setenv("SINGULARITY_ALERTMANAGER_URL", alertmanager.url)
        with pytest.raises(BackupError, match="cannot read backup key file"):
            backup_cli("create", "--kind", "weekly", "--notify")
        backup_cli("keygen")
        _, out, _ = backup_cli("create", "--kind", "weekly", "--notify", "--json")
    failed, succeeded = alertmanager.alerts
    assert failed["labels"]["alertname"] == "BackupFailed" and failed["labels"]["kind"] == "weekly"
    assert "cannot read backup key file" in failed["annotations"]["description"]
    assert succeeded["labels"]["alertname"] == "BackupSucceeded" and succeeded["labels"]["severity"] == "info"
    assert succeeded["annotations"]["summary"].startswith("The weekly backup succeeded: ")
    assert json.loads(out)["id"] in succeeded["annotations"]["description"]
