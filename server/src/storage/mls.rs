//! What the MLS hub reads outside a room's write transaction: its external-sender key, the
//! latest GroupInfo of a group, the rooms it orders, and the Welcome outbox.

use sqlx::PgPool;

use super::StorageResult;

#[derive(Clone, Debug)]
pub struct MlsStore {
    pool: PgPool,
}

/// The latest public facts of a group, for its members.
#[derive(Debug)]
pub struct GroupInfoRow {
    pub algorithm: String,
    pub epoch: i64,
    pub group_info: String,
    pub pending_proposals: Vec<String>,
}

/// A Welcome waiting for delivery.
#[derive(Debug)]
pub struct OutboxRow {
    pub room_id: String,
    pub epoch: i64,
    pub sender: String,
    pub sender_device: String,
    pub recipients: serde_json::Value,
    pub content: serde_json::Value,
}

impl MlsStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The stored external-sender key; stores `candidate` first if there is none yet (the first
    /// process to start wins, every process then uses the same key).
    pub async fn server_key(&self, candidate: &[u8], now: i64) -> StorageResult<Vec<u8>> {
        sqlx::query!(
            "INSERT INTO mls_server_key (singleton, key_pair, created_ts) VALUES (TRUE, $1, $2) ON CONFLICT DO NOTHING",
            candidate,
            now
        )
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar!("SELECT key_pair FROM mls_server_key").fetch_one(&self.pool).await?)
    }

    pub async fn group_info(&self, room_id: &str) -> StorageResult<Option<GroupInfoRow>> {
        let row = sqlx::query!(
            "SELECT algorithm, epoch, group_info, pending_proposals FROM mls_groups WHERE room_id = $1",
            room_id
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| GroupInfoRow {
            algorithm: r.algorithm,
            epoch: r.epoch,
            group_info: r.group_info,
            pending_proposals: serde_json::from_value(r.pending_proposals).unwrap_or_default(),
        }))
    }

    /// Rooms whose group this server orders and in which the user is (or was) a member, for
    /// removing their devices.
    pub async fn hub_rooms_of(&self, user_id: &str) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            "SELECT g.room_id FROM mls_groups g JOIN room_memberships m ON m.room_id = g.room_id
             WHERE m.user_id = $1 ORDER BY g.room_id",
            user_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Welcomes not delivered yet, oldest first.
    pub async fn welcome_outbox(&self, limit: i64) -> StorageResult<Vec<OutboxRow>> {
        Ok(sqlx::query_as!(
            OutboxRow,
            "SELECT room_id, epoch, sender, sender_device, recipients, content FROM mls_welcome_outbox
             ORDER BY created_ts, room_id, epoch LIMIT $1",
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn welcome_delivered(&self, room_id: &str, epoch: i64) -> StorageResult<()> {
        sqlx::query!("DELETE FROM mls_welcome_outbox WHERE room_id = $1 AND epoch = $2", room_id, epoch)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
