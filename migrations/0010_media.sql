-- The media repository. File contents live under `data_dir/media/` named by their SHA-256, so
-- identical uploads share one file; these rows say which media ids exist, who uploaded them and
-- how to serve them. A row without `sha256` is an id reserved by `/media/v1/create` and not yet
-- uploaded (asynchronous upload); it expires at `unused_expires_ts`.
CREATE TABLE media (
    origin            TEXT NOT NULL,
    media_id          TEXT NOT NULL,
    uploader          TEXT REFERENCES users (user_id) ON DELETE SET NULL,
    content_type      TEXT,
    file_name         TEXT,
    size_bytes        BIGINT,
    sha256            TEXT,
    created_ts        BIGINT NOT NULL,
    uploaded_ts       BIGINT,
    unused_expires_ts BIGINT,
    quarantined_by    TEXT,
    PRIMARY KEY (origin, media_id),
    CONSTRAINT media_upload_complete CHECK ((sha256 IS NULL) = (size_bytes IS NULL) AND (sha256 IS NULL) = (uploaded_ts IS NULL)),
    CONSTRAINT media_pending_expires CHECK (sha256 IS NOT NULL OR unused_expires_ts IS NOT NULL),
    CONSTRAINT media_size_nonnegative CHECK (size_bytes >= 0),
    CONSTRAINT media_sha256_hex CHECK (sha256 ~ '^[0-9a-f]{64}$')
);

-- Files still referenced when a row is deleted; pending reservations per uploader.
CREATE INDEX media_by_sha256 ON media (sha256) WHERE sha256 IS NOT NULL;
CREATE INDEX media_by_uploader ON media (uploader, created_ts);
CREATE INDEX media_reservations_by_expiry ON media (unused_expires_ts) WHERE sha256 IS NULL;

-- Thumbnails generated on demand, cached in the same content-addressed store.
CREATE TABLE media_thumbnails (
    origin       TEXT NOT NULL,
    media_id     TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    method       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method),
    FOREIGN KEY (origin, media_id) REFERENCES media (origin, media_id) ON DELETE CASCADE,
    CONSTRAINT media_thumbnails_method CHECK (method IN ('crop', 'scale')),
    CONSTRAINT media_thumbnails_sha256_hex CHECK (sha256 ~ '^[0-9a-f]{64}$')
);

CREATE INDEX media_thumbnails_by_sha256 ON media_thumbnails (sha256);
