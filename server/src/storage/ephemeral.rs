//! Receipts and to-device messages: streams that are not room events.

use serde_json::Value as JsonValue;
use sqlx::PgPool;

use super::StorageResult;

#[derive(Clone, Debug)]
pub struct EphemeralStore {
    pool: PgPool,
}

#[derive(Clone, Debug)]
pub struct ReceiptRow {
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
    pub stream_id: i64,
}

#[derive(Clone, Debug)]
pub struct ToDeviceRow {
    pub stream_id: i64,
    pub sender: String,
    pub event_type: String,
    pub content: JsonValue,
}

impl EphemeralStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores a receipt (replacing the user's previous one of that type and thread) at the next
    /// receipts position; returns the position.
    pub async fn put_receipt(
        &self,
        room_id: &str,
        user_id: &str,
        receipt_type: &str,
        thread_id: &str,
        event_id: &str,
        ts: i64,
    ) -> StorageResult<i64> {
        let mut tx = self.pool.begin().await?;
        let pos = sqlx::query_scalar!(
            "UPDATE stream_heads SET position = position + 1 WHERE stream = 'receipts' RETURNING position"
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query!(
            "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE
             SET event_id = EXCLUDED.event_id, ts = EXCLUDED.ts, stream_id = EXCLUDED.stream_id",
            room_id,
            user_id,
            receipt_type,
            thread_id,
            event_id,
            ts,
            pos
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!("SELECT pg_notify('poststelle_streams', 'receipts')").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(pos)
    }

    /// Receipts in the given rooms changed in `(from, to]` (all current ones when `from` is 0).
    pub async fn receipts_since(&self, room_ids: &[String], from: i64, to: i64) -> StorageResult<Vec<ReceiptRow>> {
        Ok(sqlx::query_as!(
            ReceiptRow,
            "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, stream_id FROM receipts
             WHERE room_id = ANY($1) AND stream_id > $2 AND stream_id <= $3 ORDER BY stream_id",
            room_ids,
            from,
            to
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// A user's own receipt positions in a room (for unread counts).
    pub async fn read_up_to(&self, room_id: &str, user_id: &str) -> StorageResult<Option<i64>> {
        Ok(sqlx::query_scalar!(
            r#"SELECT MAX(e.stream_ordering) AS "pos" FROM receipts r JOIN events e USING (event_id)
               WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private')"#,
            room_id,
            user_id
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Queues to-device messages for many devices at one position, idempotently per
    /// (sender, sender device, transaction id). Returns `false` for a repeated transaction.
    pub async fn send_to_device(
        &self,
        sender: &str,
        sender_device: &str,
        txn_id: &str,
        event_type: &str,
        messages: &[(String, String, JsonValue)],
        now: i64,
    ) -> StorageResult<bool> {
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query!(
            "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            sender,
            sender_device,
            txn_id,
            now
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !fresh {
            return Ok(false);
        }
        let pos = sqlx::query_scalar!(
            "UPDATE stream_heads SET position = position + 1 WHERE stream = 'to_device' RETURNING position"
        )
        .fetch_one(&mut *tx)
        .await?;
        for (user_id, device_id, content) in messages {
            sqlx::query!(
                "INSERT INTO to_device_messages (stream_id, user_id, device_id, sender, event_type, content)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                pos,
                user_id,
                device_id,
                sender,
                event_type,
                content
            )
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query!("SELECT pg_notify('poststelle_streams', 'to_device')").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes what the device acknowledged (positions ≤ `upto`) and returns the next messages
    /// with positions in `(upto, to]`, oldest first.
    pub async fn to_device(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
        to: i64,
        limit: i64,
    ) -> StorageResult<Vec<ToDeviceRow>> {
        // What the token acknowledges goes, in the same statement that reads what follows it
        // (the two ranges do not overlap, so the read is unaffected by the delete).
        Ok(sqlx::query_as!(
            ToDeviceRow,
            "WITH acknowledged AS (
                 DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3)
             SELECT stream_id, sender, event_type, content FROM to_device_messages
             WHERE user_id = $1 AND device_id = $2 AND stream_id > $3 AND stream_id <= $4
             ORDER BY stream_id LIMIT $5",
            user_id,
            device_id,
            upto,
            to,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
