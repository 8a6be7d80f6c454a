-- Messages received by the SMTP relay ingress, kept byte for byte (so DKIM signatures and
-- tracking survive) and shared by every recipient's intent through the content that names it.
CREATE TABLE relayed_messages (
    id          bytea PRIMARY KEY,   -- SHA-256 of the bytes
    data        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
