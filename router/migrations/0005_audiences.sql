-- Audiences: segments uploaded as files of email addresses, phone numbers or LINE user IDs.
-- Only SHA-256 values of what was uploaded are kept (never the raw lines), so matching is a
-- join on the members' hash columns: email_sha256, phone_sha256, or for LINE user IDs the
-- SHA-256 of members.line_user_id computed in the query (LINE user IDs are hashed like the
-- rest, so an uploaded file leaves nothing readable behind).
CREATE TABLE audiences (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    type        text NOT NULL CHECK (type IN ('email', 'phone', 'line_user_id')),
    -- Totals over every upload into the audience.
    lines       bigint NOT NULL DEFAULT 0,
    valid       bigint NOT NULL DEFAULT 0,
    invalid     bigint NOT NULL DEFAULT 0,
    duplicates  bigint NOT NULL DEFAULT 0,
    -- The first 1,000 invalid lines of the latest upload as {line, reason}; reasons never
    -- quote the line.
    errors      jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audience_entries (
    audience_id   uuid NOT NULL REFERENCES audiences (id) ON DELETE CASCADE,
    value_sha256  bytea NOT NULL,
    PRIMARY KEY (audience_id, value_sha256)
);
