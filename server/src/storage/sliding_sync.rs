//! Sliding sync connections and the rooms sent on them (migration 0013), and the facts the room
//! list is sorted and filtered by, for all of a user's rooms in one query.

use sqlx::PgPool;

use super::{StorageResult, now_ms};

/// A room's place in the room list.
#[derive(Clone, Debug)]
pub struct RoomListFacts {
    pub room_id: String,
    /// Stream position of the latest event that moves the room up the list (messages, the
    /// creation, …); the user's membership event position when there is none.
    pub bump_stamp: Option<i64>,
    pub encrypted: bool,
    pub room_type: Option<String>,
}

/// Event types that move a room up the list (as Synapse's "bump event types").
pub const BUMP_EVENT_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// Which rooms a connection has been sent.
#[derive(Clone, Debug)]
pub struct SentRoom {
    pub room_id: String,
    pub sent_pos: i64,
    pub config_hash: i64,
}

#[derive(Clone, Debug)]
pub struct SlidingSyncStore {
    pool: PgPool,
}

impl SlidingSyncStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn room_list_facts(&self, room_ids: &[String]) -> StorageResult<Vec<RoomListFacts>> {
        let bump: Vec<String> = BUMP_EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect();
        Ok(sqlx::query_as!(
            RoomListFacts,
            r#"SELECT r.room_id AS "room_id!",
                      (SELECT e.stream_ordering FROM events e
                       WHERE e.room_id = r.room_id AND e.event_type = ANY($2)
                       ORDER BY e.stream_ordering DESC LIMIT 1) AS bump_stamp,
                      EXISTS (SELECT 1 FROM room_current_state c
                              WHERE c.room_id = r.room_id AND c.event_type = 'm.room.encryption'
                                AND c.state_key = '') AS "encrypted!",
                      (SELECT (e.pdu::jsonb -> 'content' ->> 'type') FROM room_current_state c
                       JOIN events e ON e.event_id = c.event_id
                       WHERE c.room_id = r.room_id AND c.event_type = 'm.room.create' AND c.state_key = '')
                          AS room_type
               FROM unnest($1::text[]) AS r(room_id)"#,
            room_ids,
            &bump
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The connection's last position, or `None` if the server does not know it.
    pub async fn connection(&self, user_id: &str, device_id: &str, conn_id: &str) -> StorageResult<Option<i64>> {
        Ok(sqlx::query_scalar!(
            "SELECT last_pos FROM sliding_sync_connections WHERE user_id = $1 AND device_id = $2 AND conn_id = $3",
            user_id,
            device_id,
            conn_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Starts a connection afresh (a request without `pos`): nothing has been sent on it.
    pub async fn reset_connection(&self, user_id: &str, device_id: &str, conn_id: &str) -> StorageResult<i64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "DELETE FROM sliding_sync_connections WHERE user_id = $1 AND device_id = $2 AND conn_id = $3",
            user_id,
            device_id,
            conn_id
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            r#"INSERT INTO sliding_sync_connections (user_id, device_id, conn_id, last_pos, updated_ts)
               VALUES ($1, $2, $3, 0, $4)"#,
            user_id,
            device_id,
            conn_id,
            now_ms()
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(0)
    }

    pub async fn sent_rooms(&self, user_id: &str, device_id: &str, conn_id: &str) -> StorageResult<Vec<SentRoom>> {
        Ok(sqlx::query_as!(
            SentRoom,
            r#"SELECT room_id, sent_pos, config_hash FROM sliding_sync_rooms
               WHERE user_id = $1 AND device_id = $2 AND conn_id = $3"#,
            user_id,
            device_id,
            conn_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a response: the connection's new position and the rooms it carried.
    pub async fn record_response(
        &self,
        user_id: &str,
        device_id: &str,
        conn_id: &str,
        pos: i64,
        rooms: &[(String, i64)],
    ) -> StorageResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            r#"UPDATE sliding_sync_connections SET last_pos = GREATEST(last_pos, $4), updated_ts = $5
               WHERE user_id = $1 AND device_id = $2 AND conn_id = $3"#,
            user_id,
            device_id,
            conn_id,
            pos,
            now_ms()
        )
        .execute(&mut *tx)
        .await?;
        let ids: Vec<&str> = rooms.iter().map(|(r, _)| r.as_str()).collect();
        let hashes: Vec<i64> = rooms.iter().map(|(_, h)| *h).collect();
        sqlx::query!(
            r#"INSERT INTO sliding_sync_rooms (user_id, device_id, conn_id, room_id, sent_pos, config_hash)
               SELECT $1, $2, $3, r, $4, h FROM unnest($5::text[], $6::bigint[]) AS t(r, h)
               ON CONFLICT (user_id, device_id, conn_id, room_id)
               DO UPDATE SET sent_pos = EXCLUDED.sent_pos, config_hash = EXCLUDED.config_hash"#,
            user_id,
            device_id,
            conn_id,
            pos,
            &ids as &[&str],
            &hashes
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
