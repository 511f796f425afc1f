//! Pushers, push actions and stream-consumer positions (migration 0012).

use serde_json::Value as JsonValue;
use sqlx::PgPool;

use super::{LeaderLock, StorageResult, now_ms, rooms::EventRow};

/// A registered pusher.
#[derive(Clone, Debug)]
pub struct PusherRecord {
    pub user_id: String,
    pub device_id: Option<String>,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    pub data: JsonValue,
    pub last_stream_ordering: i64,
    pub failing_since: Option<i64>,
}

/// The push-rule outcome for one user and event.
#[derive(Clone, Debug)]
pub struct PushAction {
    pub user_id: String,
    pub room_id: String,
    pub event_id: String,
    pub stream_ordering: i64,
    pub actions: JsonValue,
    pub notify: bool,
    pub highlight: bool,
}

/// A push action with what `/notifications` shows of it.
#[derive(Clone, Debug)]
pub struct NotificationRow {
    pub room_id: String,
    pub event_id: String,
    pub stream_ordering: i64,
    pub actions: JsonValue,
    pub ts: i64,
    /// Whether the user's read receipt in the room is at or after the event.
    pub read: bool,
}

/// The push rule consumer's name in `stream_consumers`.
pub const PUSH_RULES_CONSUMER: &str = "push_rules";

#[derive(Clone, Debug)]
pub struct PushStore {
    pool: PgPool,
}

