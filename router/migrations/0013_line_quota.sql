-- The month's LINE message quota, shared by every router process: LINE's figures as last
-- read, what was sent since, and the requests in flight that hold part of what is left.
-- A month is LINE's (Japan time); a new month gets its row at its first reservation.
CREATE TABLE line_quota (
    month           date PRIMARY KEY,
    quota_limit     bigint,                  -- NULL: LINE sets no limit
    line_usage      bigint NOT NULL,         -- LINE's totalUsage at read_at
    sent_since_read bigint NOT NULL DEFAULT 0,
    read_at         timestamptz NOT NULL
);

-- One row per request in flight: taken before the request, removed when LINE has answered.
-- A row older than a few minutes belongs to a process that died mid-request; it no longer
-- holds quota (LINE's next figures count the message if it went out).
CREATE TABLE line_quota_reservations (
    id          uuid PRIMARY KEY,
    month       date NOT NULL REFERENCES line_quota ON DELETE CASCADE,
    messages    bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX line_quota_reservations_month ON line_quota_reservations (month, created_at);
