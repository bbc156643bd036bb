"""The two errors of the backup engine; each message says what happened and what to do."""

from __future__ import annotations

from singularity_ops.errors import SingularityError


class BackupError(SingularityError):
    """A backup could not be made, read, verified or restored; the message says why and what to do."""


class BackupCorrupt(BackupError):
    """The file is not the backup it claims to be: it fails authentication or its checksums."""
