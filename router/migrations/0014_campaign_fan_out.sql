-- Campaigns fan out set-wise: the content is validated and stored once, when the campaign is
-- created, and each chunk of members becomes intents, send groups and deliveries in one
-- INSERT ... SELECT. A chunk that keeps failing the same way stops the campaign as 'failed'.
ALTER TABLE campaigns ADD COLUMN content_id bytea REFERENCES contents (id);
ALTER TABLE campaigns ADD COLUMN failed_chunks integer NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN last_error text;
ALTER TABLE campaigns DROP CONSTRAINT campaigns_status_check;
ALTER TABLE campaigns ADD CONSTRAINT campaigns_status_check
    CHECK (status IN ('fanning_out', 'sending', 'cancelled', 'failed'));

-- A member gets one intent per campaign: this index is the fan-out's idempotency (a chunk
-- redone after a crash, or by a second router, adds nothing twice) and what cancel looks
-- campaign intents up by. It replaces the campaign_id index, and campaign intents no longer
-- carry a text idempotency key, so they cost the intents_idempotency_key index nothing.
CREATE UNIQUE INDEX intents_campaign_member ON intents (campaign_id, member_id)
    WHERE campaign_id IS NOT NULL;
DROP INDEX intents_campaign_id;

-- A delivery names its campaign, so progress counters need no join (and still see the
-- campaign when erasure deletes the intent first).
ALTER TABLE deliveries ADD COLUMN campaign_id uuid;
UPDATE deliveries d SET campaign_id = i.campaign_id
FROM intents i WHERE i.id = d.intent_id AND i.campaign_id IS NOT NULL;

-- Campaigns are kept (nothing deletes one), so the foreign key from intents only cost a
-- lookup of the campaign row per fanned-out intent.
ALTER TABLE intents DROP CONSTRAINT intents_campaign_id_fkey;
