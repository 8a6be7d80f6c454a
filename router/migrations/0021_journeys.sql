-- Journeys as defined (config/journeys/*.toml or PUT /v1/journeys/{id}). A definition is never
-- changed in place: an edit adds a version, and a run keeps the version it entered with.
CREATE TABLE journeys (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    version     integer NOT NULL,               -- the version new runs enter
    source      text NOT NULL,                  -- 'api', or the file it was loaded from
    paused      boolean NOT NULL DEFAULT false, -- no new runs, no steps fire; timers keep
    deleted_at  timestamptz,                    -- deleted: its runs ended, its id kept
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE journey_versions (
    journey_id  text NOT NULL REFERENCES journeys (id) ON DELETE CASCADE,
    version     integer NOT NULL,
    definition  jsonb NOT NULL,                 -- router.journeys.definition.Journey, validated
    fingerprint bytea NOT NULL,                 -- SHA-256 of the canonical definition
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (journey_id, version)
);
