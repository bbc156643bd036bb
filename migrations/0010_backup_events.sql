-- What the backup engine must remember beyond the rows of `backups` (docs/BACKUPS.md).

-- One row per failed attempt: a backup that could not be made, was interrupted, or failed verification. These
-- rows are never deleted, and singularity_backup_failures_total counts them: the counter must not go down when a
-- backup that failed verification verifies again (its row goes back to ok) or when retention deletes its row.
CREATE TABLE backup_failures (
    at         timestamptz NOT NULL DEFAULT now(),
    kind       text NOT NULL CHECK (kind IN ('daily', 'weekly', 'manual')),
    backup_id  text NOT NULL,
    error      text
);
-- Until now the failed rows of `backups` were the count: carry them over, so the counter does not jump.
INSERT INTO backup_failures (at, kind, backup_id, error)
    SELECT coalesce(finished, started), kind, id, error FROM backups WHERE status = 'failed';
CREATE INDEX backup_failures_kind_idx ON backup_failures (kind);

-- What each backup controller found when it last looked for its key: the exporter, which may run in another process
-- or container, reads it for singularity_backup_configured.
CREATE TABLE backup_controllers (
    host        text PRIMARY KEY,
    configured  boolean NOT NULL,
    checked     timestamptz NOT NULL DEFAULT now()
);
