-- A journey's latest runs, newest first, a page at a time (the dashboard's journeys page):
-- ids are time-ordered, so this index reads exactly the rows shown.
CREATE INDEX journey_runs_journey_recent ON journey_runs (journey_id, id DESC);
