//! The media repository's index (migration 0010): which media ids exist, who uploaded them,
//! which content file (by SHA-256) each names, and the thumbnails generated from them. The files
//! themselves are kept by `service::media::ContentStore`.

use sqlx::PgPool;

use super::{StorageError, StorageResult, now_ms};

/// A media id as the index knows it.
#[derive(Clone, Debug)]
pub struct MediaRecord {
    pub origin: String,
    pub media_id: String,
    pub uploader: Option<String>,
    pub content_type: Option<String>,
    pub file_name: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub created_ts: i64,
    pub unused_expires_ts: Option<i64>,
    pub quarantined_by: Option<String>,
}

impl MediaRecord {
    /// The content's hash once it is uploaded.
    pub fn content(&self) -> Option<(&str, i64)> {
        Some((self.sha256.as_deref()?, self.size_bytes?))
    }
}

/// A cached thumbnail.
#[derive(Clone, Debug)]
pub struct ThumbnailRecord {
    pub width: i32,
    pub height: i32,
    pub method: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
}

/// The content an uploaded file became.
#[derive(Clone, Copy, Debug)]
pub struct StoredContent<'a> {
    pub sha256: &'a str,
    pub size_bytes: i64,
    pub content_type: Option<&'a str>,
    pub file_name: Option<&'a str>,
}

/// What filling a reserved media id came to.
#[derive(Debug, PartialEq, Eq)]
pub enum FillOutcome {
    Filled,
    /// No such reservation (or it expired).
    Unknown,
    /// Reserved by another user.
    NotOwner,
    /// Already uploaded.
    AlreadyUploaded,
}

#[derive(Clone, Debug)]
pub struct MediaStore {
    pool: PgPool,
}

