-- The dashboard's intent search pages newest first with keyset paging, so each way it
-- narrows intents is an index ordered by (created_at, id): all intents, one member's
-- (replacing intents_member, whose lookups by member_id the new index serves as well), one
-- address's that no member had when it was sent (only those intents store the address), and
-- one campaign label's. Tags, channel and status are checked on at most a bounded window
-- of the rows these indexes give (router/ui/intent_reads.py), so they need none.
CREATE INDEX intents_created ON intents (created_at, id);
CREATE INDEX intents_member_created ON intents (member_id, created_at, id);
DROP INDEX IF EXISTS intents_member;  -- another migration may have replaced it already
CREATE INDEX intents_address_created ON intents (lower(email_address), created_at, id)
    WHERE email_address IS NOT NULL;
CREATE INDEX intents_campaign_created ON intents (campaign, created_at, id)
    WHERE campaign IS NOT NULL;
