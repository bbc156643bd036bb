-- The gateway's semantic cache and the predictive warmer (docs/PREDICTIVE_CACHE_WARMING.md).
-- Nothing here needs pgvector: embeddings are real[]; the cache itself, when enabled, creates the extension and
-- one HNSW index per embedding dimension over (embedding::vector(N)), so a server without pgvector still migrates
-- and the gateway serves without the cache, saying which extension is missing.

CREATE TABLE cache_entries (
    key              text PRIMARY KEY,            -- sha256 of tenant + everything that shapes the answer
    scope            text NOT NULL,               -- the same less the last user turn: semantic matches stay inside
    tenant           text NOT NULL DEFAULT '',    -- hash of the API key id or address; '' when cache.shared
    model            text NOT NULL,
    digest           text NOT NULL,               -- the model's digest when the answer was made
    kind             text NOT NULL CHECK (kind IN ('generate', 'chat')),
    prompt           text NOT NULL,               -- the last user turn, what semantic matching compares
    embedding        real[],                      -- its embedding; NULL: exact matches only
    dims             integer,
    answer           jsonb NOT NULL,              -- text, thinking, tool calls, done reason, token counts
    origin           text NOT NULL DEFAULT 'user' CHECK (origin IN ('user', 'warmer')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    hits             bigint NOT NULL DEFAULT 0,
    last_used_at     timestamptz NOT NULL DEFAULT now(),
    upstream_seconds double precision NOT NULL DEFAULT 0  -- what making the answer took: a hit saves it
);
CREATE INDEX cache_entries_scope_idx ON cache_entries (scope, dims);
CREATE INDEX cache_entries_expires_idx ON cache_entries (expires_at);
CREATE INDEX cache_entries_model_idx ON cache_entries (model, digest);
CREATE INDEX cache_entries_lru_idx ON cache_entries (last_used_at);

-- What the warmer learns from: one row per cacheable request, written while the cache is enabled and kept
-- cache.warmer.history_days. The material is the request reduced to what shapes the answer (no client data).
CREATE TABLE cache_requests (
    at        timestamptz NOT NULL,
    model     text NOT NULL,
    key       text NOT NULL,
    tenant    text NOT NULL DEFAULT '',
    material  jsonb NOT NULL,
    result    text NOT NULL                       -- hit, semantic or miss
);
CREATE INDEX cache_requests_at_idx ON cache_requests (at);
CREATE INDEX cache_requests_key_at_idx ON cache_requests (key, at);

-- Every warm the warmer asked for and what became of it: queued by the cache-warmer controller, carried out by a
-- gateway when it is idle (or by `cache warm` at once), skipped with the reason.
CREATE TABLE cache_warms (
    id                bigserial PRIMARY KEY,
    enqueued_at       timestamptz NOT NULL DEFAULT now(),
    model             text NOT NULL,
    key               text NOT NULL,
    tenant            text NOT NULL DEFAULT '',
    prompt            text NOT NULL,
    material          jsonb NOT NULL,
    reason            text NOT NULL CHECK (reason IN ('history', 'calendar', 'manual')),
    detail            text,                       -- the calendar entry, or how the prediction was made
    expected_requests double precision NOT NULL,
    window_start      timestamptz NOT NULL,
    window_end        timestamptz NOT NULL,
    planned           boolean NOT NULL DEFAULT false,  -- not loaded when queued; the model manager's plan loads it
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'warmed', 'skipped', 'failed', 'expired')),
    outcome           text,                       -- why skipped or failed
    tokens            integer NOT NULL DEFAULT 0, -- prompt + answer tokens spent (the hourly budget)
    seconds           double precision,
    finished_at       timestamptz
);
CREATE UNIQUE INDEX cache_warms_queued_key_idx ON cache_warms (key) WHERE status = 'queued';
CREATE INDEX cache_warms_finished_idx ON cache_warms (finished_at);
