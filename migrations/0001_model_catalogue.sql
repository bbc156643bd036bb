-- The installed-model catalogue as the exporter last saw it in Ollama's /api/tags and /api/show.
-- Controllers (model manager, validator) read it to know what exists and what each model needs,
-- and when a model first appeared, without asking Ollama for every model on every tick.
CREATE TABLE models (
    name                text PRIMARY KEY,
    digest              text NOT NULL,
    size_bytes          bigint NOT NULL CHECK (size_bytes >= 0),
    family              text,
    parameter_size      text,
    quantization_level  text,
    context_length      integer,
    required_bytes      bigint,
    first_seen          timestamptz NOT NULL DEFAULT now(),
    last_seen           timestamptz NOT NULL DEFAULT now(),
    removed_at          timestamptz
);

CREATE INDEX models_last_seen_idx ON models (last_seen);
