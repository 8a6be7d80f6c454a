-- A send group's outcome is recorded once, on the group row. Deliveries made inside a multicast
-- group are 'grouped': their state is their group's (pending, claimed, sent, cancelled,
-- uncertain; the group row carries the attempts, LINE's request id, the sent time and the
-- last error). A grouped delivery gets a state of its own only when it leaves the group:
-- unreachable at the claim, named by a 400, or failed for good with the whole group (each then
-- needs its own fallback). A group whose members all left it is 'done' (or 'split').
-- `maybe_sent`: an attempt timed out, so LINE may have taken it; a cancel then leaves it
-- 'uncertain', not 'cancelled'.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN
    ('pending', 'claimed', 'sending', 'sent', 'failed', 'uncertain', 'cancelled', 'grouped'));
ALTER TABLE deliveries ADD COLUMN maybe_sent boolean NOT NULL DEFAULT false;

ALTER TABLE send_groups DROP CONSTRAINT send_groups_status_check;
ALTER TABLE send_groups ADD CONSTRAINT send_groups_status_check CHECK (status IN
    ('pending', 'claimed', 'sent', 'uncertain', 'done', 'split', 'cancelled', 'narrowcast'));
ALTER TABLE send_groups ADD COLUMN sent_at timestamptz;
ALTER TABLE send_groups ADD COLUMN maybe_sent boolean NOT NULL DEFAULT false;

-- Groups waiting (or held) now: their deliveries take the group's state from here on.
UPDATE send_groups SET status = 'pending', claim_token = NULL, lease_expires_at = NULL
WHERE status = 'claimed';
UPDATE deliveries d SET status = 'grouped', claim_token = NULL, lease_expires_at = NULL
FROM send_groups s
WHERE s.id = d.send_group_id AND s.status = 'pending' AND d.status IN ('pending', 'claimed');
