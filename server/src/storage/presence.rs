//! Presence: one row per user with the `presence` stream position of its last visible change.

use sqlx::PgPool;

use super::StorageResult;

#[derive(Clone, Debug)]
pub struct PresenceStore {
    pool: PgPool,
}

/// A user's presence as stored (see `migrations/0017_presence.sql` for the meaning of the times).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceRow {
    pub user_id: String,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub currently_active: bool,
    pub last_seen_ts: i64,
    pub last_federation_ts: i64,
    pub stream_id: i64,
}

/// What a change function decided: the row to write, and whether others must hear of it (a new
/// stream position, waking syncs).
#[derive(Debug)]
pub struct PresenceWrite {
    pub row: PresenceRow,
    pub visible: bool,
}

impl PresenceStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn get(&self, user_id: &str) -> StorageResult<Option<PresenceRow>> {
        Ok(sqlx::query_as!(
            PresenceRow,
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, last_seen_ts,
                    last_federation_ts, stream_id
             FROM presence WHERE user_id = $1",
            user_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Reads the user's row (locked) and writes what `change` makes of it, in one transaction; a
    /// visible change takes the next stream position and notifies. Returns the row written.
    pub async fn update<F>(&self, user_id: &str, change: F) -> StorageResult<Option<PresenceWrite>>
    where
        F: FnOnce(Option<&PresenceRow>) -> Option<PresenceWrite>,
    {
        let mut tx = self.pool.begin().await?;
        let current = sqlx::query_as!(
            PresenceRow,
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, last_seen_ts,
                    last_federation_ts, stream_id
             FROM presence WHERE user_id = $1 FOR UPDATE",
            user_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut write) = change(current.as_ref()) else {
            return Ok(None);
        };
        write.row.user_id = user_id.to_owned();
        write.row.stream_id = current.as_ref().map_or(0, |c| c.stream_id);
        if write.visible {
            write.row.stream_id = sqlx::query_scalar!(
                "UPDATE stream_heads SET position = position + 1 WHERE stream = 'presence' RETURNING position"
            )
            .fetch_one(&mut *tx)
            .await?;
        }
        if !write.visible {
            // Bookkeeping nobody is told of (when a sync ended, activity within the
            // granularity): lost in a crash it only makes the user look idle or offline a
            // little early, so the commit need not wait for the WAL flush.
            sqlx::query!("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
        }
        let r = &write.row;
        sqlx::query!(
            "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, last_seen_ts,
                                   last_federation_ts, stream_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (user_id) DO UPDATE SET state = EXCLUDED.state, status_msg = EXCLUDED.status_msg,
                 last_active_ts = EXCLUDED.last_active_ts, currently_active = EXCLUDED.currently_active,
                 last_seen_ts = EXCLUDED.last_seen_ts, last_federation_ts = EXCLUDED.last_federation_ts,
                 stream_id = EXCLUDED.stream_id",
            r.user_id,
            r.state,
            r.status_msg,
            r.last_active_ts,
            r.currently_active,
            r.last_seen_ts,
            r.last_federation_ts,
            r.stream_id
        )
        .execute(&mut *tx)
        .await?;
        if write.visible {
            sqlx::query!("SELECT pg_notify('poststelle_streams', 'presence')").execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Some(write))
    }

    /// Everyone not offline: the candidates of the periodic timeout pass.
    pub async fn not_offline(&self) -> StorageResult<Vec<PresenceRow>> {
        Ok(sqlx::query_as!(
            PresenceRow,
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, last_seen_ts,
                    last_federation_ts, stream_id
             FROM presence WHERE state <> 'offline'"
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Changes in `(from, to]` of the user and of the users sharing a joined room with them.
    pub async fn changes_for(&self, user_id: &str, from: i64, to: i64) -> StorageResult<Vec<PresenceRow>> {
        Ok(sqlx::query_as!(
            PresenceRow,
            "SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, p.currently_active, p.last_seen_ts,
                    p.last_federation_ts, p.stream_id
             FROM presence p
             WHERE p.stream_id > $2 AND p.stream_id <= $3
               AND (p.user_id = $1 OR EXISTS (
                   SELECT 1 FROM room_memberships mine JOIN room_memberships theirs USING (room_id)
                   WHERE mine.user_id = $1 AND mine.membership = 'join'
                     AND theirs.user_id = p.user_id AND theirs.membership = 'join'))
             ORDER BY p.stream_id",
            user_id,
            from,
            to
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Users whose presence the user has not seen because one of them joined between two events
    /// positions: every member of a room the user joined, and those who joined the user's rooms.
    pub async fn newly_shared(&self, user_id: &str, from: i64, to: i64) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            "SELECT DISTINCT theirs.user_id
             FROM room_memberships mine JOIN room_memberships theirs USING (room_id)
             WHERE mine.user_id = $1 AND mine.membership = 'join' AND theirs.membership = 'join'
               AND theirs.user_id <> $1
               AND ((mine.stream_ordering > $2 AND mine.stream_ordering <= $3)
                    OR (theirs.stream_ordering > $2 AND theirs.stream_ordering <= $3))",
            user_id,
            from,
            to
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The stored presence of these users (those without a row are offline).
    pub async fn of_users(&self, user_ids: &[String]) -> StorageResult<Vec<PresenceRow>> {
        Ok(sqlx::query_as!(
            PresenceRow,
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, last_seen_ts,
                    last_federation_ts, stream_id
             FROM presence WHERE user_id = ANY($1)",
            user_ids
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Moves the joins reader to `upto` (the events stream's position) unless it is there
    /// already; returns where it was, so exactly one process reads each range.
    pub async fn claim_joins(&self, upto: i64) -> StorageResult<Option<i64>> {
        Ok(sqlx::query_scalar!(
            r#"WITH old AS (SELECT position FROM stream_heads WHERE stream = 'presence_joins' FOR UPDATE)
               UPDATE stream_heads s SET position = $1 FROM old
               WHERE s.stream = 'presence_joins' AND old.position < $1
               RETURNING old.position AS "from!""#,
            upto
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The events stream's position.
    pub async fn events_position(&self) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!("SELECT position FROM stream_heads WHERE stream = 'events'")
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0))
    }

    /// Current joins whose membership events are in `(from, to]`, as (room, user).
    pub async fn joins_between(&self, from: i64, to: i64) -> StorageResult<Vec<(String, String)>> {
        Ok(sqlx::query!(
            "SELECT room_id, user_id FROM room_memberships
             WHERE membership = 'join' AND stream_ordering > $1 AND stream_ordering <= $2
             ORDER BY stream_ordering",
            from,
            to
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.room_id, r.user_id))
        .collect())
    }
}
