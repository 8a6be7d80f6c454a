-- API keys made, listed and revoked by `router keys`: each has an id to name it by (the key
-- itself is never stored), and when it was last used.
ALTER TABLE api_keys RENAME COLUMN label TO name;
ALTER TABLE api_keys
    ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN last_used_at timestamptz;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_id_unique UNIQUE (id);
