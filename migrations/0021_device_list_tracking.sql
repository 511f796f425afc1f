-- Device-list updates between servers (server-server API, "Device management").
--
-- Outbound: every change of a local device is a row of the device-list stream naming the
-- device. A consumer of that stream (`stream_consumers` row `device_lists_federation`) turns each
-- such row into an `m.device_list_update` EDU for every server sharing a room with the user, in
-- the transaction that advances its position, so no change is announced twice or lost across a
-- crash. Each EDU's `prev_id` is the stream id of the update the same destination was sent
-- before for that user, which lets the destination notice a lost update.
ALTER TABLE device_list_changes
    -- The device that changed; NULL for changes that are no device's (cross-signing keys,
    -- signatures on a master key, other servers' users).
    ADD COLUMN device_id TEXT;

CREATE OR REPLACE FUNCTION note_device_list_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    pos BIGINT;
    changed_user TEXT;
    device TEXT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed_user := OLD.user_id;
    ELSE
        changed_user := NEW.user_id;
    END IF;
    -- Separate statements: a row type without the field must not be asked for it.
    IF TG_TABLE_NAME = 'e2e_device_keys' THEN
        device := NEW.device_id;
    ELSIF TG_TABLE_NAME = 'devices' AND TG_OP = 'DELETE' THEN
        device := OLD.device_id;
    ELSIF TG_TABLE_NAME = 'devices' THEN
        device := NEW.device_id;
    ELSIF TG_TABLE_NAME = 'e2e_key_signatures' THEN
        -- A signature on a device (not on the master key) changes what the device's keys show.
        SELECT d.device_id INTO device FROM devices d
        WHERE d.user_id = NEW.user_id AND d.device_id = NEW.target_key_id;
    END IF;
    -- The stream head's row lock, held until commit, orders the positions by commit.
    UPDATE stream_heads SET position = position + 1 WHERE stream = 'device_lists' RETURNING position INTO pos;
    INSERT INTO device_list_changes (stream_id, user_id, device_id) VALUES (pos, changed_user, device);
    PERFORM pg_notify('poststelle_streams', 'device_lists ' || pos);
    RETURN NULL;
END;
$$;

-- A new display name is a change other servers are told about, too.
CREATE TRIGGER devices_renamed_changes_device_list AFTER UPDATE OF display_name ON devices
    FOR EACH ROW WHEN (OLD.display_name IS DISTINCT FROM NEW.display_name)
    EXECUTE FUNCTION note_device_list_change();

INSERT INTO stream_consumers (name, position)
SELECT 'device_lists_federation', position FROM stream_heads WHERE stream = 'device_lists';

-- Per destination and local user: the stream id of the last update queued for that
-- destination, the next update's `prev_id`.
CREATE TABLE device_list_outbound (
    destination    TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    stream_id      BIGINT NOT NULL,
    PRIMARY KEY (destination, user_id)
);

-- Inbound: the device lists of other servers' users who share a joined room with a user of
-- ours, kept current from their updates. An update whose `prev_id` names a stream id this
-- server has not seen means one was lost: the list is fetched whole again
-- (`/user/devices/{userId}`); until that succeeds it is stale and key queries go to the
-- user's server.
CREATE TABLE remote_device_lists (
    user_id          TEXT PRIMARY KEY,
    -- The latest update applied, or the snapshot's position (the origin's stream ids).
    stream_id        BIGINT NOT NULL,
    stale            BOOLEAN NOT NULL,
    master_key       JSONB,
    self_signing_key JSONB,
    updated_ts       BIGINT NOT NULL
);

CREATE TABLE remote_devices (
    user_id        TEXT NOT NULL REFERENCES remote_device_lists (user_id) ON DELETE CASCADE,
    device_id      TEXT NOT NULL,
    -- The device's signed identity keys; NULL while it has uploaded none.
    keys           JSONB,
    display_name   TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Once no user of ours shares a joined room with a user of another server, that server stops
-- sending us their updates: the list is forgotten, not kept to go stale, and is fetched again
-- when a room is shared again (the first update finds no list). Checked when a join ends.
CREATE FUNCTION forget_untracked_device_lists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM remote_device_lists r
    WHERE (r.user_id = OLD.user_id
           OR r.user_id IN (SELECT m.user_id FROM room_memberships m
                            WHERE m.room_id = OLD.room_id AND m.membership = 'join'))
      AND NOT EXISTS (
          SELECT 1 FROM room_memberships theirs
          JOIN room_memberships mine USING (room_id)
          JOIN users u ON u.user_id = mine.user_id
          WHERE theirs.user_id = r.user_id AND theirs.membership = 'join' AND mine.membership = 'join');
    RETURN NULL;
END;
$$;

CREATE TRIGGER room_memberships_left_forgets_device_lists AFTER UPDATE OF membership ON room_memberships
    FOR EACH ROW WHEN (OLD.membership = 'join' AND NEW.membership <> 'join')
    EXECUTE FUNCTION forget_untracked_device_lists();
CREATE TRIGGER room_memberships_deleted_forgets_device_lists AFTER DELETE ON room_memberships
    FOR EACH ROW WHEN (OLD.membership = 'join')
    EXECUTE FUNCTION forget_untracked_device_lists();
