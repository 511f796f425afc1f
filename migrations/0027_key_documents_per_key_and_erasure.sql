-- Key documents of other servers, kept per key: the notary answers a question about a key with
-- the last verified document that listed it (as current or old), so a later document without
-- that key (a server that forgot it, or a spurious answer) cannot make it unanswerable.
CREATE TABLE remote_server_key_json (
    server_name    TEXT NOT NULL CHECK (server_name <> ''),
    key_id         TEXT NOT NULL CHECK (key_id LIKE 'ed25519:_%'),
    document       JSONB NOT NULL CHECK (jsonb_typeof(document) = 'object'),
    valid_until_ts BIGINT NOT NULL CHECK (valid_until_ts >= 0),
    fetched_ts     BIGINT NOT NULL CHECK (fetched_ts >= 0),
    PRIMARY KEY (server_name, key_id)
);

INSERT INTO remote_server_key_json (server_name, key_id, document, valid_until_ts, fetched_ts)
SELECT d.server_name, k.key_id, d.document, d.valid_until_ts, d.fetched_ts
FROM remote_server_key_documents d
CROSS JOIN LATERAL (
    SELECT jsonb_object_keys(d.document -> 'verify_keys') AS key_id
    WHERE jsonb_typeof(d.document -> 'verify_keys') = 'object'
    UNION
    SELECT jsonb_object_keys(d.document -> 'old_verify_keys')
    WHERE jsonb_typeof(d.document -> 'old_verify_keys') = 'object'
) k
WHERE k.key_id LIKE 'ed25519:_%'
ON CONFLICT DO NOTHING;

DROP TABLE remote_server_key_documents;

-- Users who asked, when deactivating their account, for their messages to be erased: their
-- events go to other servers redacted from then on. Only a deactivated account is erased.
ALTER TABLE users
    ADD COLUMN erased BOOLEAN NOT NULL DEFAULT FALSE,
    ADD CONSTRAINT users_erased_only_deactivated CHECK (NOT erased OR deactivated);
