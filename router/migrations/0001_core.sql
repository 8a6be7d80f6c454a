-- Core tables: members, message contents, intents, per-channel deliveries (the outbox),
-- API key hashes and the shared provider rate-limit buckets.

CREATE TABLE members (
    member_id      text PRIMARY KEY,
    email          text,
    email_sha256   bytea,          -- SHA-256 of the trimmed, lower-cased address
    phone          text,           -- E.164
    phone_sha256   bytea,          -- SHA-256 of the E.164 form
    line_user_id   text UNIQUE,
    line_friend    boolean NOT NULL DEFAULT false,
    email_opt_out  boolean NOT NULL DEFAULT false,
    line_opt_out   boolean NOT NULL DEFAULT false,
    attributes     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX members_email_sha256 ON members (email_sha256);
CREATE INDEX members_phone_sha256 ON members (phone_sha256);

-- One row per distinct message content; a campaign to 100,000 members stores its body once.
-- The id is the SHA-256 of the canonical JSON body, so identical content shares a row and
-- deliveries with the same content_id can later be sent together (LINE multicast).
CREATE TABLE contents (
    id          bytea PRIMARY KEY,
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE intents (
    id               uuid PRIMARY KEY,
    member_id        text REFERENCES members (member_id) ON DELETE CASCADE,
    email_address    text,        -- set only for a recipient with no member record
    content_id       bytea NOT NULL REFERENCES contents (id),
    route            text NOT NULL,
    fallback         text,         -- channel to try if the primary fails for good
    campaign         text,
    tags             jsonb NOT NULL DEFAULT '[]'::jsonb,
    metadata         jsonb,
    idempotency_key  text,
    request_sha256   bytea,        -- fingerprint of the request body, for idempotent replays
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (member_id IS NOT NULL OR email_address IS NOT NULL)
);
CREATE UNIQUE INDEX intents_idempotency_key ON intents (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX intents_member ON intents (member_id);
CREATE INDEX intents_content ON intents (content_id);

-- The outbox: one row per (intent, channel). Workers claim 'pending' rows with
-- FOR UPDATE SKIP LOCKED. A fallback delivery is inserted in the same transaction that
-- records the primary's permanent failure, addressed from the member's current record.
--   pending -> claimed [-> sending] -> sent | failed | pending (retry)
--   'sending' is written only for channels without provider-side de-duplication (email),
--   right before the provider is contacted; a crash while 'sending' becomes 'uncertain'
--   instead of a possible duplicate.
CREATE TABLE deliveries (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    intent_id         uuid NOT NULL REFERENCES intents (id) ON DELETE CASCADE,
    channel           text NOT NULL,
    address           text NOT NULL,      -- LINE user ID or email address, fixed when planned
    status            text NOT NULL CHECK (status IN
                        ('pending', 'claimed', 'sending', 'sent', 'failed', 'uncertain',
                         'cancelled')),
    is_fallback       boolean NOT NULL DEFAULT false,
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    claim_token       uuid,
    lease_expires_at  timestamptz,
    first_attempt_at  timestamptz,
    -- Deliveries sent in one provider request (LINE multicast) share a send_batch_id; the
    -- provider retry key is derived from it. NULL: sent alone, key derived from id.
    send_batch_id     uuid,
    last_error        text,
    provider_ref      text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    sent_at           timestamptz,
    UNIQUE (intent_id, channel)
);
CREATE INDEX deliveries_due ON deliveries (channel, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at)
    WHERE status IN ('claimed', 'sending');

CREATE TABLE api_keys (
    key_sha256  bytea PRIMARY KEY,
    label       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Requests granted per provider limit per second, shared by every router process.
CREATE TABLE rate_buckets (
    bucket     text NOT NULL,
    second     timestamptz NOT NULL,
    granted    integer NOT NULL,
    PRIMARY KEY (bucket, second)
);
