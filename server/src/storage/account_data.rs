//! Account data (global and per room) and sync filters.

use serde_json::Value as JsonValue;
use sqlx::PgPool;

use super::StorageResult;

#[derive(Clone, Debug)]
pub struct AccountDataStore {
    pool: PgPool,
}

/// One account-data entry with its stream position.
#[derive(Clone, Debug)]
pub struct AccountDataEntry {
    pub room_id: String,
    pub data_type: String,
    pub content: JsonValue,
    pub stream_id: i64,
}

impl AccountDataStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Sets `data_type` for the user (`room_id` empty: global); returns the new stream position.
    pub async fn set(&self, user_id: &str, room_id: &str, data_type: &str, content: &JsonValue) -> StorageResult<i64> {
        let mut tx = self.pool.begin().await?;
        // One writer per user at a time: positions are then committed in the order they were
        // drawn, so a sync that has seen position n never misses an entry below n.
        sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended('account_data:' || $1, 0))", user_id)
            .execute(&mut *tx)
            .await?;
        let pos = sqlx::query_scalar!(
            "INSERT INTO account_data (user_id, room_id, data_type, content)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, room_id, data_type) DO UPDATE
             SET content = EXCLUDED.content, stream_id = nextval('account_data_stream_seq')
             RETURNING stream_id",
            user_id,
            room_id,
            data_type,
            content
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query!("SELECT pg_notify('poststelle_streams', 'account_data')").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(pos)
    }

    pub async fn get(&self, user_id: &str, room_id: &str, data_type: &str) -> StorageResult<Option<JsonValue>> {
        Ok(sqlx::query_scalar!(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
            user_id,
            room_id,
            data_type
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Entries changed after stream position `since` (0: all), in stream order.
    pub async fn changed_since(&self, user_id: &str, since: i64) -> StorageResult<Vec<AccountDataEntry>> {
        Ok(sqlx::query_as!(
            AccountDataEntry,
            "SELECT room_id, data_type, content, stream_id FROM account_data
             WHERE user_id = $1 AND stream_id > $2 ORDER BY stream_id",
            user_id,
            since
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a filter under the next free id for the user.
    pub async fn create_filter(&self, user_id: &str, filter: &JsonValue) -> StorageResult<i64> {
        let mut tx = self.pool.begin().await?;
        // Serialise id allocation per user; the primary key catches anything that slips by.
        sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('filters:' || $1))", user_id).execute(&mut *tx).await?;
        let id = sqlx::query_scalar!(
            r#"INSERT INTO filters (user_id, filter_id, filter)
               SELECT $1, COALESCE(MAX(filter_id) + 1, 0), $2 FROM filters WHERE user_id = $1
               RETURNING filter_id"#,
            user_id,
            filter
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn filter(&self, user_id: &str, filter_id: i64) -> StorageResult<Option<JsonValue>> {
        Ok(sqlx::query_scalar!("SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2", user_id, filter_id)
            .fetch_optional(&self.pool)
            .await?)
    }
}
