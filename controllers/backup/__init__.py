"""Encrypted, verified backups: the whole backup engine and its controller.

``archive`` (the record container inside a backup), ``format`` (keys and the encrypted file format), ``pg``
(pg_dump/pg_restore), ``store`` (create, list, verify, restore, prune against the catalogue), ``notices`` (what an
operator is told), ``controller`` (the cron schedule and retention). docs/BACKUPS.md describes the format.
"""
