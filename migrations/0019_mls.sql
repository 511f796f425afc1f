-- MLS rooms ordered by this server (the hub): the public state of each group, one row per
-- accepted commit, Welcomes waiting to be delivered, and the server's external-sender key.

-- The key the server signs MLS Remove proposals with (one row; shared by every process on the
-- database).
CREATE TABLE mls_server_key (
    singleton      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    key_pair       BYTEA NOT NULL,
    created_ts     BIGINT NOT NULL
);

CREATE TABLE mls_groups (
    room_id        TEXT PRIMARY KEY REFERENCES rooms (room_id) ON DELETE CASCADE,
    algorithm      TEXT NOT NULL CHECK (algorithm LIKE 'm.mls.v1.%'),
    epoch          BIGINT NOT NULL CHECK (epoch >= 0),
    -- The group's public state (openmls PublicGroup storage), as the last accepted commit left it.
    state          BYTEA NOT NULL,
    -- The latest GroupInfo a member signed, base64, for members that resynchronise.
    group_info     TEXT NOT NULL,
    -- Remove proposals the server made that the next commit must carry out (base64 MLS messages).
    pending_proposals JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(pending_proposals) = 'array'),
    updated_ts     BIGINT NOT NULL
);

-- Exactly one commit per epoch: `epoch` is the epoch the commit starts (0 for the group's
-- creation), and the hash makes an identical resubmission recognisable.
CREATE TABLE mls_commits (
    room_id        TEXT NOT NULL REFERENCES mls_groups (room_id) ON DELETE CASCADE,
    epoch          BIGINT NOT NULL CHECK (epoch >= 0),
    event_id       TEXT NOT NULL,
    sha256         BYTEA NOT NULL,
    sender         TEXT NOT NULL,
    PRIMARY KEY (room_id, epoch)
);
CREATE UNIQUE INDEX mls_commits_by_hash ON mls_commits (room_id, sha256);

-- Welcomes of accepted commits not yet handed to the to-device streams; written in the
-- transaction that accepts the commit, removed once delivered, so a crash between the two
-- delivers after the restart.
CREATE TABLE mls_welcome_outbox (
    room_id        TEXT NOT NULL,
    epoch          BIGINT NOT NULL,
    sender         TEXT NOT NULL,
    sender_device  TEXT NOT NULL,
    -- [[user_id, device_id], ...] the Welcome is for.
    recipients     JSONB NOT NULL CHECK (jsonb_typeof(recipients) = 'array'),
    content        JSONB NOT NULL,
    created_ts     BIGINT NOT NULL,
    PRIMARY KEY (room_id, epoch),
    FOREIGN KEY (room_id, epoch) REFERENCES mls_commits (room_id, epoch) ON DELETE CASCADE
);
