-- A room's forward extremities move into its head row (room_current_snapshot): one row per
-- room, read with one index lookup and updated in place by every event. As a table of their own
-- they cost a delete and an insert per event, and every read stepped over the dead index
-- entries those left behind until the next vacuum.
ALTER TABLE room_current_snapshot
    -- The events the next local event builds on, deepest first.
    ADD COLUMN forward_extremities TEXT[] NOT NULL DEFAULT '{}',
    -- The greatest depth among them.
    ADD COLUMN max_depth BIGINT NOT NULL DEFAULT 0;

UPDATE room_current_snapshot s
SET forward_extremities = x.ids, max_depth = x.max_depth
FROM (
    SELECT f.room_id,
           array_agg(f.event_id ORDER BY e.depth DESC, e.stream_ordering DESC) AS ids,
           max(e.depth) AS max_depth
    FROM room_forward_extremities f JOIN events e USING (event_id)
    GROUP BY f.room_id
) x
WHERE x.room_id = s.room_id;

ALTER TABLE room_current_snapshot
    ALTER COLUMN forward_extremities DROP DEFAULT,
    ALTER COLUMN max_depth DROP DEFAULT,
    ADD CONSTRAINT room_current_snapshot_extremities CHECK (cardinality(forward_extremities) > 0);
-- Room for the in-place (HOT) updates every event makes.
ALTER TABLE room_current_snapshot SET (fillfactor = 50);

DROP TABLE room_forward_extremities;
