-- The device-list stream: a position for every change of a user's devices that other users'
-- clients must learn about (identity keys uploaded or replaced, a device deleted), so /sync and
-- /keys/changes can tell them whose keys to query again. Written by triggers, so no code path
-- that changes devices or keys can forget it.
INSERT INTO stream_heads (stream, position) VALUES ('device_lists', 0);

CREATE TABLE device_list_changes (
    stream_id      BIGINT PRIMARY KEY,
    user_id        TEXT NOT NULL
);
CREATE INDEX device_list_changes_user ON device_list_changes (user_id, stream_id);

CREATE FUNCTION note_device_list_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    pos BIGINT;
BEGIN
    -- The stream head's row lock, held until commit, orders the positions by commit.
    UPDATE stream_heads SET position = position + 1 WHERE stream = 'device_lists' RETURNING position INTO pos;
    INSERT INTO device_list_changes (stream_id, user_id)
    VALUES (pos, CASE WHEN TG_OP = 'DELETE' THEN OLD.user_id ELSE NEW.user_id END);
    PERFORM pg_notify('poststelle_streams', 'device_lists ' || pos);
    RETURN NULL;
END;
$$;

CREATE TRIGGER e2e_device_keys_changed AFTER INSERT OR UPDATE ON e2e_device_keys
    FOR EACH ROW EXECUTE FUNCTION note_device_list_change();
CREATE TRIGGER devices_deleted_changes_device_list AFTER DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION note_device_list_change();