impl MediaStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Reserves a media id for an asynchronous upload, unless the user already holds `max_pending`
    /// unexpired reservations (then `false`). Expired reservations of the user are dropped first.
    pub async fn reserve(
        &self,
        origin: &str,
        media_id: &str,
        uploader: &str,
        expires_ts: i64,
        max_pending: i64,
    ) -> StorageResult<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Serialises one user's reservations so two concurrent ones cannot both pass the count.
        sqlx::query!("SELECT user_id FROM users WHERE user_id = $1 FOR UPDATE", uploader)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query!(
            "DELETE FROM media WHERE uploader = $1 AND sha256 IS NULL AND unused_expires_ts <= $2",
            uploader,
            now
        )
        .execute(&mut *tx)
        .await?;
        let pending = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM media WHERE uploader = $1 AND sha256 IS NULL"#,
            uploader
        )
        .fetch_one(&mut *tx)
        .await?;
        if pending >= max_pending {
            return Ok(false);
        }
        sqlx::query!(
            r#"INSERT INTO media (origin, media_id, uploader, created_ts, unused_expires_ts)
               VALUES ($1, $2, $3, $4, $5)"#,
            origin,
            media_id,
            uploader,
            now,
            expires_ts
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Drops reserved media ids whose upload never came; how many.
    pub async fn purge_expired_reservations(&self) -> StorageResult<u64> {
        let done = sqlx::query!("DELETE FROM media WHERE sha256 IS NULL AND unused_expires_ts <= $1", now_ms())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn get(&self, origin: &str, media_id: &str) -> StorageResult<Option<MediaRecord>> {
        Ok(sqlx::query_as!(
            MediaRecord,
            r#"SELECT origin, media_id, uploader, content_type, file_name, size_bytes, sha256, created_ts,
                      unused_expires_ts, quarantined_by
               FROM media WHERE origin = $1 AND media_id = $2"#,
            origin,
            media_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A cached thumbnail of exactly this size and method.
    pub async fn thumbnail(
        &self,
        origin: &str,
        media_id: &str,
        width: i32,
        height: i32,
        method: &str,
    ) -> StorageResult<Option<ThumbnailRecord>> {
        Ok(sqlx::query_as!(
            ThumbnailRecord,
            r#"SELECT width, height, method, content_type, size_bytes, sha256 FROM media_thumbnails
               WHERE origin = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5"#,
            origin,
            media_id,
            width,
            height,
            method
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes media rows (with their thumbnails); returns the ids deleted and the content hashes
    /// they named, whose files may go once no row refers to them (checked under `lock_content`).
    pub async fn delete(&self, origin: &str, media_ids: &[String]) -> StorageResult<(Vec<String>, Vec<String>)> {
        let deleted = sqlx::query!(
            r#"WITH gone_thumbs AS (
                   DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = ANY($2) RETURNING sha256
               ), gone AS (
                   DELETE FROM media WHERE origin = $1 AND media_id = ANY($2) RETURNING media_id, sha256
               )
               SELECT media_id AS "media_id?", sha256 FROM gone
               UNION ALL SELECT NULL, sha256 FROM gone_thumbs"#,
            origin,
            media_ids
        )
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<String> = deleted.iter().filter_map(|r| r.media_id.clone()).collect();
        let mut hashes: Vec<String> = deleted.into_iter().filter_map(|r| r.sha256).collect();
        hashes.sort();
        hashes.dedup();
        Ok((ids, hashes))
    }

    /// Media ids a user uploaded, newest first.
    pub async fn by_uploader(
        &self,
        origin: &str,
        uploader: &str,
        limit: i64,
        from: i64,
    ) -> StorageResult<Vec<MediaRecord>> {
        Ok(sqlx::query_as!(
            MediaRecord,
            r#"SELECT origin, media_id, uploader, content_type, file_name, size_bytes, sha256, created_ts,
                      unused_expires_ts, quarantined_by
               FROM media WHERE origin = $1 AND uploader = $2
               ORDER BY created_ts DESC, media_id LIMIT $3 OFFSET $4"#,
            origin,
            uploader,
            limit,
            from
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn count_by_uploader(&self, origin: &str, uploader: &str) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM media WHERE origin = $1 AND uploader = $2"#,
            origin,
            uploader
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Sets or clears the quarantine of one media id; false if there is none.
    pub async fn set_quarantine(&self, origin: &str, media_id: &str, by: Option<&str>) -> StorageResult<bool> {
        let done = sqlx::query!(
            "UPDATE media SET quarantined_by = $3 WHERE origin = $1 AND media_id = $2",
            origin,
            media_id,
            by
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Quarantines every media id a user uploaded; how many were newly quarantined.
    pub async fn quarantine_uploader(&self, uploader: &str, by: &str) -> StorageResult<u64> {
        let done = sqlx::query!(
            "UPDATE media SET quarantined_by = $2 WHERE uploader = $1 AND quarantined_by IS NULL",
            uploader,
            by
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// A transaction holding the lock of one content hash: files are placed and removed, and rows
/// naming them written, only under it, so a deletion and an upload of the same content cannot
/// interleave into a row without its file.
#[derive(Debug)]
pub struct ContentLock {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

/// Advisory-lock class of media content (the two-key form keeps it apart from room locks).
const CONTENT_LOCK_CLASS: i32 = 0x6d65_6469;

fn content_lock_key(sha256: &str) -> i32 {
    u32::from_str_radix(sha256.get(..8).unwrap_or("0"), 16).unwrap_or_default() as i32
}

impl MediaStore {
    pub async fn lock_content(&self, sha256: &str) -> StorageResult<ContentLock> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("SELECT pg_advisory_xact_lock($1, $2)", CONTENT_LOCK_CLASS, content_lock_key(sha256))
            .execute(&mut *tx)
            .await?;
        Ok(ContentLock { tx })
    }
}

impl ContentLock {
    /// Records a completed upload under a new media id (no uploader: fetched by the server).
    pub async fn insert_uploaded(
        &mut self,
        origin: &str,
        media_id: &str,
        uploader: Option<&str>,
        content: StoredContent<'_>,
    ) -> StorageResult<()> {
        let now = now_ms();
        // Another server's media of which only thumbnails were held gets its original.
        let done = sqlx::query!(
            r#"INSERT INTO media (origin, media_id, uploader, content_type, file_name, size_bytes, sha256,
                                  created_ts, uploaded_ts)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
               ON CONFLICT (origin, media_id) DO UPDATE
               SET content_type = EXCLUDED.content_type, file_name = EXCLUDED.file_name,
                   size_bytes = EXCLUDED.size_bytes, sha256 = EXCLUDED.sha256,
                   uploaded_ts = EXCLUDED.uploaded_ts, thumbnails_only = FALSE
               WHERE media.thumbnails_only"#,
            origin,
            media_id,
            uploader,
            content.content_type,
            content.file_name,
            content.size_bytes,
            content.sha256,
            now
        )
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::Conflict("media_pkey".into()));
        }
        Ok(())
    }

    /// Holds another server's media id for thumbnails fetched without its original.
    pub async fn insert_thumbnails_only(&mut self, origin: &str, media_id: &str) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO media (origin, media_id, created_ts, thumbnails_only) VALUES ($1, $2, $3, TRUE)
             ON CONFLICT (origin, media_id) DO NOTHING",
            origin,
            media_id,
            now_ms()
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Fills a reserved media id with uploaded content, if `uploader` reserved it and it is
    /// neither uploaded nor expired.
    pub async fn fill_reserved(
        &mut self,
        origin: &str,
        media_id: &str,
        uploader: &str,
        content: StoredContent<'_>,
    ) -> StorageResult<FillOutcome> {
        let now = now_ms();
        let row = sqlx::query!(
            r#"SELECT uploader, sha256, unused_expires_ts FROM media WHERE origin = $1 AND media_id = $2 FOR UPDATE"#,
            origin,
            media_id
        )
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row else { return Ok(FillOutcome::Unknown) };
        if row.sha256.is_some() {
            return Ok(FillOutcome::AlreadyUploaded);
        }
        if row.unused_expires_ts.is_some_and(|t| t <= now) {
            return Ok(FillOutcome::Unknown);
        }
        if row.uploader.as_deref() != Some(uploader) {
            return Ok(FillOutcome::NotOwner);
        }
        sqlx::query!(
            r#"UPDATE media SET content_type = $3, file_name = $4, size_bytes = $5, sha256 = $6, uploaded_ts = $7,
                                unused_expires_ts = NULL
               WHERE origin = $1 AND media_id = $2"#,
            origin,
            media_id,
            content.content_type,
            content.file_name,
            content.size_bytes,
            content.sha256,
            now
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(FillOutcome::Filled)
    }

    /// Records a generated thumbnail (a concurrent twin of it is kept instead).
    pub async fn insert_thumbnail(&mut self, origin: &str, media_id: &str, t: &ThumbnailRecord) -> StorageResult<()> {
        sqlx::query!(
            r#"INSERT INTO media_thumbnails (origin, media_id, width, height, method, content_type, size_bytes, sha256)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (origin, media_id, width, height, method) DO NOTHING"#,
            origin,
            media_id,
            t.width,
            t.height,
            t.method,
            t.content_type,
            t.size_bytes,
            t.sha256
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Whether any media row or thumbnail still names this content.
    pub async fn is_referenced(&mut self, sha256: &str) -> StorageResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM media WHERE sha256 = $1)
                   OR EXISTS (SELECT 1 FROM media_thumbnails WHERE sha256 = $1) AS "used!""#,
            sha256
        )
        .fetch_one(&mut *self.tx)
        .await?)
    }

    pub async fn commit(self) -> StorageResult<()> {
        self.tx.commit().await?;
        Ok(())
    }
}
