"""Backups against a real PostgreSQL with the real pg_dump and pg_restore: round trips, tampering,
one backup at a time, crashes, and the key kept out of every output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from singularity_ops.controllers.backup.catalogue import PARTIAL, SIDECAR, SUFFIX, BackupBusy, BackupRecord
from singularity_ops.controllers.backup.errors import BackupCorrupt, BackupError
from singularity_ops.controllers.backup.keys import write_new_key
from singularity_ops.controllers.backup.pg import with_database
from singularity_ops.controllers.backup.store import Backups
from tests.conftest import REPO
from tests.controllers.backup.helpers import (
    AGE_SEGMENT,
    age_payload,
    backup_config,
    catalogue,
    checksums,
    empty_database,
    fill,
    flip,
    incompressible,
    open_backups,
    public_key,
    relations,
    scratch_databases,
)


def test_round_trip_fill_back_up_drop_restore_gives_identical_rows(tmp_path: Path, database_url: str) -> None:
    fill(database_url)
    before = checksums(database_url)
    backups = open_backups(backup_config(tmp_path, database_url))
    record = backups.create("manual")
    assert record is not None and record.status == "ok" and record.verified_at is not None
    assert record.path == backups.directory / f"{record.id}{SUFFIX}" and record.path.stat().st_size == record.bytes
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('DROP TABLE people; DROP SCHEMA extra CASCADE')
    result = backups.restore(record.id, database_url, force=True)  # the disaster: same database, tables gone
    assert checksums(database_url) == before
    assert result.tables["public.people"] == 2000 and result.tables['extra."Odd.Name"'] == 500


def test_restore_into_an_empty_database_and_refuse_a_full_one(tmp_path: Path, database_url: str,
                                                               postgres_server_url: str) -> None:
    fill(database_url)
    backups = open_backups(backup_config(tmp_path, database_url))
    record = backups.create("manual", verify=False)
    with empty_database(postgres_server_url) as target:
        backups.restore(record.id, target)
        assert checksums(target) == checksums(database_url)
        with pytest.raises(BackupError, match=r"restore target .* is not empty \(\d+ relations, e\.g\. .*add --force"):
            backups.restore(record.id, target)


def test_the_manifest_lists_contents_sizes_checksums_and_row_counts(tmp_path: Path, database_url: str) -> None:
    fill(database_url, rows=100)
    config_file = tmp_path / "singularity.yaml"
    config_file.write_text("ollama:\n  host: http://127.0.0.1:11434\n")
    (tmp_path / "home" / "state").mkdir(parents=True)
    (tmp_path / "home" / "state" / "notes.txt").write_text("kept")
    backups = open_backups(backup_config(tmp_path, database_url, include=["state"]), config_file=config_file)
    record = backups.create("daily", verify=False)
    sidecar = json.loads(record.path.with_name(f"{record.id}{SIDECAR}").read_text())
    assert sidecar["id"] == record.id and sidecar["kind"] == "daily" and sidecar["format"] == 2
    assert record.format == "age" and record.path.name == f"{record.id}.tar.gz.age"
    assert [(m["name"], m["type"]) for m in sidecar["contents"]] == [
        ("database.dump", "pg_dump"), ("config/singularity.yaml", "file"), ("home/state/notes.txt", "file")]
    assert sidecar["contents"][0]["parts"] == -(-sidecar["contents"][0]["bytes"] // backups.dump_part_bytes)
    assert all(len(m["sha256"]) == 64 and m["bytes"] >= 0 for m in sidecar["contents"])
    assert sidecar["tables"]["public.people"] == 100 and "public.backups" not in sidecar["tables"]
    assert sidecar["file"] == {"name": record.path.name, "bytes": record.bytes, "sha256": record.sha256}
    assert sidecar["encryption"]["recipients"] == [public_key(tmp_path / "backup.key")]
    assert sidecar["compression"] == {"method": "gzip", "level": 1}
    assert sidecar["database"]["server_version"].split(".")[0] == sidecar["database"]["pg_dump_version"].split(".")[0]


def test_files_are_restored_into_a_folder(tmp_path: Path, database_url: str, postgres_server_url: str) -> None:
    config_file = tmp_path / "singularity.yaml"
    config_file.write_text("history:\n  retention_days: 9\n")
    (tmp_path / "home" / "state").mkdir(parents=True)
    (tmp_path / "home" / "state" / "notes.txt").write_bytes(os.urandom(50_000))
    backups = open_backups(backup_config(tmp_path, database_url, include=["state"]), config_file=config_file)
    record = backups.create("manual", verify=False)
    with empty_database(postgres_server_url) as target:
        result = backups.restore(record.id, target, files_to=tmp_path / "restored")
    assert result.files == ["config/singularity.yaml", "home/state/notes.txt"]
    assert (tmp_path / "restored" / "config" / "singularity.yaml").read_text() == config_file.read_text()
    assert ((tmp_path / "restored" / "home" / "state" / "notes.txt").read_bytes()
            == (tmp_path / "home" / "state" / "notes.txt").read_bytes())


def test_no_key_refuses_and_writes_no_file(tmp_path: Path, database_url: str) -> None:
    backups = open_backups(backup_config(tmp_path, database_url, key=False))
    with pytest.raises(BackupError, match=r"no backup key: set SINGULARITY_BACKUP_KEY_FILE"):
        backups.create("manual")
    assert not backups.directory.exists() or not any(backups.directory.iterdir())
    [(_, kind, status, error)] = catalogue(database_url)
    assert (kind, status) == ("manual", "failed") and error.startswith("no backup key")


def test_a_pg_dump_of_another_major_version_is_refused(tmp_path: Path, database_url: str) -> None:
    tools = tmp_path / "pg14"
    tools.mkdir()
    for name in ("pg_dump", "pg_restore"):
        (tools / name).write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) 14.11'\n")
        (tools / name).chmod(0o755)
    backups = open_backups(backup_config(tmp_path, database_url, pg_bin_dir=str(tools)))
    with pytest.raises(BackupError, match=r"no pg_dump/pg_restore for PostgreSQL \d+ in backup\.pg_bin_dir .*pg14 "
                                          r"\(found 14\.11 at .*\); point it at a PostgreSQL \d+ bin folder"):
        backups.create("manual")
    assert not list(backups.directory.glob(f"*{SUFFIX}"))


# -- tampering: one backup, damaged in every way; each fails verify, names the problem and restores nothing --------
@dataclass
class Made:
    backups: Backups
    record: BackupRecord
    other: BackupRecord
    genuine: bytes
    server_url: str
    tmp: Path


@pytest.fixture(scope="module")
def made(postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    name = "tamper_module"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_server_url, name)
    tmp = tmp_path_factory.mktemp("tamper")
    fill(url, rows=500)
    backups = open_backups(backup_config(tmp, url, include=[incompressible(tmp)]))
    record = backups.create("manual", verify=False)
    other = backups.create("manual", verify=False)
    yield Made(backups, record, other, record.path.read_bytes(), postgres_server_url, tmp)
    backups.database.close()
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def chunk(data: bytes, index: int) -> int:
    return age_payload(data) + index * AGE_SEGMENT


def swap(data: bytes, first: int, second: int) -> bytes:
    a, b, size = chunk(data, first), chunk(data, second), AGE_SEGMENT
    return data[:a] + data[b:b + size] + data[a + size:b] + data[a:a + size] + data[b + size:]


def changed_at(data: bytes, at: int) -> bytes:
    """One base64 digit of the header changed into another (still valid base64)."""
    return data[:at] + (b"B" if data[at:at + 1] == b"A" else b"A") + data[at + 1:]


DAMAGED = r"is damaged or was tampered with: it fails authentication after \d+ bytes"
TAMPERING = {
    "the header's MAC changed": (lambda d: changed_at(d, d.index(b"\n---") + 6),
                                 r"header is damaged \(Header MAC is invalid\)"),
    "the recipient stanza changed": (lambda d: changed_at(d, d.index(b"-> X25519 ") + 60),  # its wrapped file key
                                     r"lists age1\w+ as its recipients, but .* its header is damaged"),
    "a flipped byte in the nonce": (lambda d: flip(d, age_payload(d) - 3), DAMAGED.replace(r"\d+", "0")),
    "a flipped byte in the first chunk": (lambda d: flip(d, chunk(d, 0) + 7), DAMAGED.replace(r"\d+", "0")),
    "a flipped byte in a middle chunk": (lambda d: flip(d, chunk(d, 2) + 99), DAMAGED.replace(r"\d+", "131072")),
    "a flipped byte in the last tag": (lambda d: flip(d, len(d) - 1), DAMAGED),
    "cut at a chunk boundary": (lambda d: d[:chunk(d, 3)], r"is truncated: it ends without its final chunk \(after "
                                                          r"196608 bytes"),
    "cut inside a chunk": (lambda d: d[:chunk(d, 3) + 100], DAMAGED.replace(r"\d+", "196608")),
    "cut inside the header": (lambda d: d[:40], r"is truncated: it ends inside its age header"),
    "two chunks swapped": (lambda d: swap(d, 1, 3), DAMAGED.replace(r"\d+", "65536")),
    "bytes appended": (lambda d: d + b"more", DAMAGED),
    "emptied": (lambda d: b"", r"is empty"),
}


@pytest.mark.parametrize("damage", list(TAMPERING))
def test_tampering_fails_verify_with_a_clear_error_and_restores_nothing(made: Made, damage: str) -> None:
    change, problem = TAMPERING[damage]
    assert len(made.genuine) > chunk(made.genuine, 4)
    made.record.path.write_bytes(change(made.genuine))
    try:
        with pytest.raises(BackupCorrupt, match=problem) as caught:
            made.backups.verify(made.record.id)
        assert "\n" not in str(caught.value) and made.record.path.name in str(caught.value)
        assert scratch_databases(made.server_url) == []
        with empty_database(made.server_url) as target:
            with pytest.raises(BackupCorrupt, match=problem):
                made.backups.restore(made.record.id, target)
            assert relations(target) == []
    finally:
        made.record.path.write_bytes(made.genuine)


def test_the_untouched_backup_verifies(made: Made) -> None:
    result = made.backups.verify(made.record.id)
    assert result.tables["public.people"] == 500 and scratch_databases(made.server_url) == []


def test_the_wrong_key_fails_verify_naming_both_public_keys(made: Made, tmp_path: Path) -> None:
    other = write_new_key(tmp_path / "other.key")
    config = backup_config(made.tmp, made.backups.database.url, key_file=str(tmp_path / "other.key"))
    wrong = Backups(config, made.backups.database)
    made_for = public_key(made.tmp / "backup.key")
    with pytest.raises(BackupError, match=rf"was encrypted to {made_for}, but the key file .*other\.key holds the "
                                          rf"identity of {other.public_key}; set SINGULARITY_BACKUP_KEY_FILE to a key"):
        wrong.verify(made.record.id)
    with empty_database(made.server_url) as target:
        with pytest.raises(BackupError, match="was encrypted to age1"):
            wrong.restore(made.record.id, target)
        assert relations(target) == []


def test_the_wrong_file_in_its_place_fails_verify(made: Made) -> None:
    shutil.copyfile(made.other.path, made.record.path)
    try:
        with pytest.raises(BackupCorrupt, match=rf"holds backup {made.other.id}, not {made.record.id}: the wrong file"):
            made.backups.verify(made.record.id)
        with empty_database(made.server_url) as target:
            with pytest.raises(BackupCorrupt, match="the wrong file"):
                made.backups.restore(made.record.id, target)
            assert relations(target) == []
    finally:
        made.record.path.write_bytes(made.genuine)


def test_a_changed_sidecar_manifest_is_caught_when_the_database_is_gone(made: Made) -> None:
    sidecar = made.record.path.with_name(f"{made.record.id}{SIDECAR}")
    genuine = sidecar.read_text()
    changed = json.loads(genuine)
    changed["tables"]["public.people"] = 1
    sidecar.write_text(json.dumps(changed))
    try:
        without_database = Backups(made.backups.config, None)
        with empty_database(made.server_url) as target:
            with pytest.raises(BackupCorrupt, match=r"the manifest beside .* was changed"):
                without_database.restore(made.record.id, target)
            assert relations(target) == []
    finally:
        sidecar.write_text(genuine)


def test_a_failed_verify_marks_the_backup_failed(made: Made) -> None:
    record = made.backups.create("manual", verify=False)
    data = record.path.read_bytes()
    record.path.write_bytes(flip(data, age_payload(data) + 3))
    with pytest.raises(BackupCorrupt):
        made.backups.verify(record.id)
    [failed] = [r for r in made.backups.list() if r.id == record.id]
    assert failed.status == "failed" and "fails authentication" in failed.error


# -- listing without the database ------------------------------------------------------------------------------------
def test_backups_are_listed_and_restored_from_their_files_when_the_database_is_gone(
        tmp_path: Path, database_url: str, postgres_server_url: str) -> None:
    fill(database_url, rows=50)
    config = backup_config(tmp_path, database_url)
    record = open_backups(config).create("weekly", verify=False)
    orphaned = Backups(config, None)
    [listed] = orphaned.list()
    assert (listed.id, listed.kind, listed.source, listed.bytes) == (record.id, "weekly", "file", record.bytes)
    with empty_database(postgres_server_url) as target:
        orphaned.restore(str(record.path), target)  # by path, as on a new machine
        assert checksums(target, ("public.people",)) == checksums(database_url, ("public.people",))
    with pytest.raises(BackupError, match=r"verifying .* needs the history database"):
        orphaned.verify(record.id)


# -- one at a time, and crashes ----------------------------------------------------------------------------------------
def test_a_second_backup_refuses_while_one_holds_the_lock(tmp_path: Path, database_url: str) -> None:
    config = backup_config(tmp_path, database_url)
    first, second = open_backups(config), open_backups(config)
    with first.locked():
        with pytest.raises(BackupBusy, match=r"another backup job holds the backup lock.*try again"):
            second.create("manual")
        with pytest.raises(BackupBusy):
            second.prune()
    assert catalogue(database_url) == []
    assert second.create("manual", verify=False) is not None  # free again


def test_killed_mid_backup_leaves_a_failed_row_and_no_file(tmp_path: Path, database_url: str) -> None:
    fill(database_url, rows=100)
    config = backup_config(tmp_path, database_url)
    backups = open_backups(config)
    env = {**os.environ, "SINGULARITY_DATABASE_URL": database_url, "SINGULARITY_HOME": str(config.home),
           "SINGULARITY_BACKUP_KEY_FILE": str(config.backup.key_file), "PYTHONPATH": str(REPO)}
    env.pop("SINGULARITY_CONFIG", None)
    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE people IN ACCESS EXCLUSIVE MODE")  # holds the backup still, mid-way
        process = subprocess.Popen([sys.executable, "-m", "singularity_ops.cli", "backup", "create"],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while not list(backups.directory.glob(f".*{PARTIAL}")):
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "the backup never started writing"
                time.sleep(0.05)
            [(running_id, _, status, _)] = catalogue(database_url)
            assert status == "running"
            with pytest.raises(BackupBusy, match=rf"backup {running_id} \(started .* on "):
                backups.create("manual")
            process.send_signal(signal.SIGKILL)
            process.wait()
        finally:
            if process.poll() is None:
                process.kill()
            process.stderr.close()
        blocker.rollback()
    assert not list(backups.directory.glob(f"*{SUFFIX}"))  # nothing that could pass for a backup
    deadline = time.monotonic() + 20
    while True:  # the killed session's lock goes when the server notices the client is gone
        try:
            backups.prune()
            break
        except BackupBusy:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    [(backup_id, _, status, error)] = catalogue(database_url)
    assert (backup_id, status) == (running_id, "failed") and error.startswith("interrupted")
    assert list(backups.directory.iterdir()) == []


def test_the_key_never_appears_in_logs_errors_or_records(tmp_path: Path, database_url: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    fill(database_url, rows=20)
    config = backup_config(tmp_path, database_url)
    [secret] = [line for line in (tmp_path / "backup.key").read_text().splitlines() if line.startswith("AGE-SECRET")]
    backups = open_backups(config)
    record = backups.create("manual")
    from singularity_ops.controllers.backup.keys import load_keys

    texts = [caplog.text, repr(config), repr(record), json.dumps(record.as_json()), repr(backups.list()),
             repr(load_keys(tmp_path / "backup.key")), str(load_keys(tmp_path / "backup.key"))]
    data = record.path.read_bytes()
    record.path.write_bytes(flip(data, age_payload(data) + 1))
    with pytest.raises(BackupError) as caught:
        backups.verify(record.id)
    texts += [str(caught.value), caplog.text]
    texts += [record.path.with_name(f"{record.id}{SIDECAR}").read_text()]
    for text in texts:
        assert secret not in text and secret.lower() not in text and secret[16:40] not in text
