"""``Backups``: the one object the CLI and the controller use: create, list, find, verify, restore, prune.

Each job lives in its own module and ``Backups`` joins them: catalogue.py (records, list, find, the lock,
sidecars), create.py, verify.py, restore.py, retention.py (prune). A backup is one age file ``<id>.tar.gz.age``
(encryption.py, keys.py) around a gzip-compressed tar (tarball.py) of archive.py's members: the pg_dump in parts,
the config file, ``backup.include``, the manifest; with a sidecar ``<id>.manifest.json`` beside it, and a row in
the ``backups`` table. Backups from before the age format (``<id>.sgbk``, sgbk.py) are still read.
"""

from __future__ import annotations

from singularity_ops.controllers.backup.create import Creating
from singularity_ops.controllers.backup.restore import Restoring
from singularity_ops.controllers.backup.retention import Retention


class Backups(Creating, Restoring, Retention):
    """The backup operations over one configuration. ``database`` is the history database: the catalogue lives
    there and it is what is backed up; ``None`` where it is gone (then list and restore read the sidecars)."""
