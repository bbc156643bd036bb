"""Backups and keys from before the age format: a backup written by the old code (fixtures/sgbk-v1) still lists,
verifies and restores; its key file still reads it, cannot make new backups, and `keygen` adds an age identity to
it that makes them while the old key goes on reading the old ones."""

from __future__ import annotations

import json
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from singularity_ops.controllers.backup.errors import BackupCorrupt, BackupError
from singularity_ops.controllers.backup.keys import LEGACY_LINE, load_keys, write_new_key
from singularity_ops.controllers.backup.store import Backups
from tests.controllers.backup.helpers import (
    backup_config,
    checksums,
    empty_database,
    fill,
    flip,
    open_backups,
    relations,
    scratch_databases,
)

FIXTURE = Path(__file__).parent / "fixtures" / "sgbk-v1"
OLD_ID = "20261130T112909Z-daily-dbd6"
OLD_KEY_ID = "7ab2bcda1731d627"


@dataclass
class Old:
    backups: Backups
    key_file: Path
    directory: Path
    tmp: Path
    url: str


@pytest.fixture
def old(tmp_path: Path, database_url: str) -> Old:
    """The old backup in the backups folder and its key file as the configured key, as an upgrade finds them."""
    directory = tmp_path / "backups"
    directory.mkdir()
    for name in (f"{OLD_ID}.sgbk", f"{OLD_ID}.manifest.json"):
        shutil.copyfile(FIXTURE / name, directory / name)
    key_file = tmp_path / "old.key"
    shutil.copyfile(FIXTURE / "backup.key", key_file)
    key_file.chmod(0o600)
    config = backup_config(tmp_path, database_url, key=False, key_file=str(key_file), directory=str(directory))
    return Old(open_backups(config), key_file, directory, tmp_path, database_url)


def test_an_old_backup_is_listed_with_its_format(old: Old) -> None:
    [listed] = old.backups.list()
    assert (listed.id, listed.format, listed.source, listed.status) == (OLD_ID, "sgbk", "file", "ok")
    shown = listed.as_json()
    assert shown["format"] == "sgbk" and shown["key_id"] == OLD_KEY_ID and shown["recipients"] is None
    assert shown["rows"] == 85 and listed.path == old.directory / f"{OLD_ID}.sgbk"


@pytest.mark.slow
def test_an_old_backup_verifies_and_restores_with_its_key(old: Old, postgres_server_url: str) -> None:
    result = old.backups.verify(OLD_ID)
    assert result.tables["public.people"] == 60 and result.tables['extra."Odd.Name"'] == 15
    assert scratch_databases(postgres_server_url) == []
    expected = {table: tuple(value) for table, value in json.loads((FIXTURE / "checksums.json").read_text()).items()}
    with empty_database(postgres_server_url) as target:
        restored = old.backups.restore(str(old.directory / f"{OLD_ID}.sgbk"), target, files_to=old.tmp / "files")
        assert checksums(target) == expected
    assert restored.files == ["config/singularity.yaml", "home/state/notes.txt"]
    assert (old.tmp / "files" / "config" / "singularity.yaml").read_text() == "history:\n  retention_days: 30\n"


def test_a_damaged_old_backup_fails_verify_and_restores_nothing(old: Old, postgres_server_url: str) -> None:
    path = old.directory / f"{OLD_ID}.sgbk"
    path.write_bytes(flip(path.read_bytes(), 5000))
    with pytest.raises(BackupCorrupt, match=rf"{OLD_ID}\.sgbk is damaged or was tampered with: chunk 1 .*fails "
                                            "authentication"):
        old.backups.verify(OLD_ID)
    with empty_database(postgres_server_url) as target:
        with pytest.raises(BackupCorrupt, match="fails authentication"):
            old.backups.restore(OLD_ID, target)
        assert relations(target) == []


def test_an_old_key_file_refuses_new_backups_and_says_how_to_upgrade(old: Old) -> None:
    fill(old.url, rows=10)
    with pytest.raises(BackupError, match=r"old\.key holds an old-format key \(64 hex digits\): it still reads the "
                                          r"backups made with it, but new backups are in the age format .* Run "
                                          r"`singularity-ops backup keygen`, which adds one to that file"):
        old.backups.create("manual")
    assert sorted(path.name for path in old.directory.iterdir()) == [f"{OLD_ID}.manifest.json", f"{OLD_ID}.sgbk"]


@pytest.mark.slow
def test_keygen_adds_an_age_identity_to_an_old_key_file_which_then_reads_both_formats(old: Old) -> None:
    before = old.key_file.read_text().strip()
    made = write_new_key(old.key_file)
    assert made.kept_old_key == OLD_KEY_ID and stat.S_IMODE(old.key_file.stat().st_mode) == 0o600
    lines = old.key_file.read_text().splitlines()
    assert lines[1] == f"# public key: {made.public_key}" and lines[2].startswith("AGE-SECRET-KEY-1")
    assert lines[3] == f"{LEGACY_LINE}{before}"  # a comment to age, the old key to us
    keys = load_keys(old.key_file)
    assert keys.public_keys == [made.public_key] and keys.legacy is not None and keys.legacy.key_id == OLD_KEY_ID

    fill(old.url, rows=30)
    new = old.backups.create("manual")  # verified on the way
    assert new.format == "age" and new.manifest["encryption"]["recipients"] == [made.public_key]
    assert old.backups.verify(OLD_ID).tables["public.people"] == 60
    assert [record.format for record in old.backups.list()] == ["age", "sgbk"]

    with pytest.raises(BackupError, match="already exists; keygen never replaces a key"):
        write_new_key(old.key_file)  # it holds an age identity now


def test_keygen_elsewhere_carries_the_old_key_along(old: Old) -> None:
    elsewhere = old.tmp / "new" / "backup.key"
    made = write_new_key(elsewhere, load_keys(old.key_file).legacy)
    assert made.kept_old_key == OLD_KEY_ID and old.key_file.read_text().strip() == load_keys(
        old.key_file).legacy.hex()  # the old file is left as it was
    moved = Backups(backup_config(old.tmp, old.url, key=False, key_file=str(elsewhere),
                                  directory=str(old.directory)), old.backups.database)
    assert moved.verify(OLD_ID).tables["public.people"] == 60


def test_a_key_file_without_the_old_key_says_what_an_old_backup_needs(old: Old) -> None:
    age_only = old.tmp / "age.key"
    write_new_key(age_only)
    without = Backups(backup_config(old.tmp, old.url, key=False, key_file=str(age_only),
                                    directory=str(old.directory)), old.backups.database)
    with pytest.raises(BackupError, match=rf"{OLD_ID}\.sgbk was made before the age format and needs the old backup "
                                          r"key \(64 hex digits\), which the key file .*age\.key does not hold: .*add "
                                          rf"the old key to this one as the line `{re.escape(LEGACY_LINE)}HEX`"):
        without.verify(OLD_ID)
