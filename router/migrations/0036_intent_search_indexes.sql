-- The dashboard's intent search pages newest first with keyset paging on the intent id,
-- which is time-ordered: all intents walk the primary key, one member's walk
-- intents_member_recent (member_id, id). Two more ways it narrows intents get an index in the
-- same order: one address's intents that no member had when it was sent (only those store
-- the address), and one campaign label's. Tags, channel and status are checked on at most a
-- bounded window of the rows these give (router/ui/intent_reads.py), so they need none.
CREATE INDEX intents_address_recent ON intents (lower(email_address), id)
    WHERE email_address IS NOT NULL;
CREATE INDEX intents_campaign_recent ON intents (campaign, id)
    WHERE campaign IS NOT NULL;
