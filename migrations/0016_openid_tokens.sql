-- OpenID tokens (`/user/{userId}/openid/request_token`): short-lived, stored as SHA-256 hashes,
-- redeemed by other servers (or integration managers) at `/_matrix/federation/v1/openid/userinfo`.
CREATE TABLE openid_tokens (
    token_hash     BYTEA PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    expires_ts     BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
