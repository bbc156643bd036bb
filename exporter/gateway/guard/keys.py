"""Client API keys: the keys file (``gateway.api_keys_file``), hashed, each key with its scopes.

One key a line, ``#`` starts a comment; a line may end in ``scopes=`` (no field: ``inference`` only, the format
before scopes existed)::

    # id         sha256 of the key (hex)                      scopes
    open-webui   sha256:4c2a9c4b0c0d…64 hex digits
    ops          sha256:9f86d081884c…                          scopes=inference,admin

Scopes: ``inference`` (generate, chat, embeddings, the OpenAI routes, model listing: every path that is not an
admin route) and ``admin`` (pulling, pushing, creating, copying and deleting models, blob uploads). Make a key with
``singularity-ops keys add ID [--scope admin]``: it prints the key once and appends its hash here. Only the hash is
stored: keys are long random tokens, so one SHA-256 is enough (a slow password hash protects guessable passwords and
would cost milliseconds on every request). Clients send the key as ``Authorization: Bearer KEY`` (OpenAI SDKs'
``api_key``, the ollama clients' ``headers=``) or ``X-API-Key: KEY``.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from singularity_ops.errors import ConfigError

INFERENCE = "inference"
ADMIN = "admin"
SCOPES = (INFERENCE, ADMIN)

KEY_ID = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")
_LINE = re.compile(r"^([A-Za-z0-9_.@:-]{1,64})\s+sha256:([0-9a-fA-F]{64})(?:\s+scopes=(\S+))?$")
_FORMAT = ("expected 'ID sha256:<64 hex digits>', optionally followed by 'scopes=inference,admin' "
           "(docs/ANOMALY_DETECTION.md#api-keys)")


@dataclass(frozen=True)
class Key:
    """One line of the keys file: who, what the key may do, and the key's hash (never the key)."""

    id: str
    scopes: frozenset[str]
    digest: str

    @property
    def admin(self) -> bool:
        return ADMIN in self.scopes

    def __repr__(self) -> str:  # the hash is not the key, but neither belongs in a log
        return f"Key({self.id!r}, scopes={sorted(self.scopes)})"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(value: str) -> frozenset[str]:
    scopes = frozenset(filter(None, (part.strip() for part in value.split(","))))
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"unknown scope {', '.join(unknown) or repr(value)}; scopes are {', '.join(SCOPES)}")
    return scopes


def key_line(key_id: str, digest: str, scopes: Iterable[str] = (INFERENCE,)) -> str:
    """The keys file's line; an inference-only key has no scopes field, as before scopes existed."""
    ordered = [scope for scope in SCOPES if scope in set(scopes)]
    return f"{key_id} sha256:{digest}" + ("" if ordered == [INFERENCE] else f" scopes={','.join(ordered)}")


def new_key_line(key_id: str, scopes: Iterable[str] = (INFERENCE,)) -> tuple[str, str]:
    """A fresh key for ``key_id`` and the line to put in the keys file for it."""
    key = "sk-" + secrets.token_urlsafe(32)
    return key, key_line(key_id, hash_key(key), scopes)


def read_keys(path: Path) -> list[Key]:
    """Every key of the file, in file order; a malformed line is a ConfigError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read gateway.api_keys_file {path}: {exc.strerror}") from None
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError(f"{path} line {number}: {_FORMAT}")
        try:
            scopes = parse_scopes(match[3]) if match[3] is not None else frozenset({INFERENCE})
        except ValueError as exc:
            raise ConfigError(f"{path} line {number}: {exc}") from None
        keys.append(Key(match[1], scopes, match[2].lower()))
    return keys


@dataclass(frozen=True)
class ApiKeys:
    """Key hashes to keys, read from the keys file; ``changed()`` tells when the file was rewritten."""

    path: Path
    by_hash: Mapping[str, Key]
    stamp: tuple[int, int]

    @classmethod
    def load(cls, path: Path) -> ApiKeys:
        try:
            stat = path.stat()
        except OSError as exc:
            raise ConfigError(f"cannot read gateway.api_keys_file {path}: {exc.strerror}") from None
        return cls(path, {key.digest: key for key in read_keys(path)}, (stat.st_mtime_ns, stat.st_size))

    def changed(self) -> bool:
        try:
            stat = os.stat(self.path)
        except OSError:
            return False  # keep the keys we have; a file being replaced comes back
        return (stat.st_mtime_ns, stat.st_size) != self.stamp

    def identify(self, key: str | None) -> Key | None:
        """The key's line, or None for a missing or unknown key."""
        if not key:
            return None
        return self.by_hash.get(hash_key(key))


# --- editing the file (``singularity-ops keys``) ---------------------------------------------------------------


def add_key(path: Path, key_id: str, scopes: Iterable[str]) -> tuple[str, Key]:
    """A new key appended to the file (made 0600 if it is new); the key itself is returned, never stored."""
    if not KEY_ID.fullmatch(key_id):
        raise ConfigError(f"key id {key_id!r}: use 1–64 letters, digits and . _ @ : -")
    existing = read_keys(path) if path.exists() else []
    if any(key.id == key_id for key in existing):
        raise ConfigError(f"{path} already has a key {key_id!r}; revoke it first or choose another id")
    key, line = new_key_line(key_id, scopes)
    path.parent.mkdir(parents=True, exist_ok=True)
    unterminated = bool(existing) and not path.read_bytes().endswith(b"\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(("\n" if unterminated else "") + line + "\n")
    return key, Key(key_id, frozenset(scopes), hash_key(key))


def _line_id(line: str) -> str | None:
    match = _LINE.match(line.split("#", 1)[0].strip())
    return match[1] if match else None


def revoke_key(path: Path, key_id: str) -> int:
    """Remove every line of ``key_id`` (comments and other keys stay); the number removed. The file is replaced in
    one rename, so a gateway re-reading it sees the old file or the new one, never half of one."""
    read_keys(path)  # a malformed file is refused before anything changes
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if _line_id(line) != key_id]
    removed = len(lines) - len(kept)
    if removed:
        mode = path.stat().st_mode & 0o777
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.writelines(kept)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return removed
