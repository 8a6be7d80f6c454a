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
