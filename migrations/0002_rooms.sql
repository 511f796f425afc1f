-- Rooms, events, state and the streams /sync reads.
--
-- Every event is stored as the signed PDU servers exchange (canonical JSON text), with the
-- columns the client API filters on. Positions: `stream_ordering` orders all events of this
-- server in the order they were persisted; it is allocated from `stream_heads` in the last step
-- of the persisting transaction, whose row lock is held until commit, so positions become
-- visible strictly in order and a reader never skips one that commits late.

-- The server's ed25519 signing keys; exactly one is current (expired_ts IS NULL).
CREATE TABLE server_signing_keys (
    key_id         TEXT PRIMARY KEY,
    pkcs8          BYTEA NOT NULL,
    public_key     BYTEA NOT NULL,
    created_ts     BIGINT NOT NULL,
    expired_ts     BIGINT,
    CONSTRAINT server_signing_keys_id CHECK (key_id LIKE 'ed25519:%')
);
CREATE UNIQUE INDEX server_signing_keys_one_current ON server_signing_keys ((expired_ts IS NULL))
    WHERE expired_ts IS NULL;

-- The head position of each stream. Allocating a position takes this row's lock until commit.
CREATE TABLE stream_heads (
    stream         TEXT PRIMARY KEY,
    position       BIGINT NOT NULL
);
INSERT INTO stream_heads (stream, position) VALUES ('events', 0), ('receipts', 0), ('to_device', 0);

CREATE TABLE rooms (
    room_id        TEXT PRIMARY KEY,
    room_version   TEXT NOT NULL,
    creator        TEXT NOT NULL,
    -- Listed in the public room directory.
    is_public      BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts     BIGINT NOT NULL,
    CONSTRAINT rooms_room_id_sigil CHECK (room_id LIKE '!%')
);

-- Interned (type, state_key) pairs, so state snapshots store two integers per entry.
CREATE TABLE state_keys (
    key_nid        BIGSERIAL PRIMARY KEY,
    event_type     TEXT NOT NULL,
    state_key      TEXT NOT NULL,
    UNIQUE (event_type, state_key)
);

-- State snapshots as shared deltas: a snapshot is its parent's state with its own entries laid
-- over it. Events that do not change state share the snapshot of the state they saw, so a
-- snapshot exists per state change, not per event; chains are cut (a full snapshot written) at
-- a bounded depth so reading the state at any event walks a bounded number of rows.
CREATE TABLE state_snapshots (
    snapshot_id    BIGSERIAL PRIMARY KEY,
    room_id        TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    parent_id      BIGINT REFERENCES state_snapshots (snapshot_id),
    -- Number of ancestors; 0 for a full snapshot.
    chain_depth    INT NOT NULL,
    CONSTRAINT state_snapshots_depth CHECK ((parent_id IS NULL) = (chain_depth = 0) AND chain_depth >= 0)
);

CREATE TABLE state_snapshot_entries (
    snapshot_id    BIGINT NOT NULL REFERENCES state_snapshots (snapshot_id) ON DELETE CASCADE,
    key_nid        BIGINT NOT NULL REFERENCES state_keys (key_nid),
    event_id       TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, key_nid)
);

CREATE TABLE events (
    event_id        TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    stream_ordering BIGINT NOT NULL UNIQUE,
    depth           BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    state_key       TEXT,
    sender          TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- The PDU as canonical JSON (without event_id and unsigned).
    pdu             TEXT NOT NULL,
    -- The room state before this event.
    state_before    BIGINT NOT NULL REFERENCES state_snapshots (snapshot_id),
    -- For state events: the room state after this event (state_before for other events).
    state_after     BIGINT NOT NULL REFERENCES state_snapshots (snapshot_id),
    -- The state event this one replaced (for unsigned.prev_content).
    replaces_state  TEXT,
    -- Set when a redaction of this event has been accepted; the event is served redacted.
    redacted_by     TEXT,
    -- m.relates_to of the content, for /relations and /threads.
    relates_to      TEXT,
    rel_type        TEXT,
    -- The device that sent it and its transaction id (for unsigned.transaction_id).
    sender_device   TEXT,
    txn_id          TEXT,
    CONSTRAINT events_event_id_sigil CHECK (event_id LIKE '$%')
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);
CREATE INDEX events_relations ON events (relates_to, rel_type, stream_ordering) WHERE relates_to IS NOT NULL;
CREATE INDEX events_room_state ON events (room_id, stream_ordering) WHERE state_key IS NOT NULL;

-- Idempotent sends: one event per (user, device, transaction id).
CREATE TABLE event_txns (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    txn_id         TEXT NOT NULL,
    event_id       TEXT NOT NULL REFERENCES events (event_id) ON DELETE CASCADE,
    created_ts     BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- The events the next local event builds on (the DAG's forward extremities).
CREATE TABLE room_forward_extremities (
    room_id        TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    event_id       TEXT NOT NULL REFERENCES events (event_id) ON DELETE CASCADE,
    PRIMARY KEY (room_id, event_id)
);

-- The current state of each room (a materialised view of the latest snapshot, for fast reads).
CREATE TABLE room_current_state (
    room_id        TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    event_type     TEXT NOT NULL,
    state_key      TEXT NOT NULL,
    event_id       TEXT NOT NULL REFERENCES events (event_id),
    PRIMARY KEY (room_id, event_type, state_key)
);
CREATE TABLE room_current_snapshot (
    room_id        TEXT PRIMARY KEY REFERENCES rooms (room_id) ON DELETE CASCADE,
    snapshot_id    BIGINT NOT NULL REFERENCES state_snapshots (snapshot_id),
    -- Position of the last event persisted in the room.
    last_stream    BIGINT NOT NULL
);

-- Current membership per (room, user), with the position of the change; `forgotten` hides a
-- left room from the user.
CREATE TABLE room_memberships (
    room_id        TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    user_id        TEXT NOT NULL,
    membership     TEXT NOT NULL,
    event_id       TEXT NOT NULL REFERENCES events (event_id),
    stream_ordering BIGINT NOT NULL,
    sender         TEXT NOT NULL,
    forgotten      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (room_id, user_id),
    CONSTRAINT room_memberships_membership CHECK (membership IN ('join', 'invite', 'leave', 'ban', 'knock'))
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, membership);

-- Room aliases of this server.
CREATE TABLE room_aliases (
    alias          TEXT PRIMARY KEY,
    room_id        TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    creator        TEXT NOT NULL,
    created_ts     BIGINT NOT NULL,
    CONSTRAINT room_aliases_sigil CHECK (alias LIKE '#%:%')
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Read receipts (m.read, m.read.private), one per (room, user, type, thread); a stream.
CREATE TABLE receipts (
    room_id        TEXT NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    user_id        TEXT NOT NULL,
    receipt_type   TEXT NOT NULL,
    -- '' for unthreaded receipts, 'main' or a thread root id for threaded ones.
    thread_id      TEXT NOT NULL DEFAULT '',
    event_id       TEXT NOT NULL,
    ts             BIGINT NOT NULL,
    stream_id      BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_id);

-- To-device messages, deleted once the device has acknowledged them by a later sync token.
CREATE TABLE to_device_messages (
    stream_id      BIGINT NOT NULL,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    sender         TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    content        JSONB NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_id)
);
-- Idempotent sendToDevice per (sender, device, transaction id).
CREATE TABLE to_device_txns (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    txn_id         TEXT NOT NULL,
    created_ts     BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
