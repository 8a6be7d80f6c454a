-- An upload inserts up to 1.5 million entries in one statement. The foreign key to audiences
-- checked each of them with its own look-up of the same audience row, over a third of the
-- insert's time. The upload holds its audience (created in its own transaction, or locked
-- FOR UPDATE) while it inserts, so an entry never names a missing audience; the cascade is
-- kept by one statement-level trigger: deleting audiences deletes their entries in the same
-- statement, after waiting for an upload in progress (its row lock) and seeing its entries.
ALTER TABLE audience_entries DROP CONSTRAINT audience_entries_audience_id_fkey;

CREATE FUNCTION audience_entries_follow_audiences() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM audience_entries e USING gone_audiences g WHERE e.audience_id = g.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER audiences_delete_entries
    AFTER DELETE ON audiences
    REFERENCING OLD TABLE AS gone_audiences
    FOR EACH STATEMENT EXECUTE FUNCTION audience_entries_follow_audiences();

-- A LINE audience sync goes page by page, each page its own short transaction. Between pages
-- the sync is held by a lease (holder and expiry, renewed as it goes) instead of a transaction,
-- and the last LINE user ID LINE accepted is kept, so a sync that stopped (crash, LINE
-- refusal) resumes after it instead of starting again. Both are NULL when no sync is unfinished.
ALTER TABLE audiences
    ADD COLUMN line_sync_holder       uuid,
    ADD COLUMN line_sync_lease_until  timestamptz,
    ADD COLUMN line_sync_after        text,    -- the last LINE user ID LINE accepted
    ADD COLUMN line_sync_sent         bigint;  -- IDs LINE accepted in the unfinished sync

-- The follower sync reads LINE's follower list a page at a time into line_follower_sync_ids,
-- then corrects friend flags a chunk of LINE user IDs at a time: every page and chunk is its
-- own short transaction that also records how far the sync got, so a sync that stopped is
-- resumed there. One sync at a time (one row), held by a lease while it runs.
CREATE TABLE line_follower_syncs (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Webhook events newer than this keep precedence over what the list says.
    started_at       timestamptz NOT NULL,
    -- reading: the list; then one pass each over the followers, line_users and members.
    phase            text NOT NULL
                     CHECK (phase IN ('reading', 'followers', 'line_users', 'members')),
    next_page        text,    -- reading: LINE's token for the next page (NULL: the first)
    after_id         text,    -- the other phases: the last LINE user ID done (NULL: none)
    followers        bigint NOT NULL DEFAULT 0,
    members_changed  bigint NOT NULL DEFAULT 0,
    holder           uuid,
    lease_until      timestamptz
);
CREATE TABLE line_follower_sync_ids (line_user_id text PRIMARY KEY);
