-- A campaign fans out in ranges of member ids, each a row of its own with its own cursor, so
-- several loops and several router processes fan out one campaign at once: a range is claimed
-- inside the transaction that makes its next chunk (FOR UPDATE SKIP LOCKED), and a stopped
-- process's range resumes after its last committed chunk. The ranges are made when the
-- campaign's fan-out starts; they cover every member id between them (the first has no lower
-- bound, the last no upper one). The campaign becomes 'sending' in the transaction that
-- finishes its last range.
CREATE TABLE campaign_ranges (
    campaign_id       uuid NOT NULL,   -- no foreign key: campaigns are never deleted
    range_no          integer NOT NULL,
    after_member_id   text,            -- members after this one (NULL: from the first)
    last_member_id    text,            -- up to and including this one (NULL: to the last)
    cursor_member_id  text,            -- the last member done in this range
    done              boolean NOT NULL DEFAULT false,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, range_no)
);
CREATE INDEX campaign_ranges_to_do ON campaign_ranges (updated_at) WHERE NOT done;

-- A campaign fanning out now goes on as one range from where it stopped.
INSERT INTO campaign_ranges (campaign_id, range_no, cursor_member_id)
SELECT id, 0, cursor_member_id FROM campaigns WHERE status = 'fanning_out';
ALTER TABLE campaigns DROP COLUMN cursor_member_id;

-- The foreign key from deliveries to send_groups cost a look-up per grouped delivery a
-- fan-out makes. A delivery's group is always made by the statement (or, before it, the
-- transaction) that names it, and nothing deletes a send group, so it guarded nothing else.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_send_group;
