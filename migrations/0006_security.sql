-- The gateway's threat detector (docs/ANOMALY_DETECTION.md): what it detected, and whom it banned.
-- Client ids (an API key's id or an address) are kept here and in the logs, never in metric labels.

CREATE TABLE security_events (
    id           uuid PRIMARY KEY,              -- made by the gateway: a retried batch inserts once
    at           timestamptz NOT NULL,
    client       text NOT NULL,                 -- key id or address; '*' for the global spike detector
    kind         text NOT NULL CHECK (kind IN ('rate', 'spike', 'brute_force', 'repeat', 'injection')),
    action       text NOT NULL CHECK (action IN ('flag', 'throttle', 'block', 'ban')),
    score        double precision,              -- injection score 0..1, spike z-score, repeats or failures seen
    reason       text,                          -- what was detected, in words
    prompt_hash  text,                          -- sha256 as in requests.prompt_hash, to join the two
    excerpt      text                           -- a short redacted excerpt around the match; NULL without text
);
CREATE INDEX security_events_at_idx ON security_events (at);
CREATE INDEX security_events_client_at_idx ON security_events (client, at);

-- One row per ban. A ban is active while lifted_at IS NULL AND until > now(): it expires by itself, and
-- `singularity-ops security bans unban CLIENT` lifts it early. Strikes count this client's earlier bans that
-- ended within guard.brute_force.recidive_seconds (lifted ones do not count): each one multiplies the bantime.
CREATE TABLE security_bans (
    id         uuid PRIMARY KEY,
    client     text NOT NULL,
    kind       text NOT NULL,                   -- the detector that banned it (brute_force)
    reason     text NOT NULL,
    at         timestamptz NOT NULL,            -- banned at
    until      timestamptz NOT NULL,
    strikes    integer NOT NULL CHECK (strikes >= 1),
    lifted_at  timestamptz,
    lifted_by  text
);
CREATE INDEX security_bans_client_until_idx ON security_bans (client, until DESC) WHERE lifted_at IS NULL;
CREATE INDEX security_bans_until_idx ON security_bans (until);
