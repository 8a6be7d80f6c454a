-- Campaign progress without counting rows: how many of a campaign's deliveries are in each
-- (channel, status, send group), kept by statement-level triggers on deliveries in the same
-- transactions that insert, update or delete them, so the counts are exact at every commit.
-- Each backend adds to rows of its own shard (pg_backend_pid() % 16), so workers recording
-- at once do not queue on one hot row; a read sums the shards. A delivery sent alone counts
-- under the nil UUID.
CREATE TABLE campaign_counts (
    campaign_id    uuid NOT NULL,  -- no foreign key: its check would wait on a fan-out's lock
    channel        text NOT NULL,
    status         text NOT NULL,
    send_group_id  uuid NOT NULL,
    shard          smallint NOT NULL,
    deliveries     bigint NOT NULL,
    PRIMARY KEY (campaign_id, channel, status, send_group_id, shard)
);

CREATE FUNCTION campaign_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO campaign_counts AS c
            (campaign_id, channel, status, send_group_id, shard, deliveries)
        SELECT campaign_id, channel, status,
               coalesce(send_group_id, '00000000-0000-0000-0000-000000000000'),
               pg_backend_pid() % 16, count(*)
        FROM new_rows WHERE campaign_id IS NOT NULL
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (campaign_id, channel, status, send_group_id, shard)
        DO UPDATE SET deliveries = c.deliveries + excluded.deliveries;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO campaign_counts AS c
            (campaign_id, channel, status, send_group_id, shard, deliveries)
        SELECT campaign_id, channel, status,
               coalesce(send_group_id, '00000000-0000-0000-0000-000000000000'),
               pg_backend_pid() % 16, sum(n)
        FROM (SELECT campaign_id, channel, status, send_group_id, 1 AS n
              FROM new_rows WHERE campaign_id IS NOT NULL
              UNION ALL
              SELECT campaign_id, channel, status, send_group_id, -1
              FROM old_rows WHERE campaign_id IS NOT NULL) AS moved
        GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4
        ON CONFLICT (campaign_id, channel, status, send_group_id, shard)
        DO UPDATE SET deliveries = c.deliveries + excluded.deliveries;
    ELSE
        INSERT INTO campaign_counts AS c
            (campaign_id, channel, status, send_group_id, shard, deliveries)
        SELECT o.campaign_id, o.channel, o.status,
               coalesce(o.send_group_id, '00000000-0000-0000-0000-000000000000'),
               pg_backend_pid() % 16, -count(*)
        FROM old_rows o WHERE o.campaign_id IS NOT NULL
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (campaign_id, channel, status, send_group_id, shard)
        DO UPDATE SET deliveries = c.deliveries + excluded.deliveries;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_counted_insert AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION campaign_counts_add();
CREATE TRIGGER deliveries_counted_update AFTER UPDATE ON deliveries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION campaign_counts_add();
CREATE TRIGGER deliveries_counted_delete AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION campaign_counts_add();

INSERT INTO campaign_counts (campaign_id, channel, status, send_group_id, shard, deliveries)
SELECT campaign_id, channel, status,
       coalesce(send_group_id, '00000000-0000-0000-0000-000000000000'), 0, count(*)
FROM deliveries WHERE campaign_id IS NOT NULL GROUP BY 1, 2, 3, 4;
