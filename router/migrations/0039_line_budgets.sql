-- LINE budgets: what a campaign (id = the campaign's) or an intent may spend on LINE, and
-- what it has spent. Messages are reserved here when a LINE delivery or send group is
-- claimed, before any request, in the transaction that marks the deliveries granted, so a
-- retry never reserves twice and a crash can only leave messages reserved and unsent.
CREATE TABLE line_budgets (
    id              uuid PRIMARY KEY,
    account         text NOT NULL,
    budget          jsonb NOT NULL,          -- "included_only" | "unlimited" | {max_messages} | {max_yen}
    spent_messages  bigint NOT NULL DEFAULT 0,
    spent_yen       float8 NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Per account and month (Japan time): messages granted by budgets and not yet known sent
-- (`outstanding`, added to LINE's usage and the sends counted since it was read), and what
-- budgets were granted in all this month. Locked by each reservation before its budget rows.
CREATE TABLE line_budget_months (
    account      text NOT NULL,
    month        date NOT NULL,
    outstanding  bigint NOT NULL DEFAULT 0,
    granted      bigint NOT NULL DEFAULT 0,
    granted_yen  float8 NOT NULL DEFAULT 0,
    PRIMARY KEY (account, month)
);

-- A single or batch intent's own budget as asked (NULL: the account's default by kind); one
-- intent has at most one LINE delivery, so it needs no counter. A campaign's intents count
-- against the campaign's row (line_budgets.id = campaigns.id).
ALTER TABLE intents ADD COLUMN line_budget jsonb;
-- Deliveries sent on their own are marked granted; a send group is marked reserved as a whole
-- (one row, whatever its size) and only its refused deliveries are marked, so a retry of the
-- group reserves nothing again and leaves the refused ones out.
ALTER TABLE deliveries ADD COLUMN line_budget_granted boolean NOT NULL DEFAULT false,
                       ADD COLUMN line_budget_refused boolean NOT NULL DEFAULT false;
ALTER TABLE send_groups ADD COLUMN line_budget_reserved boolean NOT NULL DEFAULT false;
