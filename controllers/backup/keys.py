"""Backup keys: the age identity in the key file, the extra recipients of ``backup.recipients``, and the key of the
old format.

The key file (``SINGULARITY_BACKUP_KEY_FILE``, else ``SINGULARITY_HOME/backup.key``) is an age identity file as
``age-keygen`` writes it, so ``age -d -i backup.key`` opens a backup without singularity-ops. New backups are
encrypted to the public key of every identity in it and to each ``backup.recipients`` key (e.g. one kept off the
machine); any of their identities opens them.

A key file from before the age format holds 64 hex digits: it still reads the ``.sgbk`` backups made with it, but
cannot make new ones. ``backup keygen`` then adds an age identity to the file and keeps the old key in it as a
comment line, which age ignores and this module reads::

    # singularity-ops sgbk key (reads backups made before the age format): <64 hex digits>

No secret ever leaves these objects: ``repr`` shows public keys and the old key's id only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pyrage import IdentityError, RecipientError, x25519

from singularity_ops.controllers.backup.errors import BackupError
from singularity_ops.controllers.backup.sgbk import LegacyKey

log = logging.getLogger(__name__)

LEGACY_LINE = "# singularity-ops sgbk key (reads backups made before the age format): "
_LEGACY = re.compile(r"#\s*singularity-ops sgbk key[^:]*:\s*([0-9a-fA-F]{64})\s*")
_IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
_MAX_KEY_FILE = 64 << 10
_MAKE_ONE = "create one with `singularity-ops backup keygen` or `age-keygen -o FILE`"


class BackupKeys:
    """What one key file holds: age identities (to open backups; their public keys are what new backups are
    encrypted to) and, from before the age format, the old key."""

    __slots__ = ("_identities", "legacy", "path", "public_keys")

    def __init__(self, path: Path, identities: Sequence[x25519.Identity], legacy: LegacyKey | None = None) -> None:
        self.path = path
        self._identities = list(identities)
        self.public_keys = [str(identity.to_public()) for identity in self._identities]
        self.legacy = legacy

    @property
    def identities(self) -> list[x25519.Identity]:
        return list(self._identities)

    def recipients(self, extra: Sequence[str] = ()) -> list[x25519.Recipient]:
        """Whom a new backup is encrypted to: this file's identities and ``backup.recipients``."""
        if not self._identities:
            raise BackupError(
                f"backup key file {self.path} holds an old-format key (64 hex digits): it still reads the backups "
                "made with it, but new backups are in the age format and need an age identity. Run "
                "`singularity-ops backup keygen`, which adds one to that file and keeps the old key in it "
                "(docs/BACKUPS.md#keys)")
        chosen = {str(r): r for r in [*(identity.to_public() for identity in self._identities),
                                      *parse_recipients(extra)]}  # each once, in order
        return list(chosen.values())

    def __repr__(self) -> str:
        old = f", old_key_id={self.legacy.key_id!r}" if self.legacy else ""
        return f"BackupKeys(path={str(self.path)!r}, public_keys={self.public_keys!r}{old})"

    __str__ = __repr__


def parse_recipients(texts: Sequence[str]) -> list[x25519.Recipient]:
    recipients = []
    for index, text in enumerate(texts):
        try:
            recipients.append(x25519.Recipient.from_str(text.strip()))
        except RecipientError:
            raise BackupError(f"backup.recipients[{index}] ({text.strip()[:12]}…) is not an age public key (age1…, "
                              "as `age-keygen -y KEYFILE` prints it); fix backup.recipients") from None
    return recipients


def _problem(path: Path, what: str) -> BackupError:
    return BackupError(f"backup key file {path} {what}; expected an age identity (AGE-SECRET-KEY-1…: {_MAKE_ONE}) "
                       "or a key from before the age format (64 hex digits); point SINGULARITY_BACKUP_KEY_FILE at "
                       "the right file")


