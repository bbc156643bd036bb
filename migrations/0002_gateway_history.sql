-- The metering gateway's history: one row per request, per-minute rollups per model, breaker transitions.

CREATE TABLE requests (
    id                  uuid PRIMARY KEY,               -- made by the gateway: a retried batch inserts once
    at                  timestamptz NOT NULL,           -- when the gateway received the request
    model               text NOT NULL,                  -- installed model name, or 'other'
    endpoint            text NOT NULL,                  -- e.g. /api/chat, /v1/chat/completions
    status              integer NOT NULL,               -- HTTP status answered to the client
    client_hash         text,                           -- sha256 of the client id, never the id itself
    input_tokens        integer,
    output_tokens       integer,
    ttft_seconds        double precision,               -- received -> first chunk with content
    duration_seconds    double precision NOT NULL,      -- received -> last byte sent
    tokens_per_second   double precision,               -- eval_count / eval_duration
    cost                double precision,
    currency            text,
    energy_joules       double precision,
    compression_ratio   double precision,               -- original / sent tokens; 1 when nothing was cut
    cache_hit           boolean NOT NULL DEFAULT false,
    prompt_hash         text,                           -- sha256 of the normalised prompt / messages
    prompt_text         text,                           -- NULL when history.store_text is false
    response_text       text,
    error               text
);
CREATE INDEX requests_at_idx ON requests (at);
CREATE INDEX requests_model_at_idx ON requests (model, at);

-- The seed's real-time metrics: one row per model per minute.
CREATE TABLE real_time_metrics (
    minute                  timestamptz NOT NULL,
    model                   text NOT NULL,
    requests                integer NOT NULL,
    tokens_per_second       double precision,
    cost_per_response       double precision,
    currency                text,
    cpu_temperature_celsius double precision,
    gpu_temperature_celsius double precision,
    compression_ratio       double precision,
    PRIMARY KEY (minute, model)
);

CREATE TABLE circuit_breaker_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL,
    breaker       text NOT NULL,
    from_state    text NOT NULL CHECK (from_state IN ('closed', 'open', 'half_open')),
    to_state      text NOT NULL CHECK (to_state IN ('closed', 'open', 'half_open')),
    reason        text NOT NULL,
    failure_rate  double precision,
    window_calls  integer
);
CREATE INDEX circuit_breaker_events_at_idx ON circuit_breaker_events (at);
