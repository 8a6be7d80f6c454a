-- Finished rows are pruned after `[retention] days` (router/retention.py); these indexes let
-- each sweep find them without reading the rows still in use.
CREATE INDEX webhook_forwards_finished ON webhook_forwards (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX delivery_events_sent ON delivery_events (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX line_webhook_events_processed ON line_webhook_events (processed_at)
    WHERE processed_at IS NOT NULL;
CREATE INDEX line_link_nonces_expires ON line_link_nonces (expires_at);
