-- A content carrying a message received by the SMTP relay names it in its JSON
-- (`relayed.message_sha256`, hex). The same reference as a column with a foreign key: a
-- relayed message cannot be deleted while a content names it, and "does any content still
-- name this message?" is one index lookup (member erasure and the retention sweep ask it).
ALTER TABLE contents ADD COLUMN relayed_message_id bytea
    GENERATED ALWAYS AS (decode(body -> 'relayed' ->> 'message_sha256', 'hex')) STORED
    REFERENCES relayed_messages (id);
CREATE INDEX contents_relayed_message ON contents (relayed_message_id)
    WHERE relayed_message_id IS NOT NULL;
