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
