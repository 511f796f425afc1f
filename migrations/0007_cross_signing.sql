-- Cross-signing keys of users (master, self-signing, user-signing), as the clients uploaded them
-- (signed JSON). Replacing them is a device-list change for the user's contacts.
CREATE TABLE e2e_cross_signing_keys (
    user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    usage          TEXT NOT NULL,
    key_json       JSONB NOT NULL,
    updated_ts     BIGINT NOT NULL,
    PRIMARY KEY (user_id, usage),
    CONSTRAINT e2e_cross_signing_keys_usage CHECK (usage IN ('master', 'self_signing', 'user_signing'))
);

CREATE TRIGGER e2e_cross_signing_keys_changed AFTER INSERT OR UPDATE ON e2e_cross_signing_keys
    FOR EACH ROW EXECUTE FUNCTION note_device_list_change();
