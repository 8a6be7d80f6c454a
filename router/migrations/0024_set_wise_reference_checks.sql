-- The foreign keys intents -> members, intents -> contents and deliveries -> intents checked
-- every inserted row with a look-up of its own that also locked the row it found (FOR KEY
-- SHARE, a write to that row): about half of a 10,000-intent insert's time, most of it the
-- locks. They become statement-level triggers over the statement's new rows that check all of
-- them with one anti-join each, lock nothing per row, and refuse the statement with the
-- foreign key's error code (23503, foreign_key_violation), naming the first missing reference.
--
-- What the row locks did, keeping a member (content, intent) from being deleted between the
-- check and the commit of rows naming it, is done by one lock for all of them: inserting
-- transactions hold the reference fence shared (pg_advisory_xact_lock_shared, one per
-- statement, in memory), deleting ones hold it exclusively from their cascade on. So a delete
-- waits for the inserts in progress to commit, and then its cascade (a statement of its own,
-- with a fresh snapshot) sees and deletes their rows; an insert that comes while a delete is
-- in progress waits for it, and its check then sees the row gone. Deletes are rare (member
-- erasure); inserts never wait for each other.
--
-- The deletes the keys cascaded are statement-level triggers too: deleting members deletes
-- their intents, deleting intents deletes their deliveries (and, by their own foreign key,
-- their delivery events), each in the deleting statement; deleting a content an intent still
-- names is refused. Nothing updates intents.member_id, intents.content_id,
-- deliveries.intent_id, members.member_id, contents.id or intents.id, so only inserts and
-- deletes are checked.
ALTER TABLE intents DROP CONSTRAINT intents_member_id_fkey;
ALTER TABLE intents DROP CONSTRAINT intents_content_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_intent_id_fkey;

-- The fence's key, in the two-key space no other lock of the router's uses.
CREATE FUNCTION reference_fence_key() RETURNS integer LANGUAGE sql IMMUTABLE
    RETURN 260001;

CREATE FUNCTION intents_check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(reference_fence_key(), 0);
    SELECT n.member_id INTO missing FROM new_intents n
    WHERE n.member_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM members m WHERE m.member_id = n.member_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'an intent names a member that does not exist',
            DETAIL = format('member_id %s is not in members', missing),
            TABLE = 'intents', COLUMN = 'member_id';
    END IF;
    SELECT encode(n.content_id, 'hex') INTO missing
    FROM (SELECT DISTINCT content_id FROM new_intents) n
    WHERE NOT EXISTS (SELECT 1 FROM contents c WHERE c.id = n.content_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'an intent names a content that does not exist',
            DETAIL = format('content_id %s is not in contents', missing),
            TABLE = 'intents', COLUMN = 'content_id';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER intents_references AFTER INSERT ON intents
    REFERENCING NEW TABLE AS new_intents
    FOR EACH STATEMENT EXECUTE FUNCTION intents_check_references();

CREATE FUNCTION deliveries_check_intents() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(reference_fence_key(), 0);
    SELECT n.intent_id INTO missing FROM new_deliveries n
    WHERE NOT EXISTS (SELECT 1 FROM intents i WHERE i.id = n.intent_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'a delivery names an intent that does not exist',
            DETAIL = format('intent_id %s is not in intents', missing),
            TABLE = 'deliveries', COLUMN = 'intent_id';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_references AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_check_intents();

CREATE FUNCTION intents_follow_members() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(reference_fence_key(), 0);
    DELETE FROM intents i USING gone_members g WHERE i.member_id = g.member_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER members_delete_intents AFTER DELETE ON members
    REFERENCING OLD TABLE AS gone_members
    FOR EACH STATEMENT EXECUTE FUNCTION intents_follow_members();

CREATE FUNCTION deliveries_follow_intents() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(reference_fence_key(), 0);
    DELETE FROM deliveries d USING gone_intents g WHERE d.intent_id = g.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER intents_delete_deliveries AFTER DELETE ON intents
    REFERENCING OLD TABLE AS gone_intents
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_follow_intents();

CREATE FUNCTION contents_keep_named() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    named text;
BEGIN
    PERFORM pg_advisory_xact_lock(reference_fence_key(), 0);
    SELECT encode(g.id, 'hex') INTO named FROM gone_contents g
    WHERE EXISTS (SELECT 1 FROM intents i WHERE i.content_id = g.id)
    LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'a content an intent names cannot be deleted',
            DETAIL = format('content_id %s is still named by intents', named),
            TABLE = 'intents', COLUMN = 'content_id';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER contents_delete_named AFTER DELETE ON contents
    REFERENCING OLD TABLE AS gone_contents
    FOR EACH STATEMENT EXECUTE FUNCTION contents_keep_named();
