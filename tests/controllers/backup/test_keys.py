"""The backup key file: an age identity as age-keygen writes it (which the age binary reads), old-format keys read
beside it, extra recipients checked, and no secret in any message or repr."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from pyrage import x25519

from singularity_ops.config import load_config
from singularity_ops.controllers.backup.errors import BackupError
from singularity_ops.controllers.backup.keys import LEGACY_LINE, load_keys, parse_recipients, write_new_key
from singularity_ops.errors import ConfigError

AGE_KEYGEN = shutil.which("age-keygen")


def test_keygen_writes_a_private_age_identity_file_and_never_replaces_one(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "backup.key"
    made = write_new_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    created, public, secret = path.read_text().splitlines()
    assert created.startswith("# created: ") and public == f"# public key: {made.public_key}"
    assert secret.startswith("AGE-SECRET-KEY-1") and len(secret) == 74
    assert load_keys(path).public_keys == [made.public_key] and load_keys(path).legacy is None
    before = path.read_bytes()
    with pytest.raises(BackupError, match=r"already exists; keygen never replaces a key"):
        write_new_key(path)
    assert path.read_bytes() == before


@pytest.mark.skipif(AGE_KEYGEN is None, reason="needs Debian's age (scripts/test installs it)")
def test_the_key_file_is_what_age_keygen_writes_and_reads(tmp_path: Path) -> None:
    ours = tmp_path / "ours.key"
    made = write_new_key(ours)
    assert subprocess.run([AGE_KEYGEN, "-y", str(ours)], capture_output=True, text=True,
                          check=True).stdout.strip() == made.public_key
    theirs = tmp_path / "theirs.key"
    subprocess.run([AGE_KEYGEN, "-o", str(theirs)], capture_output=True, check=True)
    printed = subprocess.run([AGE_KEYGEN, "-y", str(theirs)], capture_output=True, text=True, check=True).stdout
    assert load_keys(theirs).public_keys == [printed.strip()]


def test_an_old_key_file_reads_as_the_old_key_only(tmp_path: Path) -> None:
    path = tmp_path / "old.key"
    path.write_text(os.urandom(32).hex() + "\n")  # as `openssl rand -hex 32` made it
    path.chmod(0o600)
    keys = load_keys(path)
    assert keys.public_keys == [] and keys.legacy is not None and len(keys.legacy.key_id) == 16
    with pytest.raises(BackupError, match=r"holds an old-format key .* Run `singularity-ops backup keygen`"):
        keys.recipients()


def test_a_key_file_may_carry_the_old_key_as_a_comment(tmp_path: Path) -> None:
    old = os.urandom(32).hex()
    identity = x25519.Identity.generate()
    path = tmp_path / "both.key"
    path.write_text(f"# a comment\n\n{identity}\n{LEGACY_LINE}{old}\n")
    path.chmod(0o600)
    keys = load_keys(path)
    assert keys.public_keys == [str(identity.to_public())] and keys.legacy.hex() == old
    path.write_text(f"{identity}\n# singularity-ops sgbk key: {old}\n")  # as docs/BACKUPS.md's shell line writes it
    assert load_keys(path).legacy.hex() == old


def test_recipients_are_the_key_files_own_and_the_configured_ones(tmp_path: Path) -> None:
    keys = load_keys(write_new_key(tmp_path / "k").path)
    offsite = str(x25519.Identity.generate().to_public())
    assert [str(r) for r in keys.recipients([offsite])] == [*keys.public_keys, offsite]
    assert [str(r) for r in keys.recipients([offsite, *keys.public_keys, offsite])] == [*keys.public_keys, offsite]
    with pytest.raises(BackupError, match=r"backup\.recipients\[1\] \(age1qqqqqqqq…\) is not an age public key"):
        parse_recipients([offsite, "age1" + "q" * 58])  # the right shape, a wrong checksum


def test_the_config_refuses_what_is_not_an_age_public_key(tmp_path: Path) -> None:
    offsite = str(x25519.Identity.generate().to_public())
    config_file = tmp_path / "c.yaml"
    config_file.write_text(f"backup:\n  recipients: ['{offsite}']\n")
    assert load_config(environ={}, config_file=config_file).backup.recipients == [offsite]
    config_file.write_text("backup:\n  recipients: ['ssh-ed25519 AAAA']\n")
    with pytest.raises(ConfigError, match=r"backup\.recipients.*is not an age public key"):
        load_config(environ={}, config_file=config_file)


def test_key_file_problems_are_one_line_and_never_echo_the_contents(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match=r"^no backup key: set SINGULARITY_BACKUP_KEY_FILE .* never written "
                                          r"unencrypted$"):
        load_keys(None)
    with pytest.raises(BackupError, match=r"cannot read backup key file .*missing: No such file"):
        load_keys(tmp_path / "missing")
    secret = str(x25519.Identity.generate())
    for name, text, problem in [
            ("garbage", "correct horse battery staple, definitely-secret\n", "line 1 is neither an age identity"),
            ("damaged", secret[:-3] + "QQQ\n", "has a damaged age identity on line 1"),
            ("empty", "# nothing but a comment\n", "does not hold a key")]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(BackupError) as caught:
            load_keys(path)
        message = str(caught.value)
        assert problem in message and "AGE-SECRET-KEY-1…" in message and "\n" not in message
        assert "staple" not in message and secret[16:-3] not in message


def test_a_readable_key_file_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_new_key(tmp_path / "key").path
    path.chmod(0o644)
    load_keys(path)
    assert "can be read by other users (mode 644); chmod 600 it" in caplog.text
    assert "AGE-SECRET-KEY" not in caplog.text


def test_an_old_key_file_that_cannot_change_says_how_to_write_one_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "backup_key"
    path.write_text(os.urandom(32).hex())
    before = path.read_text()
    (tmp_path / ".backup_key.new").mkdir()  # where the new file would go cannot be written (as with a Docker secret)
    with pytest.raises(BackupError, match=r"cannot add an age identity to .*backup_key: .*Docker secret.*"
                                          r"`singularity-ops backup keygen --output FILE` \(it carries the old key"):
        write_new_key(path)
    assert path.read_text() == before


def test_keys_show_public_keys_and_the_old_key_id_only(tmp_path: Path) -> None:
    path = tmp_path / "k"
    old = os.urandom(32).hex()
    path.write_text(old)
    write_new_key(path)
    keys = load_keys(path)
    [secret] = [line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET")]
    for text in (repr(keys), str(keys), f"{keys}", repr(write_new_key(tmp_path / "other"))):
        assert secret not in text and old not in text and "age1" in text
