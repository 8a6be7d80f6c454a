-- Follower syncs and audiences per LINE account. A follower sync reads one account's follower
-- list and corrects that account's friend flags, so its state and its copy of the list are
-- kept per account: syncs of two accounts run side by side, one at a time per account.
ALTER TABLE line_follower_syncs ADD COLUMN account text NOT NULL DEFAULT 'default';
ALTER TABLE line_follower_syncs DROP CONSTRAINT line_follower_syncs_pkey;
ALTER TABLE line_follower_syncs DROP COLUMN singleton;
ALTER TABLE line_follower_syncs ADD PRIMARY KEY (account);
ALTER TABLE line_follower_syncs ALTER COLUMN account DROP DEFAULT;

ALTER TABLE line_follower_sync_ids ADD COLUMN account text NOT NULL DEFAULT 'default';
ALTER TABLE line_follower_sync_ids DROP CONSTRAINT line_follower_sync_ids_pkey;
ALTER TABLE line_follower_sync_ids ADD PRIMARY KEY (account, line_user_id);
ALTER TABLE line_follower_sync_ids ALTER COLUMN account DROP DEFAULT;

-- The LINE account an audience belongs to: a file of LINE user IDs holds the IDs of one
-- account (each provider gives a person a different ID), its LINE reach is counted there,
-- and its LINE audience (line-sync) is uploaded to that account.
ALTER TABLE audiences ADD COLUMN line_account text NOT NULL DEFAULT 'default';
