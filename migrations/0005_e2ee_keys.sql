-- End-to-end encryption keys of Olm/Megolm clients: each device's identity keys, its one-time
-- keys (each handed out once, by /keys/claim) and its fallback key per algorithm (handed out
-- when the one-time keys are gone, until the device uploads a new one). Keys are the signed
-- JSON objects the clients uploaded; they go when their device goes.
CREATE TABLE e2e_device_keys (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    keys           JSONB NOT NULL,
    updated_ts     BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE e2e_one_time_keys (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    algorithm      TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    key_json       JSONB NOT NULL,
    -- Upload order: claims hand out the oldest key first.
    seq            BIGSERIAL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX e2e_one_time_keys_claim ON e2e_one_time_keys (user_id, device_id, algorithm, seq);

CREATE TABLE e2e_fallback_keys (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    algorithm      TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    key_json       JSONB NOT NULL,
    -- Handed out by a claim since it was uploaded.
    used           BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
