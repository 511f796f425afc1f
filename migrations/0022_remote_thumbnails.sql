-- Another server's media can be held as thumbnails only: fetched from its server's
-- `/federation/v1/media/thumbnail` without the original, which is fetched only when a client
-- downloads it. Such a row has no content, no uploader and no expiry.
ALTER TABLE media
    ADD COLUMN thumbnails_only BOOLEAN NOT NULL DEFAULT FALSE,
    DROP CONSTRAINT media_pending_expires,
    ADD CONSTRAINT media_pending_expires CHECK (sha256 IS NOT NULL OR unused_expires_ts IS NOT NULL OR thumbnails_only),
    ADD CONSTRAINT media_thumbnails_only_no_content CHECK (
        NOT thumbnails_only OR (sha256 IS NULL AND uploader IS NULL AND unused_expires_ts IS NULL));
