-- The gateway keeps an in-process index of cache_entries in front of this table (docs/PREDICTIVE_CACHE_WARMING.md,
-- "Storage"): every insert and every replacement of an entry takes the next revision, so each gateway reads only
-- the entries written since the last it saw, its own and other replicas'.

CREATE SEQUENCE cache_entries_revision_seq;
ALTER TABLE cache_entries ADD COLUMN revision bigint NOT NULL DEFAULT nextval('cache_entries_revision_seq');
ALTER SEQUENCE cache_entries_revision_seq OWNED BY cache_entries.revision;
CREATE INDEX cache_entries_revision_idx ON cache_entries (revision);
