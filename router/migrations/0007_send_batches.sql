-- Send batches: deliveries sent to the provider in one request (LINE multicast, up to 500
-- user IDs). The batch, not its deliveries, is what a worker claims, so a batch is always
-- sent whole: LINE's retry key is derived from the batch id, and resending part of a batch
-- under that key would be answered 409 for recipients who never got the message.
--   pending -> claimed -> done | pending (retry) | split
-- A batch refused because of some of its recipients (400 naming `to[i]`) sent nothing: it
-- becomes 'split', its named recipients fail on their own and the rest move to a new batch
-- with a new id (so a new retry key). Deliveries in a batch stay 'pending' while it waits and
-- take the batch's outcome when it is recorded.
CREATE TABLE send_batches (
    id                uuid PRIMARY KEY,
    channel           text NOT NULL,
    content_id        bytea NOT NULL REFERENCES contents (id),
    status            text NOT NULL CHECK (status IN
                        ('pending', 'claimed', 'done', 'split', 'cancelled')),
    split_from        uuid REFERENCES send_batches (id) ON DELETE SET NULL,
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    first_attempt_at  timestamptz,
    claim_token       uuid,
    lease_expires_at  timestamptz,
    last_error        text,
    provider_ref      text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX send_batches_due ON send_batches (channel, next_attempt_at) WHERE status = 'pending';
CREATE INDEX send_batches_leased ON send_batches (lease_expires_at) WHERE status = 'claimed';

ALTER TABLE deliveries
    ADD CONSTRAINT deliveries_send_batch FOREIGN KEY (send_batch_id)
        REFERENCES send_batches (id);
CREATE INDEX deliveries_send_batch ON deliveries (send_batch_id)
    WHERE send_batch_id IS NOT NULL;
-- Single deliveries are claimed from this index; batched ones only through their batch.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (channel, next_attempt_at)
    WHERE status = 'pending' AND send_batch_id IS NULL;
