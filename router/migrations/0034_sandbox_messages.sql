-- What `router serve --sandbox` "sent": each LINE request the bundled simulator accepted and
-- each email the built-in SMTP capture received, one row per recipient, newest id first
-- (GET /v1/sandbox/messages, /ui/sandbox). Kept until cleared (DELETE /v1/sandbox/messages).
CREATE TABLE sandbox_messages (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel      text NOT NULL CHECK (channel IN ('line', 'line_notification', 'email')),
    -- push, multicast, narrowcast, reply, notification (LINE) or smtp (email)
    kind         text NOT NULL,
    captured_at  timestamptz NOT NULL DEFAULT now(),
    -- The member it went to, when known (a narrowcast names an audience, not members).
    member_id    text,
    -- LINE user ID, SHA-256 of a phone number (notification messages), email address, or
    -- NULL for a narrowcast.
    recipient    text,
    -- {"messages": [...]} as sent to LINE, or the email's headers, subject, text and html.
    content      jsonb NOT NULL
);
-- The filters of GET /v1/sandbox/messages, each walked newest first (keyset on id).
CREATE INDEX sandbox_messages_channel ON sandbox_messages (channel, id);
CREATE INDEX sandbox_messages_member ON sandbox_messages (member_id, id) WHERE member_id IS NOT NULL;
CREATE INDEX sandbox_messages_recipient ON sandbox_messages (recipient, id) WHERE recipient IS NOT NULL;
