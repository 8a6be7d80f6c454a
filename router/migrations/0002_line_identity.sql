-- LINE identity: who follows the official account, webhook events as received, link nonces,
-- and the outbox of webhook bodies forwarded to the company's other bots.

-- Every LINE user the router has heard of, linked to a member or not yet. `status_at` is the
-- time of the event that set `friend`, so events applied out of order cannot undo newer ones.
CREATE TABLE line_users (
    line_user_id  text PRIMARY KEY,
    friend        boolean NOT NULL,
    status_at     timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Verified webhook events, stored before LINE gets its 200 and processed afterwards.
CREATE TABLE line_webhook_events (
    webhook_event_id  text PRIMARY KEY,
    event_type        text NOT NULL,
    line_user_id      text,
    occurred_at       timestamptz NOT NULL,
    body              jsonb NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    processed_at      timestamptz,
    outcome           text
);
CREATE INDEX line_webhook_events_unprocessed ON line_webhook_events (occurred_at)
    WHERE processed_at IS NULL;

CREATE TABLE line_link_nonces (
    nonce        text PRIMARY KEY,
    member_id    text NOT NULL REFERENCES members (member_id) ON DELETE CASCADE,
    link_token   text NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Webhook bodies to forward, per URL in the order received.
CREATE TABLE webhook_forwards (
    id               bigserial PRIMARY KEY,
    url              text NOT NULL,
    body             bytea NOT NULL,
    signature        text NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    finished_at      timestamptz,
    outcome          text
);
CREATE INDEX webhook_forwards_pending ON webhook_forwards (url, id) WHERE finished_at IS NULL;

-- LINE notification messages are confirmed by a `delivery` webhook event naming the delivery.
ALTER TABLE deliveries ADD COLUMN confirmed_at timestamptz;
CREATE INDEX deliveries_unconfirmed ON deliveries (sent_at)
    WHERE channel = 'line_notification' AND status = 'sent' AND confirmed_at IS NULL;
