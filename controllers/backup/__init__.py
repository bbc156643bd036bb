"""Encrypted, verified backups: the whole backup engine and its controller.

A backup is a tar stream, gzip-compressed, in an age file: standard tools open it (docs/BACKUPS.md). ``archive``
(what the tar holds: the dump in parts, files, the manifest), ``tarball`` (the tar and gzip streams),
``encryption`` (age, through pyrage), ``keys`` (the age identity, extra recipients, the old key), ``sgbk`` (the
format before age, read only), ``errors``, ``pg`` (pg_dump/pg_restore), ``catalogue`` (records, list, find, the
lock, sidecars), ``create``, ``verify``, ``restore``, ``retention`` (prune), ``store`` (``Backups``, which joins
those five), ``notices`` (what an operator is told), ``controller`` (the cron schedule and retention).
"""
