-- Verify keys of other servers, as their key documents (or notaries) published them: the cache
-- behind X-Matrix request authentication and PDU signature checks. A current key carries the
-- document's valid_until_ts; a key the server replaced (old_verify_keys) carries expired_ts.
CREATE TABLE remote_server_keys (
    server_name    TEXT NOT NULL CHECK (server_name <> ''),
    key_id         TEXT NOT NULL CHECK (key_id LIKE 'ed25519:_%'),
    public_key     BYTEA NOT NULL CHECK (octet_length(public_key) = 32),
    valid_until_ts BIGINT CHECK (valid_until_ts >= 0),
    expired_ts     BIGINT CHECK (expired_ts >= 0),
    fetched_ts     BIGINT NOT NULL CHECK (fetched_ts >= 0),
    PRIMARY KEY (server_name, key_id),
    CONSTRAINT remote_server_keys_validity CHECK (valid_until_ts IS NOT NULL OR expired_ts IS NOT NULL)
);

-- The last verified key document of each server, exactly as signed, which the notary endpoints
-- serve again with our signature added.
CREATE TABLE remote_server_key_documents (
    server_name    TEXT PRIMARY KEY CHECK (server_name <> ''),
    document       JSONB NOT NULL CHECK (jsonb_typeof(document) = 'object'),
    valid_until_ts BIGINT NOT NULL CHECK (valid_until_ts >= 0),
    fetched_ts     BIGINT NOT NULL CHECK (fetched_ts >= 0)
);
