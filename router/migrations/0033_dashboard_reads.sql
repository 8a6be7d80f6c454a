-- What the dashboard's member page reads, by index.

-- A member's intents newest first, keyset-paged by the time-ordered id. It replaces
-- intents_member (member_id), which erasure used: the same look-up by member_id serves both,
-- so an intent costs no more index entries than before.
CREATE INDEX intents_member_recent ON intents (member_id, id);
DROP INDEX intents_member;

-- How a member's LINE link was made: the account-link nonce they redeemed, if any.
CREATE INDEX line_link_nonces_redeemed ON line_link_nonces (member_id, used_at)
    WHERE used_at IS NOT NULL;
