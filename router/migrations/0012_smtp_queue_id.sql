-- The upstream SMTP server's final reply to an email delivery (`250 2.0.0 Ok: queued as
-- C75E816241F`), kept beside its Message-ID (provider_ref): the upstream's queue id is what
-- its own logs are searched by.
ALTER TABLE deliveries ADD COLUMN smtp_queue_id text;
