-- LINE narrowcast: a campaign asked for with "line_delivery": "narrowcast" sends its LINE
-- part as one narrowcast to its audiences' synced LINE audiences instead of multicasts.
-- Its LINE deliveries share one send group in status 'narrowcast', which the multicast
-- queue never claims; the narrowcast's own state is a row of `line_narrowcasts`:
--   waiting (for the fan-out to end, or a retry) -> accepted (LINE took it; progress is
--   polled) -> succeeded | failed | unknown (LINE never reported the end) | cancelled
-- Rows are claimed inside the transaction that works on them, so a crash anywhere leaves the
-- row where it was; LINE's X-Line-Retry-Key (derived from the campaign id) answers a resend
-- with 409 and the first request's id, so no member is sent the message twice.
ALTER TABLE send_groups DROP CONSTRAINT send_batches_status_check;
ALTER TABLE send_groups ADD CONSTRAINT send_groups_status_check CHECK (status IN
    ('pending', 'claimed', 'done', 'split', 'cancelled', 'narrowcast'));

CREATE TABLE line_narrowcasts (
    campaign_id        uuid PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    send_group_id      uuid NOT NULL UNIQUE,    -- the campaign's LINE deliveries' group
    -- The LINE audiences it goes to (the campaign's audiences, as synced) and those it
    -- leaves out (its exclusions, as synced); fixed when the campaign is created.
    audience_group_ids          bigint[] NOT NULL,
    exclude_audience_group_ids  bigint[] NOT NULL DEFAULT '{}',
    status             text NOT NULL CHECK (status IN
                         ('waiting', 'accepted', 'succeeded', 'failed', 'unknown', 'cancelled')),
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    attempts           integer NOT NULL DEFAULT 0,
    first_attempt_at   timestamptz,
    claim_token        uuid,                    -- the token its deliveries are held under
    recipients         integer,                 -- LINE deliveries it was sent for
    request_id         text,                    -- LINE's X-Line-Request-Id
    accepted_at        timestamptz,
    polls              integer NOT NULL DEFAULT 0,
    phase              text,                    -- LINE's, as last polled
    success_count      bigint,
    failure_count      bigint,
    target_count       bigint,
    error_code         integer,
    failed_description text,
    accepted_time      timestamptz,
    completed_time     timestamptz,
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX line_narrowcasts_due ON line_narrowcasts (next_attempt_at)
    WHERE status IN ('waiting', 'accepted');
