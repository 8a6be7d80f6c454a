-- Journey runs: one member's way through one version of a journey. A run is claimed inside
-- the transaction that performs its due step (router/queue/claims.py `Timed`), so the step's
-- effect (an intent accepted, a branch taken) and the run's advance commit together: a crash
-- rolls back both, and the step fires again, once, after the restart.
CREATE TABLE journey_runs (
    id               uuid PRIMARY KEY,           -- time-ordered (version 7)
    journey_id       text NOT NULL REFERENCES journeys (id) ON DELETE CASCADE,
    version          integer NOT NULL,           -- the version the member entered
    member_id        text NOT NULL REFERENCES members (member_id) ON DELETE CASCADE,
    trigger_event_id uuid,                       -- the events row that started it
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'completed', 'exited', 'ended')),
    -- The step to do next when `due_at` comes: indexes into nested step lists, an `if`
    -- step's branch as 0 (then) or 1 (else): [2, 0, 1] is steps[2].then[1].
    position         integer[] NOT NULL DEFAULT '{0}',
    due_at           timestamptz,                -- when that step falls due (active runs)
    deferred_since   timestamptz,                -- the step's first deferral (quiet hours, cap)
    entered_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    exit_reason      text
);
CREATE UNIQUE INDEX journey_runs_one_active ON journey_runs (journey_id, member_id)
    WHERE status = 'active';
CREATE INDEX journey_runs_due ON journey_runs (due_at) WHERE status = 'active';
CREATE INDEX journey_runs_member ON journey_runs (member_id, journey_id);
CREATE INDEX journey_runs_journey ON journey_runs (journey_id, status);

-- What each step of a run did, for the progress figures and the member's view.
CREATE TABLE journey_steps (
    run_id      uuid NOT NULL REFERENCES journey_runs (id) ON DELETE CASCADE,
    journey_id  text NOT NULL,
    step        text NOT NULL,                    -- 'steps[2].then[1]'
    outcome     text NOT NULL,                    -- sent | skipped | deferred | failed | waiting | branched
    channels    text[] NOT NULL DEFAULT '{}',
    intent_id   uuid,
    reason      text,
    at          timestamptz NOT NULL
);
CREATE INDEX journey_steps_run ON journey_steps (run_id);
CREATE INDEX journey_steps_journey ON journey_steps (journey_id, step);

-- A journey's send is an ordinary intent that says where it came from. `kind` is recorded for
-- the engine's own sends (the frequency cap counts promotional ones; campaigns count too).
ALTER TABLE intents ADD COLUMN journey_id text, ADD COLUMN journey_step text,
    ADD COLUMN journey_run uuid, ADD COLUMN kind text;

-- Triggers other than a company's events reach the journeys as reserved events. An attribute
-- going from unset (absent or null) to set on a member writes `router:attribute_set` with
-- {"attribute": name} for each attribute an enabled, live journey starts on; when none does,
-- a statement costs one look at the journeys. The NOTIFY wakes the `journey_events` queue
-- (router/queue/wakeups.py: channel router_queues, payload = the queue's name).
CREATE FUNCTION journey_trigger_attributes() RETURNS text[] LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(DISTINCT v.definition->'trigger'->>'attribute'), '{}')
    FROM journeys j JOIN journey_versions v ON v.journey_id = j.id AND v.version = j.version
    WHERE NOT j.paused AND j.deleted_at IS NULL
      AND coalesce((v.definition->>'enabled')::boolean, true)
      AND v.definition->'trigger'->>'attribute' IS NOT NULL
$$;

CREATE FUNCTION journey_attribute_set() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted text[] := journey_trigger_attributes();
    written integer;
BEGIN
    IF cardinality(wanted) = 0 THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO events (id, member_id, name, properties, occurred_at, source)
        SELECT gen_random_uuid(), n.member_id, 'router:attribute_set',
               jsonb_build_object('attribute', a), now(), 'router'
        FROM new_rows n CROSS JOIN unnest(wanted) AS a
        WHERE coalesce(jsonb_typeof(n.attributes -> a), 'null') <> 'null';
    ELSE
        INSERT INTO events (id, member_id, name, properties, occurred_at, source)
        SELECT gen_random_uuid(), n.member_id, 'router:attribute_set',
               jsonb_build_object('attribute', a), now(), 'router'
        FROM new_rows n JOIN old_rows o ON o.member_id = n.member_id
        CROSS JOIN unnest(wanted) AS a
        WHERE coalesce(jsonb_typeof(n.attributes -> a), 'null') <> 'null'
          AND coalesce(jsonb_typeof(o.attributes -> a), 'null') = 'null';
    END IF;
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written > 0 THEN
        PERFORM pg_notify('router_queues', 'journey_events');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER members_attribute_set_insert AFTER INSERT ON members
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION journey_attribute_set();
CREATE TRIGGER members_attribute_set_update AFTER UPDATE ON members
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journey_attribute_set();
