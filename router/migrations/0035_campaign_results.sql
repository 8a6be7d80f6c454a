-- Campaign results without counting rows: what happened to a campaign's messages after they
-- were sent, per channel: the delivery events recorded for its intents (delivered, bounce,
-- dropped, unsubscribe, spamreport, ...) and the fallback deliveries made for it. Kept by
-- insert triggers in the transactions that record them, sharded by backend
-- like campaign_counts; never decremented, so erasing old events keeps a campaign's results.
CREATE TABLE campaign_results (
    campaign_id  uuid NOT NULL,  -- no foreign key: its check would wait on a fan-out's lock
    channel      text NOT NULL,
    outcome      text NOT NULL,  -- a delivery event's name, or 'fell_back'
    shard        smallint NOT NULL,
    n            bigint NOT NULL,
    PRIMARY KEY (campaign_id, channel, outcome, shard)
);

-- The name a campaign's LINE pushes and multicasts carry in customAggregationUnits.
ALTER TABLE campaigns ADD COLUMN line_aggregation_unit text;
-- The dashboard lists campaigns newest first, a page at a time (keyset on created_at, id).
CREATE INDEX campaigns_newest ON campaigns (created_at DESC, id DESC);

CREATE FUNCTION campaign_results_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- 'processed' is every accepted intent (the counts already say that); skipping it keeps
    -- fan-out chunks, which record only 'processed', free of the probe into intents.
    INSERT INTO campaign_results AS c (campaign_id, channel, outcome, shard, n)
    SELECT i.campaign_id, e.channel, e.event, pg_backend_pid() % 16, count(*)
    FROM new_rows e JOIN intents i ON i.id = e.intent_id
    WHERE e.event <> 'processed' AND i.campaign_id IS NOT NULL
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (campaign_id, channel, outcome, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END
$$;

-- Fallback rows are few (made only when a channel failed for good), and every intake inserts
-- deliveries: a row trigger whose WHEN is checked in the executor costs intake nothing, where a
-- statement trigger would keep and scan every inserted row.
CREATE FUNCTION campaign_results_fallbacks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO campaign_results AS c (campaign_id, channel, outcome, shard, n)
    VALUES (NEW.campaign_id, NEW.channel, 'fell_back', pg_backend_pid() % 16, 1)
    ON CONFLICT (campaign_id, channel, outcome, shard) DO UPDATE SET n = c.n + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER delivery_events_campaign_results AFTER INSERT ON delivery_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION campaign_results_events();
CREATE TRIGGER deliveries_campaign_fallbacks AFTER INSERT ON deliveries
    FOR EACH ROW WHEN (NEW.is_fallback AND NEW.campaign_id IS NOT NULL)
    EXECUTE FUNCTION campaign_results_fallbacks();

INSERT INTO campaign_results (campaign_id, channel, outcome, shard, n)
SELECT i.campaign_id, e.channel, e.event, 0, count(*)
FROM delivery_events e JOIN intents i ON i.id = e.intent_id
WHERE e.event <> 'processed' AND i.campaign_id IS NOT NULL GROUP BY 1, 2, 3;
INSERT INTO campaign_results (campaign_id, channel, outcome, shard, n)
SELECT campaign_id, channel, 'fell_back', 0, count(*)
FROM deliveries WHERE is_fallback AND campaign_id IS NOT NULL GROUP BY 1, 2
ON CONFLICT DO NOTHING;
