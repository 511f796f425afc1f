//! Where this server's copy of a room's history ends, and the settings in force there: what
//! pagination needs to know before it asks other servers for older events (`/backfill`).

use super::RoomStore;
use crate::storage::{LeaderLock, StorageResult};

/// How many of the oldest timeline events are looked at for unknown predecessors.
const EDGE_EVENTS: i64 = 20;
/// The class of the advisory locks on fetching a room's history.
const HISTORY_LOCK_CLASS: i32 = 0x6869_7374;

/// The history lock's key of a room: the first 4 bytes of SHA-256 over its id.
fn history_lock_key(room_id: &str) -> i32 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(room_id.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

impl RoomStore {
    /// Held while history of the room is fetched and stored, by one session of all processes at
    /// a time, so each batch lands below the one before (released when dropped).
    pub async fn lock_history(&self, room_id: &str) -> StorageResult<LeaderLock> {
        LeaderLock::take(&self.pool, (HISTORY_LOCK_CLASS, history_lock_key(room_id))).await
    }

    /// How many timeline events of the room are at or before `position`, counted up to `enough`.
    pub async fn held_before(&self, room_id: &str, position: i64, enough: i64) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM (
                   SELECT 1 FROM events WHERE room_id = $1 AND NOT outlier AND stream_ordering <= $2 LIMIT $3) held"#,
            room_id,
            position,
            enough
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// The position of the room's oldest timeline event.
    pub async fn oldest_held(&self, room_id: &str) -> StorageResult<Option<i64>> {
        Ok(sqlx::query_scalar!("SELECT MIN(stream_ordering) FROM events WHERE room_id = $1 AND NOT outlier", room_id)
            .fetch_one(&self.pool)
            .await?)
    }

    /// The prev events of the room's oldest timeline events that this server does not hold in
    /// the timeline (nor knows to be rejected): the ends of its copy of the history. Empty
    /// once the history reaches the create event.
    pub async fn history_edge(&self, room_id: &str) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            r#"SELECT DISTINCT p AS "p!" FROM (
                   SELECT prev_events FROM events WHERE room_id = $1 AND NOT outlier
                   ORDER BY stream_ordering LIMIT $2) oldest, unnest(oldest.prev_events) p
               WHERE NOT EXISTS (SELECT 1 FROM events x
                                 WHERE x.event_id = p AND (NOT x.outlier OR x.rejected IS NOT NULL))"#,
            room_id,
            EDGE_EVENTS
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The servers with a member joined in the room, those joined longest first (the likeliest
    /// to hold its oldest history).
    pub async fn servers_by_join(&self, room_id: &str) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            r#"SELECT substring(user_id from position(':' in user_id) + 1) AS "server!"
               FROM room_memberships WHERE room_id = $1 AND membership = 'join'
               GROUP BY 1 ORDER BY MIN(stream_ordering), 1"#,
            room_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether a stored event is outside the timeline.
    pub async fn is_outlier(&self, event_id: &str) -> StorageResult<bool> {
        Ok(sqlx::query_scalar!("SELECT outlier FROM events WHERE event_id = $1", event_id)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(true))
    }

    /// The history of one state key in a room's timeline: `(position, pdu)` in position order,
    /// led by the value in force before the oldest timeline event (at the position just below
    /// it), which the state this server was given on joining may hold without its history.
    pub async fn state_history(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> StorageResult<Vec<(i64, String)>> {
        Ok(sqlx::query!(
            r#"WITH RECURSIVE oldest AS (
                   SELECT stream_ordering, state_before FROM events WHERE room_id = $1 AND NOT outlier
                   ORDER BY stream_ordering LIMIT 1),
               chain(snapshot_id, parent_id, level) AS (
                   SELECT s.snapshot_id, s.parent_id, 0 FROM oldest JOIN state_snapshots s
                   ON s.snapshot_id = oldest.state_before
                 UNION ALL
                   SELECT s.snapshot_id, s.parent_id, c.level + 1 FROM chain c
                   JOIN state_snapshots s ON s.snapshot_id = c.parent_id),
               inherited AS (
                   SELECT x.event_id FROM chain c JOIN state_snapshot_entries x ON x.snapshot_id = c.snapshot_id
                   JOIN state_keys k ON k.key_nid = x.key_nid
                   WHERE k.event_type = $2 AND k.state_key = $3 ORDER BY c.level LIMIT 1)
               SELECT (SELECT stream_ordering - 1 FROM oldest) AS "stream_ordering!", e.pdu AS "pdu!"
               FROM inherited i JOIN events e ON e.event_id = i.event_id
               UNION ALL
               SELECT stream_ordering, pdu FROM events
               WHERE room_id = $1 AND event_type = $2 AND state_key = $3 AND NOT outlier
               ORDER BY 1"#,
            room_id,
            event_type,
            state_key
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.stream_ordering, r.pdu))
        .collect())
    }
}
