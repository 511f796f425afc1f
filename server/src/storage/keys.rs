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
}
