-- Several LINE Official Accounts. A person has a different LINE user ID under each provider,
-- so a member's LINE identity (user ID, friend flag, opt-out) is kept per account; the
-- single [line] section is the account named 'default', which inherits today's values.

CREATE TABLE member_line_accounts (
    member_id   text NOT NULL REFERENCES members (member_id) ON DELETE CASCADE,
    account     text NOT NULL,
    user_id     text,
    friend      boolean NOT NULL DEFAULT false,
    opt_out     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, account),
    -- One member per account holds an ID; user ID first, so a search by ID alone uses it.
    UNIQUE (user_id, account)
);

INSERT INTO member_line_accounts (member_id, account, user_id, friend, opt_out, updated_at)
SELECT member_id, 'default', line_user_id, line_friend, line_opt_out, updated_at
FROM members
WHERE line_user_id IS NOT NULL OR line_friend OR line_opt_out;

-- Audiences of hashed LINE user IDs match on the hash, per account (see 0008 for why the
-- text is cast to bytea rather than converted).
CREATE INDEX member_line_accounts_user_id_sha256
    ON member_line_accounts (account, sha256(user_id::bytea)) WHERE user_id IS NOT NULL;
CREATE STATISTICS member_line_accounts_user_id_sha256_stats
    ON account, (sha256(user_id::bytea)) FROM member_line_accounts;

DROP STATISTICS members_line_user_id_sha256_stats;
DROP INDEX members_line_user_id_sha256;
ALTER TABLE members
    DROP COLUMN line_user_id,
    DROP COLUMN line_friend,
    DROP COLUMN line_opt_out;

-- Friendship as LINE reports it, per account: the same user ID string under two channels
-- would be two people.
ALTER TABLE line_users ADD COLUMN account text NOT NULL DEFAULT 'default';
ALTER TABLE line_users DROP CONSTRAINT line_users_pkey;
ALTER TABLE line_users ADD PRIMARY KEY (account, line_user_id);

ALTER TABLE line_webhook_events ADD COLUMN account text NOT NULL DEFAULT 'default';
ALTER TABLE line_link_nonces ADD COLUMN account text NOT NULL DEFAULT 'default';

-- Which account an intent, a campaign, a multicast and a narrowcast go out under.
ALTER TABLE intents ADD COLUMN line_account text NOT NULL DEFAULT 'default';
ALTER TABLE campaigns ADD COLUMN line_account text NOT NULL DEFAULT 'default';
ALTER TABLE send_groups ADD COLUMN line_account text NOT NULL DEFAULT 'default';
ALTER TABLE line_narrowcasts ADD COLUMN line_account text NOT NULL DEFAULT 'default';

-- The monthly quota is each account's own.
ALTER TABLE line_quota_reservations DROP CONSTRAINT line_quota_reservations_month_fkey;
ALTER TABLE line_quota ADD COLUMN account text NOT NULL DEFAULT 'default';
ALTER TABLE line_quota DROP CONSTRAINT line_quota_pkey;
ALTER TABLE line_quota ADD PRIMARY KEY (account, month);
ALTER TABLE line_quota_reservations ADD COLUMN account text NOT NULL DEFAULT 'default';
ALTER TABLE line_quota_reservations
    ADD FOREIGN KEY (account, month) REFERENCES line_quota (account, month) ON DELETE CASCADE;
DROP INDEX line_quota_reservations_month;
CREATE INDEX line_quota_reservations_month ON line_quota_reservations (account, month, created_at);