def parse_key_file(text: str, path: Path) -> BackupKeys:
    """The keys in a key file's text; a problem is named by line number, never by the line's contents."""
    legacy = LegacyKey.from_hex(text)
    if legacy is not None:  # a key file from before the age format
        return BackupKeys(path, [], legacy)
    identities = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        match = _LEGACY.fullmatch(line)
        if match:
            legacy = LegacyKey.from_hex(match.group(1))
        elif line.startswith("#"):
            continue
        elif line.upper().startswith(_IDENTITY_PREFIX):
            try:
                identities.append(x25519.Identity.from_str(line))
            except IdentityError:
                raise _problem(path, f"has a damaged age identity on line {number}") from None
        else:
            raise _problem(path, f"does not hold a key (line {number} is neither an age identity nor a comment)")
    if not identities and legacy is None:
        raise _problem(path, "does not hold a key")
    return BackupKeys(path, identities, legacy)


def load_keys(path: Path | None) -> BackupKeys:
    if path is None:
        raise BackupError("no backup key: set SINGULARITY_BACKUP_KEY_FILE to a key file (create one with "
                          "`singularity-ops backup keygen`); backups are never written unencrypted")
    try:
        with open(path, "rb") as file:
            raw = file.read(_MAX_KEY_FILE)
            mode = os.fstat(file.fileno()).st_mode
    except OSError as exc:
        raise BackupError(f"cannot read backup key file {path}: {exc.strerror}; check SINGULARITY_BACKUP_KEY_FILE "
                          "(create a key with `singularity-ops backup keygen`)") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise _problem(path, "does not hold a key (it is not text)") from None
    keys = parse_key_file(text, path)
    if mode & 0o077:
        log.warning("backup key file %s can be read by other users (mode %03o); chmod 600 it", path, mode & 0o777)
    return keys


@dataclass(frozen=True)
class NewKey:
    path: Path
    public_key: str
    kept_old_key: str | None  # the old key's id when the file carries one along

    def __repr__(self) -> str:
        return f"NewKey(path={str(self.path)!r}, public_key={self.public_key!r}, kept_old_key={self.kept_old_key!r})"


def _key_text(identity: x25519.Identity, legacy: LegacyKey | None) -> str:
    text = (f"# created: {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}\n"
            f"# public key: {identity.to_public()}\n"
            f"{identity}\n")
    if legacy is not None:
        text += f"{LEGACY_LINE}{legacy.hex()}\n"
    return text


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600) with ``text``; an existing file is never touched."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_new_key(path: Path, carry: LegacyKey | None = None) -> NewKey:
    """Write a new age identity to ``path`` (mode 0600), as ``age-keygen`` would. A file that holds an age
    identity is never replaced (the backups made with it would become unreadable). A file that holds only an old
    key gets the identity added and keeps the old key (as a comment line); ``carry`` copies an old key into a new
    file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    identity = x25519.Identity.generate()
    try:
        _write_private(path, _key_text(identity, carry))
    except FileExistsError:
        pass
    except OSError as exc:
        raise BackupError(f"cannot create key file {path}: {exc.strerror}") from None
    else:
        return NewKey(path, str(identity.to_public()), carry.key_id if carry else None)
    try:
        existing = parse_key_file(path.read_text(encoding="ascii"), path)
    except (OSError, UnicodeDecodeError, BackupError):
        existing = None
    if existing is None or existing.public_keys or existing.legacy is None:
        raise BackupError(f"{path} already exists; keygen never replaces a key (the backups made with it need it). "
                          "Move it away first, or name another file with --output")
    temporary = path.with_name(f".{path.name}.new")
    try:
        temporary.unlink(missing_ok=True)
        _write_private(temporary, _key_text(identity, existing.legacy))
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise BackupError(f"cannot add an age identity to {path}: {exc.strerror}. Where it cannot change (a Docker "
                          "secret), write a new key file with `singularity-ops backup keygen --output FILE` (it "
                          "carries the old key along) and point SINGULARITY_BACKUP_KEY_FILE at it") from None
    log.info("added an age identity to %s; the old key (key id %s) stays in it", path, existing.legacy.key_id)
    return NewKey(path, str(identity.to_public()), existing.legacy.key_id)