impl PushStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Adds or updates a pusher. Without `append`, pushers of other users with the same app id
    /// and push key go (the device changed hands). A new pusher starts at the current events
    /// position; an updated one keeps its place.
    pub async fn set_pusher(&self, p: &PusherRecord, append: bool) -> StorageResult<()> {
        let mut tx = self.pool.begin().await?;
        if !append {
            sqlx::query!(
                "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
                p.app_id,
                p.pushkey,
                p.user_id
            )
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query!(
            r#"INSERT INTO pushers (user_id, device_id, app_id, pushkey, kind, app_display_name, device_display_name,
                                    profile_tag, lang, data, created_ts, last_stream_ordering)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                       (SELECT position FROM stream_heads WHERE stream = 'events'))
               ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET
                   device_id = EXCLUDED.device_id, kind = EXCLUDED.kind,
                   app_display_name = EXCLUDED.app_display_name,
                   device_display_name = EXCLUDED.device_display_name, profile_tag = EXCLUDED.profile_tag,
                   lang = EXCLUDED.lang, data = EXCLUDED.data, failing_since = NULL"#,
            p.user_id,
            p.device_id,
            p.app_id,
            p.pushkey,
            p.kind,
            p.app_display_name,
            p.device_display_name,
            p.profile_tag,
            p.lang,
            p.data,
            now_ms()
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a pusher; false if there was none.
    pub async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> StorageResult<bool> {
        let done = sqlx::query!(
            "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
            user_id,
            app_id,
            pushkey
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A user's pushers, or every HTTP pusher (for delivery) when `user_id` is `None`.
    pub async fn pushers(&self, user_id: Option<&str>) -> StorageResult<Vec<PusherRecord>> {
        Ok(sqlx::query_as!(
            PusherRecord,
            r#"SELECT user_id, device_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag,
                      lang, data, last_stream_ordering, failing_since
               FROM pushers WHERE ($1::text IS NULL AND kind = 'http') OR user_id = $1
               ORDER BY user_id, created_ts"#,
            user_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a pusher's progress; `failing_since` is cleared on success and set on failure.
    pub async fn update_pusher_progress(
        &self,
        p: &PusherRecord,
        position: i64,
        failing_since: Option<i64>,
    ) -> StorageResult<()> {
        sqlx::query!(
            r#"UPDATE pushers SET last_stream_ordering = GREATEST(last_stream_ordering, $4), failing_since = $5
               WHERE user_id = $1 AND app_id = $2 AND pushkey = $3"#,
            p.user_id,
            p.app_id,
            p.pushkey,
            position,
            failing_since
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn consumer_position(&self, name: &str) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT COALESCE((SELECT position FROM stream_consumers WHERE name = $1),
                               (SELECT position FROM stream_heads WHERE stream = 'events')) AS "pos!""#,
            name
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Events of every room after `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: i64) -> StorageResult<Vec<EventRow>> {
        Ok(sqlx::query_as!(
            EventRow,
            r#"SELECT e.event_id, e.room_id, e.stream_ordering, e.event_type, e.state_key, e.sender, e.pdu,
                      e.redacted_by, e.sender_device, e.txn_id, p.pdu AS "prev_pdu?", r.pdu AS "redaction_pdu?"
               FROM events e LEFT JOIN events p ON p.event_id = e.replaces_state
               LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE e.stream_ordering > $1 ORDER BY e.stream_ordering LIMIT $2"#,
            after,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores push actions and moves the consumer to `position`, in one transaction.
    pub async fn record_push_actions(&self, actions: &[PushAction], position: i64) -> StorageResult<()> {
        let mut tx = self.pool.begin().await?;
        let users: Vec<&str> = actions.iter().map(|a| a.user_id.as_str()).collect();
        let rooms: Vec<&str> = actions.iter().map(|a| a.room_id.as_str()).collect();
        let events: Vec<&str> = actions.iter().map(|a| a.event_id.as_str()).collect();
        let positions: Vec<i64> = actions.iter().map(|a| a.stream_ordering).collect();
        let values: Vec<JsonValue> = actions.iter().map(|a| a.actions.clone()).collect();
        let notify: Vec<bool> = actions.iter().map(|a| a.notify).collect();
        let highlight: Vec<bool> = actions.iter().map(|a| a.highlight).collect();
        sqlx::query!(
            r#"INSERT INTO event_push_actions (user_id, room_id, event_id, stream_ordering, actions, notify, highlight)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::jsonb[], $6::bool[], $7::bool[])
               ON CONFLICT (user_id, stream_ordering) DO NOTHING"#,
            &users as &[&str],
            &rooms as &[&str],
            &events as &[&str],
            &positions,
            &values,
            &notify,
            &highlight
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            r#"INSERT INTO stream_consumers (name, position) VALUES ($1, $2)
               ON CONFLICT (name) DO UPDATE SET position = GREATEST(stream_consumers.position, EXCLUDED.position)"#,
            PUSH_RULES_CONSUMER,
            position
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A user's notifying push actions after `after`, oldest first, skipping those the user
    /// has read (their read receipt in the room is at or after the event).
    pub async fn unread_push_actions(&self, user_id: &str, after: i64, limit: i64) -> StorageResult<Vec<PushAction>> {
        Ok(sqlx::query_as!(
            PushAction,
            r#"SELECT a.user_id, a.room_id, a.event_id, a.stream_ordering, a.actions, a.notify, a.highlight
               FROM event_push_actions a
               WHERE a.user_id = $1 AND a.stream_ordering > $2 AND a.notify
                 AND a.stream_ordering > COALESCE((
                     SELECT MAX(e.stream_ordering) FROM receipts r JOIN events e USING (event_id)
                     WHERE r.room_id = a.room_id AND r.user_id = $1
                       AND r.receipt_type IN ('m.read', 'm.read.private')), 0)
               ORDER BY a.stream_ordering LIMIT $3"#,
            user_id,
            after,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many notifying events the user has not read, over all rooms (the badge count).
    pub async fn unread_count(&self, user_id: &str) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM event_push_actions a
               WHERE a.user_id = $1 AND a.notify
                 AND a.stream_ordering > COALESCE((
                     SELECT MAX(e.stream_ordering) FROM receipts r JOIN events e USING (event_id)
                     WHERE r.room_id = a.room_id AND r.user_id = $1
                       AND r.receipt_type IN ('m.read', 'm.read.private')), 0)"#,
            user_id
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// `/notifications`: newest first, before `before`, optionally only highlights.
    pub async fn notifications(
        &self,
        user_id: &str,
        before: Option<i64>,
        only_highlight: bool,
        limit: i64,
    ) -> StorageResult<Vec<NotificationRow>> {
        Ok(sqlx::query_as!(
            NotificationRow,
            r#"SELECT a.room_id, a.event_id, a.stream_ordering, a.actions, e.origin_server_ts AS ts,
                      a.stream_ordering <= COALESCE((
                          SELECT MAX(re.stream_ordering) FROM receipts r JOIN events re USING (event_id)
                          WHERE r.room_id = a.room_id AND r.user_id = $1
                            AND r.receipt_type IN ('m.read', 'm.read.private')), 0) AS "read!"
               FROM event_push_actions a JOIN events e USING (event_id)
               WHERE a.user_id = $1 AND ($2::bigint IS NULL OR a.stream_ordering < $2)
                 AND (a.notify OR a.highlight) AND (NOT $3 OR a.highlight)
               ORDER BY a.stream_ordering DESC LIMIT $4"#,
            user_id,
            before,
            only_highlight,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Advisory-lock key of the push leader (two-key form: class, id).
const PUSH_LEADER_LOCK: (i32, i32) = (0x7075_7368, 1);

impl PushStore {
    /// Takes the push leader lock if no other process holds it.
    pub async fn try_lead(&self) -> StorageResult<Option<LeaderLock>> {
        LeaderLock::try_take(&self.pool, PUSH_LEADER_LOCK).await
    }
}
