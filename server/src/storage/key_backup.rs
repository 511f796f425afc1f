//! Server-side key backup: versions and the room keys stored in them (migration 0009).

use serde_json::Value as JsonValue;
use sqlx::PgPool;

use super::StorageResult;

/// A backup version with its key count and etag.
#[derive(Debug)]
pub struct BackupVersion {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: JsonValue,
    pub etag: i64,
    pub count: i64,
}

/// One session's backed-up key and what decides which copy to keep.
#[derive(Debug)]
pub struct BackedUpKey {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data: JsonValue,
}

#[derive(Clone, Debug)]
pub struct KeyBackupStore {
    pool: PgPool,
}

impl KeyBackupStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates the user's next version (numbers are never reused); its number.
    pub async fn create_version(&self, user_id: &str, algorithm: &str, auth_data: &JsonValue) -> StorageResult<i64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("SELECT user_id FROM users WHERE user_id = $1 FOR UPDATE", user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let version = sqlx::query_scalar!(
            r#"INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data)
               SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3 FROM e2e_room_keys_versions WHERE user_id = $1
               RETURNING version"#,
            user_id,
            algorithm,
            auth_data
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// A version that is not deleted, or the latest one.
    pub async fn version(&self, user_id: &str, version: Option<i64>) -> StorageResult<Option<BackupVersion>> {
        Ok(sqlx::query_as!(
            BackupVersion,
            r#"SELECT v.version, v.algorithm, v.auth_data, v.etag,
                      (SELECT count(*) FROM e2e_room_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
                          AS "count!"
               FROM e2e_room_keys_versions v
               WHERE v.user_id = $1 AND NOT v.deleted AND ($2::bigint IS NULL OR v.version = $2)
               ORDER BY v.version DESC LIMIT 1"#,
            user_id,
            version
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Replaces a version's auth data; false if there is no such version.
    pub async fn update_version(&self, user_id: &str, version: i64, auth_data: &JsonValue) -> StorageResult<bool> {
        let done = sqlx::query!(
            "UPDATE e2e_room_keys_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND NOT deleted",
            user_id,
            version,
            auth_data
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a version and its keys; false if there is no such version.
    pub async fn delete_version(&self, user_id: &str, version: i64) -> StorageResult<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query!(
            "UPDATE e2e_room_keys_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2 AND NOT deleted",
            user_id,
            version
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!("DELETE FROM e2e_room_keys WHERE user_id = $1 AND version = $2", user_id, version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores keys in the user's latest version, `version`, keeping for each session the better
    /// copy: verified over unverified, then the lower first message index, then the fewer
    /// forwards. `None` if `version` is not the latest; else the version's count and etag.
    pub async fn put_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: &[BackedUpKey],
    ) -> StorageResult<Option<(i64, i64)>> {
        let mut tx = self.pool.begin().await?;
        let latest = sqlx::query_scalar!(
            "SELECT version FROM e2e_room_keys_versions WHERE user_id = $1 AND NOT deleted
             ORDER BY version DESC LIMIT 1 FOR UPDATE",
            user_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        if latest != Some(version) {
            return Ok(None);
        }
        for k in keys {
            sqlx::query!(
                "INSERT INTO e2e_room_keys AS o (user_id, version, room_id, session_id, first_message_index,
                                                 forwarded_count, is_verified, session_data)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
                     first_message_index = EXCLUDED.first_message_index,
                     forwarded_count = EXCLUDED.forwarded_count,
                     is_verified = EXCLUDED.is_verified,
                     session_data = EXCLUDED.session_data
                 WHERE (EXCLUDED.is_verified AND NOT o.is_verified)
                    OR (EXCLUDED.is_verified = o.is_verified
                        AND (EXCLUDED.first_message_index < o.first_message_index
                             OR (EXCLUDED.first_message_index = o.first_message_index
                                 AND EXCLUDED.forwarded_count < o.forwarded_count)))",
                user_id,
                version,
                k.room_id,
                k.session_id,
                k.first_message_index,
                k.forwarded_count,
                k.is_verified,
                k.session_data
            )
            .execute(&mut *tx)
            .await?;
        }
        let state = Self::touch(&mut tx, user_id, version).await?;
        tx.commit().await?;
        Ok(Some(state))
    }

    /// The keys of a version, all or of one room or session.
    pub async fn keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> StorageResult<Vec<BackedUpKey>> {
        Ok(sqlx::query_as!(
            BackedUpKey,
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
             FROM e2e_room_keys
             WHERE user_id = $1 AND version = $2 AND ($3::text IS NULL OR room_id = $3)
               AND ($4::text IS NULL OR session_id = $4)
             ORDER BY room_id, session_id",
            user_id,
            version,
            room_id,
            session_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes keys of a version (all, or of one room or session); its count and etag after.
    pub async fn delete_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> StorageResult<(i64, i64)> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "DELETE FROM e2e_room_keys WHERE user_id = $1 AND version = $2 AND ($3::text IS NULL OR room_id = $3)
               AND ($4::text IS NULL OR session_id = $4)",
            user_id,
            version,
            room_id,
            session_id
        )
        .execute(&mut *tx)
        .await?;
        let state = Self::touch(&mut tx, user_id, version).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// Moves a version's etag on; its key count and the new etag.
    async fn touch(tx: &mut sqlx::PgConnection, user_id: &str, version: i64) -> StorageResult<(i64, i64)> {
        let row = sqlx::query!(
            r#"UPDATE e2e_room_keys_versions v SET etag = etag + 1 WHERE user_id = $1 AND version = $2
               RETURNING etag,
                   (SELECT count(*) FROM e2e_room_keys k WHERE k.user_id = $1 AND k.version = $2) AS "count!""#,
            user_id,
            version
        )
        .fetch_one(&mut *tx)
        .await?;
        Ok((row.count, row.etag))
    }
}
