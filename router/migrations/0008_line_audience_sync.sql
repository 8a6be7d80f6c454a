-- LINE audiences: `POST /v1/audiences/{id}/line-sync` uploads an audience's reachable LINE
-- friends to LINE's Audience API. LINE names the uploaded audience by its audienceGroupId,
-- recorded as soon as LINE answers the create request, so a sync cut short adds to the same
-- LINE audience next time instead of leaving a second one behind. LINE cannot remove a user
-- ID from an uploaded audience, so later syncs only add.
ALTER TABLE audiences
    ADD COLUMN line_audience_group_id  bigint,
    ADD COLUMN line_synced_at          timestamptz,  -- end of the last complete sync
    ADD COLUMN line_synced_ids         bigint;       -- LINE user IDs that sync uploaded

-- Matching a line_user_id audience hashes members.line_user_id in the query. The hash of
-- convert_to(line_user_id, 'UTF8') cannot be indexed (convert_to is only STABLE). A LINE user
-- ID is 'U' and 32 lower-case hex digits (router.identifiers), so its text cast to bytea is
-- the same bytes, and that cast is IMMUTABLE: the queries hash `line_user_id::bytea`.
CREATE INDEX members_line_user_id_sha256 ON members (sha256(line_user_id::bytea))
    WHERE line_user_id IS NOT NULL;
-- The planner ignores a partial index's own statistics; without these it takes every hash
-- for a common value and never chooses the index.
CREATE STATISTICS members_line_user_id_sha256_stats ON (sha256(line_user_id::bytea))
    FROM members;
ANALYZE members;
