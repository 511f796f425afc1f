-- Simplified sliding sync (MSC4186): per connection (user, device, conn_id) the number of the
-- last position handed out, and which rooms were sent to it, in which response and with which
-- room configuration — so the next request sends those rooms incrementally and the others whole.
-- A retried request with an older position sees rooms sent after it as unsent and gets them
-- whole again, which is always safe.
CREATE TABLE sliding_sync_connections (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    conn_id    TEXT NOT NULL,
    last_pos   BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE sliding_sync_rooms (
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    conn_id     TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    sent_pos    BIGINT NOT NULL,
    config_hash BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, room_id),
    FOREIGN KEY (user_id, device_id, conn_id)
        REFERENCES sliding_sync_connections (user_id, device_id, conn_id) ON DELETE CASCADE
);
