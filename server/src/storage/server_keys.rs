//! Other servers' verify keys and their last key documents.

use sqlx::PgPool;

use super::StorageResult;

#[derive(Clone, Debug)]
pub struct ServerKeyStore {
    pool: PgPool,
}

/// One verify key of a remote server: current (with `valid_until_ts`) or replaced (`expired_ts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteKey {
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub valid_until_ts: Option<i64>,
    pub expired_ts: Option<i64>,
    pub fetched_ts: i64,
}

/// The last verified document of a server that listed a key.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyDocument {
    pub key_id: String,
    pub document: serde_json::Value,
    pub valid_until_ts: i64,
}

impl ServerKeyStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The known keys of `server`.
    pub async fn keys(&self, server: &str) -> StorageResult<Vec<RemoteKey>> {
        Ok(sqlx::query_as!(
            RemoteKey,
            "SELECT key_id, public_key, valid_until_ts, expired_ts, fetched_ts FROM remote_server_keys
             WHERE server_name = $1 ORDER BY key_id",
            server
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a verified key document and its keys in one transaction: each key takes the
    /// document as the last one that listed it (documents that do not list a key leave its
    /// document alone). A key listed as current takes the document's validity; one listed as
    /// old keeps the earliest expiry reported.
    pub async fn store_document(
        &self,
        server: &str,
        document: &serde_json::Value,
        valid_until_ts: i64,
        fetched_ts: i64,
        keys: &[RemoteKey],
    ) -> StorageResult<()> {
        let mut tx = self.pool.begin().await?;
        for key in keys {
            sqlx::query!(
                "INSERT INTO remote_server_key_json (server_name, key_id, document, valid_until_ts, fetched_ts)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (server_name, key_id) DO UPDATE
                 SET document = EXCLUDED.document, valid_until_ts = EXCLUDED.valid_until_ts,
                     fetched_ts = EXCLUDED.fetched_ts",
                server,
                key.key_id,
                document,
                valid_until_ts,
                fetched_ts
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "INSERT INTO remote_server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (server_name, key_id) DO UPDATE
                 SET public_key = EXCLUDED.public_key,
                     valid_until_ts = COALESCE(EXCLUDED.valid_until_ts, remote_server_keys.valid_until_ts),
                     expired_ts = CASE WHEN EXCLUDED.expired_ts IS NULL THEN NULL
                                       ELSE LEAST(EXCLUDED.expired_ts, remote_server_keys.expired_ts) END,
                     fetched_ts = EXCLUDED.fetched_ts",
                server,
                key.key_id,
                key.public_key,
                key.valid_until_ts,
                key.expired_ts,
                key.fetched_ts
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The last verified key document of each known key of `server`.
    pub async fn documents(&self, server: &str) -> StorageResult<Vec<KeyDocument>> {
        Ok(sqlx::query_as!(
            KeyDocument,
            "SELECT key_id, document, valid_until_ts FROM remote_server_key_json
             WHERE server_name = $1 ORDER BY key_id",
            server
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
