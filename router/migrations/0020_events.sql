-- What members do, as the company reports it (POST /v1/events, the Shopify webhook): the
-- input journeys start, branch and stop on. An event belongs to one member and goes with them.
-- `handled_at` is set once the journeys have seen the event (entered or ended runs), so
-- they consume the table as a queue in arrival order (`seq`) and a crash re-reads the rest.
CREATE TABLE events (
    id              uuid PRIMARY KEY,          -- time-ordered (version 7)
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    member_id       text NOT NULL REFERENCES members (member_id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (name ~ '^[a-z0-9_.:-]{1,64}$'),
    properties      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    source          text NOT NULL DEFAULT 'api',   -- api | shopify
    idempotency_key text,
    fingerprint     bytea,                      -- SHA-256 of the request's canonical body
    handled_at      timestamptz
);
CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_member ON events (member_id, name, occurred_at);
CREATE INDEX events_unhandled ON events (seq) WHERE handled_at IS NULL;
