//! The server's signing keys.

use sqlx::PgPool;

use super::StorageResult;

#[derive(Clone, Debug)]
pub struct KeyStore {
    pool: PgPool,
}

/// A stored signing key.
#[derive(Clone)]
pub struct StoredKey {
    pub key_id: String,
    pub pkcs8: Vec<u8>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl KeyStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The current key, if one exists.
    pub async fn current(&self) -> StorageResult<Option<StoredKey>> {
        Ok(sqlx::query_as!(StoredKey, "SELECT key_id, pkcs8 FROM server_signing_keys WHERE expired_ts IS NULL")
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Stores a new current key unless another process stored one first (the unique index on the
    /// current key decides); returns whether this one was stored.
    pub async fn insert_current(&self, key_id: &str, pkcs8: &[u8], public_key: &[u8], now: i64) -> StorageResult<bool> {
        Ok(sqlx::query!(
            "INSERT INTO server_signing_keys (key_id, pkcs8, public_key, created_ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            key_id,
            pkcs8,
            public_key,
            now
        )
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }

    /// Keys that signed before the current one: `(key id, public key, expired at)`.
    pub async fn old_keys(&self) -> StorageResult<Vec<(String, Vec<u8>, i64)>> {
        let rows = sqlx::query!(
            r#"SELECT key_id, public_key, expired_ts AS "expired_ts!" FROM server_signing_keys
               WHERE expired_ts IS NOT NULL ORDER BY expired_ts"#
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.key_id, r.public_key, r.expired_ts)).collect())
    }

    /// Retires the current key at `now` and makes a new one current, in one transaction.
    pub async fn rotate(&self, key_id: &str, pkcs8: &[u8], public_key: &[u8], now: i64) -> StorageResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("UPDATE server_signing_keys SET expired_ts = $1 WHERE expired_ts IS NULL", now)
            .execute(&mut *tx)
            .await?;
        sqlx::query!(
            "INSERT INTO server_signing_keys (key_id, pkcs8, public_key, created_ts) VALUES ($1, $2, $3, $4)",
            key_id,
            pkcs8,
            public_key,
            now
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
