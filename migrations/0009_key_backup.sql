-- Server-side key backup (/room_keys): a user's backup versions, each with the room keys the
-- clients stored in it, encrypted by the clients (the server sees only the metadata it needs to
-- keep the best copy of each session). `etag` changes whenever a version's keys change.
CREATE TABLE e2e_room_keys_versions (
    user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    version        BIGINT NOT NULL,
    algorithm      TEXT NOT NULL,
    auth_data      JSONB NOT NULL,
    etag           BIGINT NOT NULL DEFAULT 0,
    deleted        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version),
    CONSTRAINT e2e_room_keys_versions_positive CHECK (version > 0)
);

CREATE TABLE e2e_room_keys (
    user_id             TEXT NOT NULL,
    version             BIGINT NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count     BIGINT NOT NULL,
    is_verified         BOOLEAN NOT NULL,
    session_data        JSONB NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES e2e_room_keys_versions (user_id, version) ON DELETE CASCADE
);
