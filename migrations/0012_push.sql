-- Push: the pushers clients register (/pushers/set), the push actions the server's push-rule
-- evaluation found for each event and local member (/notifications, push delivery), and the
-- positions up to which background consumers have processed a stream.

-- A stream consumer's position: everything at or before it is done. Updated in the same
-- transaction as the consumer's output, so a crash neither loses nor repeats work.
CREATE TABLE stream_consumers (
    name     TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
-- Push rules are evaluated for events from now on, not for the history before this migration.
INSERT INTO stream_consumers (name, position)
SELECT 'push_rules', position FROM stream_heads WHERE stream = 'events';

CREATE TABLE event_push_actions (
    user_id         TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    room_id         TEXT NOT NULL,
    event_id        TEXT NOT NULL REFERENCES events (event_id) ON DELETE CASCADE,
    stream_ordering BIGINT NOT NULL,
    actions         JSONB NOT NULL,
    notify          BOOLEAN NOT NULL,
    highlight       BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
CREATE INDEX event_push_actions_by_room ON event_push_actions (user_id, room_id, stream_ordering);

CREATE TABLE pushers (
    user_id             TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    -- The session that registered it: logging it out removes the pusher.
    device_id           TEXT,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT,
    lang                TEXT NOT NULL,
    data                JSONB NOT NULL,
    created_ts          BIGINT NOT NULL,
    -- Push actions up to this events-stream position are delivered (or skipped as read).
    last_stream_ordering BIGINT NOT NULL,
    -- Since when deliveries fail (NULL: they do not).
    failing_since       BIGINT,
    PRIMARY KEY (user_id, app_id, pushkey),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE,
    CONSTRAINT pushers_kind CHECK (kind IN ('http', 'email')),
    CONSTRAINT pushers_app_id_length CHECK (length(app_id) BETWEEN 1 AND 64),
    CONSTRAINT pushers_pushkey_length CHECK (length(pushkey) BETWEEN 1 AND 512)
);
CREATE INDEX pushers_by_app_pushkey ON pushers (app_id, pushkey);
