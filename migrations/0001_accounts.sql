-- Accounts, devices, sessions and per-user settings: the foundation schema.
-- Timestamps are milliseconds since the Unix epoch (as Matrix uses them).

-- Every per-user change feed shares one position sequence, so a sync token can be one number
-- per stream kind without gaps mattering.
CREATE SEQUENCE account_data_stream_seq;

CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    localpart      TEXT NOT NULL UNIQUE,
    -- argon2id PHC string; NULL for accounts that log in only through JWT/SSO.
    password_hash  TEXT,
    is_admin       BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated    BOOLEAN NOT NULL DEFAULT FALSE,
    displayname    TEXT,
    avatar_url     TEXT,
    created_ts     BIGINT NOT NULL,
    -- Localparts are lower case and use only the characters the spec allows.
    CONSTRAINT users_localpart_grammar CHECK (localpart ~ '^[a-z0-9._=/+-]+$'),
    CONSTRAINT users_user_id_matches CHECK (user_id LIKE '@' || localpart || ':%')
);

CREATE TABLE devices (
    user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    device_id      TEXT NOT NULL,
    display_name   TEXT,
    created_ts     BIGINT NOT NULL,
    last_seen_ts   BIGINT,
    last_seen_ip   TEXT,
    PRIMARY KEY (user_id, device_id),
    CONSTRAINT devices_device_id_nonempty CHECK (length(device_id) BETWEEN 1 AND 255)
);

-- Refresh tokens, stored only as SHA-256 hashes. Using one rotates it: the old row points at
-- its successor and is deleted once the successor is used.
CREATE TABLE refresh_tokens (
    id             BIGSERIAL PRIMARY KEY,
    token_hash     BYTEA NOT NULL UNIQUE,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    next_id        BIGINT REFERENCES refresh_tokens (id) ON DELETE CASCADE,
    created_ts     BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- Access tokens, stored only as SHA-256 hashes; a token belongs to exactly one device.
CREATE TABLE access_tokens (
    token_hash        BYTEA PRIMARY KEY,
    user_id           TEXT NOT NULL,
    device_id         TEXT NOT NULL,
    created_ts        BIGINT NOT NULL,
    -- NULL: does not expire (clients that did not ask for refresh tokens).
    expires_ts        BIGINT,
    refresh_token_id  BIGINT REFERENCES refresh_tokens (id) ON DELETE CASCADE,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

-- Short-lived single-use tokens for m.login.token.
CREATE TABLE login_tokens (
    token_hash     BYTEA PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    expires_ts     BIGINT NOT NULL
);

-- User-interactive authentication sessions.
CREATE TABLE uiaa_sessions (
    session_id     TEXT PRIMARY KEY,
    -- What the session authorises, e.g. 'register' or 'delete_devices'; a session cannot be
    -- reused for another operation.
    purpose        TEXT NOT NULL,
    -- The user the session authenticates (NULL for registration).
    user_id        TEXT,
    -- Stages completed so far, e.g. {m.login.password}.
    completed      TEXT[] NOT NULL DEFAULT '{}',
    -- The registration token used, if any (counted when registration completes).
    registration_token TEXT,
    created_ts     BIGINT NOT NULL,
    expires_ts     BIGINT NOT NULL
);

-- Registration tokens (m.login.registration_token), managed through the admin API.
CREATE TABLE registration_tokens (
    token          TEXT PRIMARY KEY,
    uses_allowed   INTEGER,
    pending        INTEGER NOT NULL DEFAULT 0,
    completed      INTEGER NOT NULL DEFAULT 0,
    expiry_time    BIGINT,
    CONSTRAINT registration_tokens_grammar CHECK (token ~ '^[A-Za-z0-9._~-]{1,64}$'),
    CONSTRAINT registration_tokens_uses CHECK (uses_allowed IS NULL OR uses_allowed >= 0),
    CONSTRAINT registration_tokens_counts CHECK (pending >= 0 AND completed >= 0)
);

-- Global (room_id = '') and per-room account data: the latest content per type, with the
-- stream position of its last change so /sync can ask "what changed since N".
CREATE TABLE account_data (
    user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    room_id        TEXT NOT NULL DEFAULT '',
    data_type      TEXT NOT NULL,
    content        JSONB NOT NULL,
    stream_id      BIGINT NOT NULL DEFAULT nextval('account_data_stream_seq'),
    PRIMARY KEY (user_id, room_id, data_type),
    CONSTRAINT account_data_type_nonempty CHECK (length(data_type) BETWEEN 1 AND 255)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_id);

-- Uploaded sync filters; ids are per user and never reused.
CREATE TABLE filters (
    user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    filter_id      BIGINT NOT NULL,
    filter         JSONB NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- Nonces handed out by the shared-secret admin registration, single use.
CREATE TABLE admin_register_nonces (
    nonce          TEXT PRIMARY KEY,
    created_ts     BIGINT NOT NULL
);
