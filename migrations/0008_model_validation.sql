-- Cross-model validation (docs/MODEL_VALIDATION.md): runs of a suite, one row per run × model, one per case.
-- The validator demotes and promotes through model_status (0004); the gateway's routing and the
-- singularity_model_quality_score metrics read the latest row of each model from a run that finished.

CREATE TABLE validation_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    trigger      text NOT NULL CHECK (trigger IN ('manual', 'schedule', 'digest')),
    suite_name   text NOT NULL,
    suite_hash   text NOT NULL,                 -- sha256 of the suite's content (docs/MODEL_VALIDATION.md)
    status       text NOT NULL CHECK (status IN ('running', 'ok', 'failed')),
    demote       boolean NOT NULL,              -- false: --no-demote, the run only reported
    error        text                           -- why the run failed (Ollama went away, ...)
);
CREATE INDEX validation_runs_started_idx ON validation_runs (started_at);

CREATE TABLE model_validation_results (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id               bigint NOT NULL REFERENCES validation_runs (id) ON DELETE CASCADE,
    at                   timestamptz NOT NULL,  -- when the model's last case finished
    model                text NOT NULL,
    model_digest         text,
    suite_hash           text NOT NULL,
    status               text NOT NULL CHECK (status IN ('ok', 'demoted', 'promoted', 'skipped', 'failed')),
    accuracy             double precision,      -- weighted share of passed cases, 0..1
    cases                integer NOT NULL DEFAULT 0,
    passed               integer NOT NULL DEFAULT 0,
    latency_p50_seconds  double precision,
    latency_p95_seconds  double precision,
    tokens_per_second    double precision,
    quality_score        double precision,      -- 0..1, the documented formula
    reason               text NOT NULL DEFAULT ''
);
CREATE INDEX model_validation_results_model_at_idx ON model_validation_results (model, at DESC);

CREATE TABLE model_validation_cases (
    result_id        bigint NOT NULL REFERENCES model_validation_results (id) ON DELETE CASCADE,
    case_id          text NOT NULL,
    passed           boolean NOT NULL,
    weight           double precision NOT NULL,
    latency_seconds  double precision,
    output_tokens    integer,
    answer_excerpt   text,                      -- the first validator.answer_excerpt_chars characters
    verdicts         jsonb NOT NULL,            -- [{scorer, passed, detail, ...}]; judge prompt and answer included
    error            text,
    PRIMARY KEY (result_id, case_id)
);
