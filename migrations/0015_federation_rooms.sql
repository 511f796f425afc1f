-- Rooms shared with other servers: the event graph's edges, events outside the timeline,
-- inbound transactions and the outbound queue per destination.

ALTER TABLE events
    -- The event's place in the graph, as its PDU states it (walked for auth chains, missing
    -- events and backfill without parsing every PDU).
    ADD COLUMN prev_events TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN auth_events TEXT[] NOT NULL DEFAULT '{}',
    -- Known, but not part of the room's timeline: auth and state events learnt out of order
    -- (from a join, /state, /event_auth), rejected and soft-failed events. Their stream
    -- positions are negative (allocated downwards from the `outliers` head), so no reader of the
    -- events stream ever sees them.
    ADD COLUMN outlier BOOLEAN NOT NULL DEFAULT FALSE,
    -- Why the event failed the authorisation rules; a rejected event never enters any state.
    ADD COLUMN rejected TEXT,
    -- Authorised by its own history but not by the room's current state: kept, never shown.
    ADD COLUMN soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
    -- The server that sent it to us (NULL for our own events).
    ADD COLUMN received_from TEXT,
    -- An outlier's state is unknown.
    ALTER COLUMN state_before DROP NOT NULL,
    ALTER COLUMN state_after DROP NOT NULL;

UPDATE events SET
    prev_events = ARRAY(SELECT jsonb_array_elements_text(pdu::jsonb -> 'prev_events')),
    auth_events = ARRAY(SELECT jsonb_array_elements_text(pdu::jsonb -> 'auth_events'));

ALTER TABLE events
    ALTER COLUMN prev_events DROP DEFAULT,
    ALTER COLUMN auth_events DROP DEFAULT,
    ADD CONSTRAINT events_outlier_position CHECK (outlier = (stream_ordering < 0)),
    ADD CONSTRAINT events_not_in_timeline CHECK (outlier OR (rejected IS NULL AND NOT soft_failed)),
    ADD CONSTRAINT events_timeline_state CHECK (outlier OR (state_before IS NOT NULL AND state_after IS NOT NULL));

INSERT INTO stream_heads (stream, position) VALUES ('outliers', 0);

-- Transactions received from other servers, so a retried transaction gets the same answer
-- without being processed twice.
CREATE TABLE federation_inbound_txns (
    origin         TEXT NOT NULL,
    txn_id         TEXT NOT NULL,
    response       JSONB NOT NULL,
    received_ts    BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

-- Sending to other servers. A consumer of the events stream (`stream_consumers` row
-- `federation`) queues each local event for the servers in its room, in the transaction that
-- advances its position; each destination's queue drains one transaction at a time, and rows
-- are deleted only when the destination has answered 200. Nothing is lost across restarts.
CREATE TABLE federation_destinations (
    destination    TEXT PRIMARY KEY,
    -- Consecutive failures, when to try again (exponential backoff) and why it failed.
    failures       INT NOT NULL DEFAULT 0,
    retry_at       BIGINT NOT NULL DEFAULT 0,
    last_error     TEXT,
    CONSTRAINT federation_destinations_failures CHECK (failures >= 0)
);

CREATE TABLE federation_outbound_pdus (
    destination    TEXT NOT NULL REFERENCES federation_destinations (destination) ON DELETE CASCADE,
    stream_ordering BIGINT NOT NULL,
    event_id       TEXT NOT NULL REFERENCES events (event_id) ON DELETE CASCADE,
    PRIMARY KEY (destination, stream_ordering)
);

-- EDUs waiting for a destination (typing, receipts, to-device, device lists, presence), sent
-- in order with the PDUs.
CREATE TABLE federation_outbound_edus (
    position       BIGSERIAL PRIMARY KEY,
    destination    TEXT NOT NULL REFERENCES federation_destinations (destination) ON DELETE CASCADE,
    edu_type       TEXT NOT NULL,
    content        JSONB NOT NULL,
    created_ts     BIGINT NOT NULL
);
CREATE INDEX federation_outbound_edus_destination ON federation_outbound_edus (destination, position);

INSERT INTO stream_consumers (name, position)
SELECT 'federation', position FROM stream_heads WHERE stream = 'events';

-- Invites from other servers to rooms this server is not in: the stripped state the inviting
-- server sent along, shown to the invitee instead of a current state this server does not have.
-- (The invite event itself is stored as the first event this server holds of the room.)
CREATE TABLE remote_invites (
    room_id        TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    user_id        TEXT NOT NULL,
    event_id       TEXT NOT NULL REFERENCES events (event_id) ON DELETE CASCADE,
    invite_state   JSONB NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
