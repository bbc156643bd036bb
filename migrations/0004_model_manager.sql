-- The model manager's decisions and the demotion hook it honours (docs/AUTO_MODEL_MANAGEMENT.md).

-- One row per decision: a profile switch, a load, an unload, a keep-alive refresh, a model skipped (with the
-- numbers when memory was the reason). singularity_model_manager_actions_total counts these rows.
CREATE TABLE model_manager_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at               timestamptz NOT NULL,
    profile          text,                            -- active profile, NULL outside every profile
    action           text NOT NULL CHECK (action IN ('profile', 'load', 'unload', 'refresh', 'skip')),
    model            text,                            -- NULL for a profile switch
    result           text NOT NULL,                   -- ok, error, refused (by Ollama), memory, demoted, ...
    reason           text NOT NULL,
    need_bytes       bigint,                          -- estimated need of the model (docs/MEMORY.md)
    available_bytes  bigint                           -- what could be made available for it
);
CREATE INDEX model_manager_events_at_idx ON model_manager_events (at);

-- Models the manager must not preload. Written by hand (singularity-ops models demote/promote) and later by
-- the validator; a model without a row is active.
CREATE TABLE model_status (
    model   text PRIMARY KEY,
    status  text NOT NULL CHECK (status IN ('active', 'demoted')),
    reason  text NOT NULL DEFAULT '',
    since   timestamptz NOT NULL DEFAULT now()
);

-- What the acting manager wants now, for singularity_model_desired and singularity_model_manager_profile
-- whichever process serves /metrics. One row.
CREATE TABLE model_manager_state (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    at         timestamptz NOT NULL,
    profile    text,
    desired    text[] NOT NULL,
    installed  text[] NOT NULL
);
