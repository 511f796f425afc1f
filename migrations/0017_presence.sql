-- Presence: each user's current presence, one row per user (ours and other servers'), stamped
-- with the position of the `presence` stream at its last change, so `/sync` reads the changes
-- between two tokens and the federation sender tells other servers what changed.

INSERT INTO stream_heads (stream, position) VALUES ('presence', 0);
-- How far the events stream has been read for joins: a server whose user newly joins a room
-- is sent the presence of our users in it, and our joining user's presence goes to the room's
-- other servers.
INSERT INTO stream_heads (stream, position) SELECT 'presence_joins', position FROM stream_heads WHERE stream = 'events';

CREATE TABLE presence (
    user_id          TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    status_msg       TEXT,
    -- When the user last did something (sent an event, set their presence, came online).
    last_active_ts   BIGINT NOT NULL,
    currently_active BOOLEAN NOT NULL DEFAULT FALSE,
    -- Our users: the latest time they are known to use a client: when their latest `/sync`
    -- ends (a long poll in progress counts until its timeout) or when they last set their
    -- presence; some seconds after it they are offline. Other servers' users: unused (0).
    last_seen_ts     BIGINT NOT NULL DEFAULT 0,
    -- Our users: when their presence was last sent to other servers (refreshed while online,
    -- before the other servers time it out). Other servers' users: when their server last told
    -- us about them.
    last_federation_ts BIGINT NOT NULL DEFAULT 0,
    -- The presence stream position of the last change.
    stream_id        BIGINT NOT NULL,
    CONSTRAINT presence_state_valid CHECK (state IN ('online', 'unavailable', 'offline')),
    -- Only an online user is currently active.
    CONSTRAINT presence_active_only_online CHECK (NOT currently_active OR state = 'online'),
    CONSTRAINT presence_times_valid CHECK (last_active_ts >= 0 AND last_seen_ts >= 0 AND last_federation_ts >= 0)
);
CREATE INDEX presence_stream ON presence (stream_id);
-- The periodic timeout pass looks only at users who are not offline.
CREATE INDEX presence_not_offline ON presence (user_id) WHERE state <> 'offline';
