-- History fetched from other servers (`/backfill`) when a client pages past the oldest event
-- this server holds of a room. Such events belong to the timeline but are older than anything
-- already in it, so they are placed below it: at negative positions, allocated downwards from
-- the `outliers` head like outliers (newest first, so an older batch lands further down).
-- Every reader of the events stream reads upwards from a non-negative position and never sees
-- them; `/messages` pages through them by position like through the rest of the timeline.
ALTER TABLE events
    ADD COLUMN backfilled BOOLEAN NOT NULL DEFAULT FALSE,
    DROP CONSTRAINT events_outlier_position,
    ADD CONSTRAINT events_outlier_position CHECK ((outlier OR backfilled) = (stream_ordering < 0)),
    ADD CONSTRAINT events_backfilled_in_timeline CHECK (NOT (outlier AND backfilled));
