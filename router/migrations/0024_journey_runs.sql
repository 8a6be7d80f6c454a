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
