-- Delivery events for the sender's own systems (SendGrid Event Webhook format), written in
-- the transaction of the state change that causes them and posted from here in batches.

-- `id` orders events by when they were recorded; `event_id` is the public, unique sg_event_id.
-- `email` is fixed when the event is recorded (the address as it was then). Events go with
-- their intent when a member is erased. `delivery_id` is NULL only for a fallback that was
-- never created (dropped: no address, or opted out).
CREATE TABLE delivery_events (
    id               bigserial PRIMARY KEY,
    event_id         uuid NOT NULL DEFAULT gen_random_uuid(),
    event            text NOT NULL CHECK (event IN
                       ('processed', 'delivered', 'deferred', 'bounce', 'dropped')),
    intent_id        uuid NOT NULL REFERENCES intents (id) ON DELETE CASCADE,
    delivery_id      uuid,
    channel          text NOT NULL,
    email            text,
    reason           text,
    response         text,
    bounce_type      text,          -- 'bounce' (refused) or 'blocked' (gave up retrying)
    attempt          integer,       -- delivery attempts so far, for deferred
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    -- posting to [events] webhook_url
    post_attempts    integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    sent_at          timestamptz
);
CREATE INDEX delivery_events_unsent ON delivery_events (id) WHERE sent_at IS NULL;
CREATE INDEX delivery_events_intent ON delivery_events (intent_id);
