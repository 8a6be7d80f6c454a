-- Deliverability: what makes composed email acceptable to mailbox providers and to the law
-- (docs/deliverability.md). Relayed messages are left as their ESP made them.

-- Addresses email is never sent to again (until someone deletes the row): a hard bounce, a
-- DSN for a mailbox that does not exist, an unsubscribe by an address-only recipient, a spam
-- complaint, or an operator's entry. `address` is normalised as members.email is. `detail`
-- is the SMTP reply or the DSN's status, never more of the message.
CREATE TABLE email_suppressions (
    address      text PRIMARY KEY,
    reason       text NOT NULL CHECK (reason IN
                   ('bounce', 'invalid', 'unsubscribe', 'spamreport', 'manual')),
    detail       text,
    delivery_id  uuid,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_suppressions_by_time ON email_suppressions (reason, created_at);

-- Opt-outs of one category of promotional email (a member opting out of all email is
-- members.email_opt_out). Erasing the member erases these.
CREATE TABLE email_category_opt_outs (
    member_id    text NOT NULL REFERENCES members (member_id) ON DELETE CASCADE,
    category     text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, category)
);

-- Consent to promotional email, as the member gave it: {granted_at, source, evidence}.
ALTER TABLE members ADD COLUMN email_consent jsonb;

-- A consent record outlives the member's erasure until one month after the last promotional
-- email sent to them (特定電子メール法 record keeping); retention deletes it after `keep_until`.
CREATE TABLE email_consent_records (
    member_id             text NOT NULL,
    email                 text,
    consent               jsonb NOT NULL,
    last_promotional_at   timestamptz,
    keep_until            timestamptz NOT NULL,
    erased_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, erased_at)
);
CREATE INDEX email_consent_records_expiry ON email_consent_records (keep_until);

-- Every intent now records its kind (transactional mail carries no unsubscribe and needs no
-- consent) and, optionally, the category a recipient can opt out of on its own (a
-- campaign's is in its template). Intents accepted before this have kind NULL, read as 'promotional' (the API's default).
ALTER TABLE intents ADD COLUMN category text;

-- A delivery the recipient's mail system reported on after it was sent: a bounce (DSN) or a
-- spam complaint (ARF), and when.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN
    ('pending', 'claimed', 'sending', 'sent', 'failed', 'uncertain', 'cancelled', 'grouped',
     'bounced', 'complained'));
ALTER TABLE deliveries ADD COLUMN feedback_at timestamptz;

ALTER TABLE delivery_events DROP CONSTRAINT delivery_events_event_check;
ALTER TABLE delivery_events ADD CONSTRAINT delivery_events_event_check CHECK (event IN
    ('processed', 'delivered', 'deferred', 'bounce', 'dropped', 'unsubscribe',
     'group_unsubscribe', 'spamreport'));
ALTER TABLE delivery_events ADD COLUMN category text;

-- Secrets the router makes for itself and every process shares (the unsubscribe and bounce
-- token key, when [email] unsubscribe_secret is not set).
CREATE TABLE router_secrets (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
