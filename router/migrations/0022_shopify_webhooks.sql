-- Shopify webhook deliveries already taken (X-Shopify-Webhook-Id): Shopify sends a delivery
-- again when it does not get its 200 in time, and a repeat must record nothing. Ids only, no
-- payload; kept apart from `events` so erasing a member does not forget what was received.
CREATE TABLE shopify_webhooks (
    webhook_id  text PRIMARY KEY,
    topic       text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
