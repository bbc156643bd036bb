-- The backup catalogue (docs/BACKUPS.md). Each backup file also carries a sidecar manifest beside it, so backups
-- can be listed and restored when this database is gone. The singularity_backup_* metrics are read from here.
CREATE TABLE backups (
    id           text PRIMARY KEY,                  -- 20250601T030000Z-daily-1a2b, also the file's name
    kind         text NOT NULL CHECK (kind IN ('daily', 'weekly', 'manual')),
    status       text NOT NULL CHECK (status IN ('running', 'ok', 'failed')),
    host         text NOT NULL,                     -- the machine whose disk holds the file
    started      timestamptz NOT NULL,
    finished     timestamptz,
    bytes        bigint,                            -- size of the encrypted file
    sha256       text,                              -- of the encrypted file
    path         text,                              -- where it was written
    verified_at  timestamptz,                       -- last successful restore into a scratch database
    error        text,                              -- why it failed (status failed)
    manifest     jsonb                              -- the sidecar manifest: contents, sizes, checksums, row counts
);
-- Failed rows are never deleted: singularity_backup_failures_total counts them.
CREATE INDEX backups_kind_started_idx ON backups (kind, started DESC);
