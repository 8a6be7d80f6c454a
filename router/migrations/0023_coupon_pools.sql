-- Coupon pools: codes a company uploads (POST /v1/coupon-pools/{id}/codes), each handed to
-- one holder (a journey run's use of the pool) at most, once and for good. A code is a secret
-- of the member it goes to: it is read only to hand it out and never logged.
CREATE TABLE coupon_pools (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE coupon_codes (
    pool_id  text NOT NULL REFERENCES coupon_pools (id) ON DELETE CASCADE,
    code     text NOT NULL CHECK (length(code) BETWEEN 1 AND 255),
    holder   text,
    held_at  timestamptz,
    CHECK ((holder IS NULL) = (held_at IS NULL)),
    UNIQUE (pool_id, code)
);
-- Where a hand-out finds a free code without reading the held ones.
CREATE INDEX coupon_codes_free ON coupon_codes (pool_id) WHERE holder IS NULL;
-- One code per holder and pool: a second take by the same holder (a retry racing the first,
-- another router) fails here instead of holding two codes.
CREATE UNIQUE INDEX coupon_codes_holder ON coupon_codes (pool_id, holder)
    WHERE holder IS NOT NULL;
