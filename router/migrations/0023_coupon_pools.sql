-- Coupon pools: codes a company uploads (POST /v1/coupon-pools/{id}/codes), each handed to
-- one holder (a journey run's use of the pool) at most, once and for good. A code is a secret
-- of the member it goes to: it is read only to hand it out and never logged.
CREATE TABLE coupon_pools (
    id          text COLLATE "C" PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE coupon_codes (
    pool_id  text COLLATE "C" NOT NULL,
    -- Pool IDs and codes are compared byte by byte (a code is opaque): sorting an upload's
    -- million codes and keeping the indexes is several times faster than under a language's
    -- collation.
    code     text COLLATE "C" NOT NULL CHECK (length(code) BETWEEN 1 AND 255),
    holder   text,
    held_at  timestamptz,
    CHECK ((holder IS NULL) = (held_at IS NULL)),
    UNIQUE (pool_id, code)
);
-- Where a hand-out finds a free code without reading the held ones. One entry per code (no
-- posting lists): the entry of a code just taken is marked dead on its own by the next scan
-- that passes it, instead of every later hand-out re-reading the rows of a shared list.
CREATE INDEX coupon_codes_free ON coupon_codes (pool_id) WITH (deduplicate_items = off)
    WHERE holder IS NULL;
-- One code per holder and pool: a second take by the same holder (a retry racing the first,
-- another router) fails here instead of holding two codes.
CREATE UNIQUE INDEX coupon_codes_holder ON coupon_codes (pool_id, holder)
    WHERE holder IS NOT NULL;

-- No foreign key to coupon_pools: checking it for each of a million uploaded codes took as
-- long as inserting them. An upload holds its pool (created, or locked FOR UPDATE) while it
-- inserts, so a code never names a missing pool; deleting pools deletes their codes in the
-- same statement.
CREATE FUNCTION coupon_codes_follow_pools() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM coupon_codes c USING gone_coupon_pools g WHERE c.pool_id = g.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER coupon_pools_delete_codes
    AFTER DELETE ON coupon_pools
    REFERENCING OLD TABLE AS gone_coupon_pools
    FOR EACH STATEMENT EXECUTE FUNCTION coupon_codes_follow_pools();
