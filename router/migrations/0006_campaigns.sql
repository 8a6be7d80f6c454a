-- Campaigns: one intent per distinct member in (union of audiences) minus (union of
-- exclusions), created in member-id order in chunks. `cursor` is the last member fanned out,
-- so a fan-out interrupted by a crash resumes where it stopped (intents carry the key
-- campaign:<id>:<member>, so a chunk redone after a crash adds nothing twice).
CREATE TABLE campaigns (
    id                    uuid PRIMARY KEY,
    name                  text,
    audience_ids          uuid[] NOT NULL,
    exclude_audience_ids  uuid[] NOT NULL DEFAULT '{}',
    template              jsonb NOT NULL,     -- the intent every member gets
    idempotency_key       text UNIQUE,
    request_sha256        bytea NOT NULL,
    status                text NOT NULL CHECK (status IN ('fanning_out', 'sending', 'cancelled')),
    cursor_member_id      text,
    targeted              integer NOT NULL DEFAULT 0,
    accepted              integer NOT NULL DEFAULT 0,
    rejected              integer NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaigns_fanning_out ON campaigns (created_at) WHERE status = 'fanning_out';

ALTER TABLE intents ADD COLUMN campaign_id uuid REFERENCES campaigns (id) ON DELETE CASCADE;
CREATE INDEX intents_campaign_id ON intents (campaign_id) WHERE campaign_id IS NOT NULL;
