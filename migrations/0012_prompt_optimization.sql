-- Managed system prompts, their dialogues, candidates and A/B experiments (docs/PROMPT_OPTIMIZATION.md).
-- The gateway writes prompts (what it saw), prompt_dialogues (enabled prompts only) and their outcomes; the
-- prompt-optimizer controller and `singularity-ops prompts` write candidates, experiments and the log. A prompt's
-- text is kept only once it is enabled; before, only its hash and (unless turned off) a short preview.

CREATE TABLE prompts (
    id               text PRIMARY KEY,              -- sha256 of the system prompt exactly as clients send it
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    request_count    bigint NOT NULL DEFAULT 0,
    models           text[] NOT NULL DEFAULT '{}',  -- the models it was sent to (at most 32)
    preview          text,                          -- its first prompt_optimizer.preview_chars characters, or NULL
    name             text UNIQUE,                   -- the operator's name: the `prompt` label of the metrics
    enabled          boolean NOT NULL DEFAULT false,
    enabled_at       timestamptz,
    original_text    text,                          -- written by the gateway at its first sight once enabled
    live_candidate   bigint,                        -- the promoted candidate served to everyone; NULL: the original
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT enabled OR name IS NOT NULL)
);

CREATE TABLE prompt_candidates (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prompt_id        text NOT NULL REFERENCES prompts (id) ON DELETE CASCADE,
    parent_id        bigint REFERENCES prompt_candidates (id),  -- NULL: made from the original text
    created_at       timestamptz NOT NULL,
    text             text NOT NULL,
    optimizer_model  text,                          -- NULL: written by hand
    offline_score    double precision,              -- mean judge score 0..10 of its replayed answers
    baseline_score   double precision,              -- the same for the prompt it was compared with
    evaluation       jsonb NOT NULL DEFAULT '[]',   -- per replayed turn: question, answers, judge prompt and reply
    status           text NOT NULL DEFAULT 'proposed'
                     CHECK (status IN ('proposed', 'testing', 'winner', 'promoted', 'rejected', 'rolled_back'))
);
CREATE INDEX prompt_candidates_prompt_idx ON prompt_candidates (prompt_id, created_at DESC);
ALTER TABLE prompts ADD FOREIGN KEY (live_candidate) REFERENCES prompt_candidates (id) ON DELETE SET NULL;

CREATE TABLE prompt_experiments (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prompt_id          text NOT NULL REFERENCES prompts (id) ON DELETE CASCADE,
    candidate_id       bigint NOT NULL REFERENCES prompt_candidates (id) ON DELETE CASCADE,
    control_candidate  bigint REFERENCES prompt_candidates (id) ON DELETE SET NULL,  -- NULL: the original
    share              double precision NOT NULL CHECK (share > 0 AND share <= 1),
    state              text NOT NULL DEFAULT 'running'
                       CHECK (state IN ('running', 'awaiting_approval', 'promoted', 'rolled_back', 'stopped')),
    started_at         timestamptz NOT NULL,
    started_by         text NOT NULL,
    decided_at         timestamptz,
    stopped_at         timestamptz,
    decision           text CHECK (decision IN ('promote', 'roll_back', 'timeout', 'stopped')),
    reason             text,
    statistic          double precision,            -- log of the mixture likelihood ratio at the last look
    threshold          double precision,            -- log(1 / alpha)
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- At most one experiment per prompt that is running or waiting for approval.
CREATE UNIQUE INDEX prompt_experiments_one_open_idx ON prompt_experiments (prompt_id)
    WHERE state IN ('running', 'awaiting_approval');

CREATE TABLE prompt_dialogues (
    request_id       uuid PRIMARY KEY,              -- the X-Request-Id the response carried
    prompt_id        text NOT NULL REFERENCES prompts (id) ON DELETE CASCADE,
    at               timestamptz NOT NULL,
    client_hash      text,                          -- sha256 of the API key id or address
    model            text NOT NULL,
    endpoint         text NOT NULL,
    messages         jsonb NOT NULL,                -- as the client sent them (its own system message)
    answer           text,
    latency_seconds  double precision,
    status           integer NOT NULL,
    experiment_id    bigint REFERENCES prompt_experiments (id) ON DELETE SET NULL,
    variant          text CHECK (variant IN ('control', 'candidate')),
    served_candidate bigint,                        -- the candidate whose text went upstream; NULL: the original
    outcome          text NOT NULL DEFAULT 'unknown'
                     CHECK (outcome IN ('success', 'weak_success', 'failure', 'unknown')),
    outcome_reason   text,                          -- feedback, error, empty, regenerate, continued
    rating           double precision,              -- explicit feedback on 0..1
    settled_at       timestamptz
);
CREATE INDEX prompt_dialogues_prompt_at_idx ON prompt_dialogues (prompt_id, at DESC);
CREATE INDEX prompt_dialogues_experiment_idx ON prompt_dialogues (experiment_id, variant, outcome)
    WHERE experiment_id IS NOT NULL;

-- Every step, for the operator to read back: who or what did it, and the figures it was based on.
CREATE TABLE prompt_optimization_logs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    prompt_id      text NOT NULL,                  -- no foreign key: the log outlives what it speaks of
    experiment_id  bigint,
    candidate_id   bigint,
    event          text NOT NULL CHECK (event IN (
                       'enabled', 'disabled', 'optimization', 'candidate_created', 'experiment_started',
                       'share_changed', 'counts', 'decision', 'approval', 'promoted', 'experiment_stopped',
                       'rolled_back')),
    actor          text NOT NULL,                  -- 'prompt-optimizer', 'auto', or 'cli:<user>'
    details        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX prompt_optimization_logs_prompt_idx ON prompt_optimization_logs (prompt_id, at);
