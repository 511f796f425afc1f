//! The read side of rooms: events, current and historical state, memberships, aliases and the
//! public directory.

use sqlx::PgPool;

use super::StorageResult;

/// An [`EventRow`] from a query record that has its columns (by name).
macro_rules! event_row {
    ($r:expr) => {{
        let r = $r;
        EventRow {
            event_id: r.event_id,
            room_id: r.room_id,
            stream_ordering: r.stream_ordering,
            event_type: r.event_type,
            state_key: r.state_key,
            sender: r.sender,
            pdu: r.pdu,
            redacted_by: r.redacted_by,
            sender_device: r.sender_device,
            txn_id: r.txn_id,
            prev_pdu: r.prev_pdu,
            redaction_pdu: r.redaction_pdu,
        }
    }};
}

mod history;
mod sync_basis;

pub use self::sync_basis::{RecentEvent, StateVersion, SyncBasis, SyncMembership};

/// Stream heads for a `/sync` token.
#[derive(Clone, Copy, Debug)]
pub struct SyncPositions {
    pub events: i64,
    pub receipts: i64,
    pub to_device: i64,
    pub account_data: i64,
    pub device_lists: i64,
    pub presence: i64,
}

#[derive(Clone, Debug)]
pub struct RoomStore {
    pool: PgPool,
}

/// A stored event with what the client format needs besides the PDU.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct EventRow {
    pub event_id: String,
    pub room_id: String,
    pub stream_ordering: i64,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub pdu: String,
    pub redacted_by: Option<String>,
    pub sender_device: Option<String>,
    pub txn_id: Option<String>,
    /// The PDU of the state event this one replaced (for `unsigned.prev_content`).
    pub prev_pdu: Option<String>,
    /// The redaction event's PDU, when the event is redacted.
    pub redaction_pdu: Option<String>,
}

/// A user's membership in a room.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct MembershipRow {
    pub room_id: String,
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_ordering: i64,
    pub forgotten: bool,
}

/// The relations of one kind to one event.
#[derive(Clone, Debug)]
pub struct AggregationRow {
    pub relates_to: String,
    pub rel_type: String,
    pub count: i64,
    /// Whether the asking user sent one of them.
    pub participated: bool,
    pub latest: String,
    pub event_ids: Vec<String>,
}

/// A row of the public room directory.
#[derive(Clone, Debug)]
pub struct PublicRoomRow {
    pub room_id: String,
    pub joined: i64,
}

impl RoomStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The room's version, or `None` if the room is unknown here.
    pub async fn room_version(&self, room_id: &str) -> StorageResult<Option<String>> {
        Ok(sqlx::query_scalar!("SELECT room_version FROM rooms WHERE room_id = $1", room_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The current head position of a stream.
    pub async fn stream_head(&self, stream: &str) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!("SELECT position FROM stream_heads WHERE stream = $1", stream)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0))
    }

    pub async fn membership(&self, room_id: &str, user_id: &str) -> StorageResult<Option<MembershipRow>> {
        Ok(sqlx::query_as!(
            MembershipRow,
            "SELECT room_id, user_id, membership, event_id, stream_ordering, forgotten
             FROM room_memberships WHERE room_id = $1 AND user_id = $2",
            room_id,
            user_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every room the user has a membership in (not forgotten ones).
    pub async fn memberships_of(&self, user_id: &str) -> StorageResult<Vec<MembershipRow>> {
        Ok(sqlx::query_as!(
            MembershipRow,
            "SELECT room_id, user_id, membership, event_id, stream_ordering, forgotten
             FROM room_memberships WHERE user_id = $1 AND NOT forgotten ORDER BY stream_ordering",
            user_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Current memberships of a room.
    pub async fn members(&self, room_id: &str) -> StorageResult<Vec<MembershipRow>> {
        Ok(sqlx::query_as!(
            MembershipRow,
            "SELECT room_id, user_id, membership, event_id, stream_ordering, forgotten
             FROM room_memberships WHERE room_id = $1 ORDER BY user_id",
            room_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether the two users are both joined to (or one invited to) some common room.
    pub async fn share_a_room(&self, a: &str, b: &str) -> StorageResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (
                 SELECT 1 FROM room_memberships x JOIN room_memberships y USING (room_id)
                 WHERE x.user_id = $1 AND y.user_id = $2
                   AND x.membership IN ('join', 'invite') AND y.membership IN ('join', 'invite')
               ) AS "shared!""#,
            a,
            b
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn forget(&self, room_id: &str, user_id: &str) -> StorageResult<bool> {
        let done = sqlx::query!(
            "UPDATE room_memberships SET forgotten = TRUE
             WHERE room_id = $1 AND user_id = $2 AND membership IN ('leave', 'ban')",
            room_id,
            user_id
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn event(&self, event_id: &str) -> StorageResult<Option<EventRow>> {
        Ok(sqlx::query_as!(
            EventRow,
            r#"SELECT e.event_id, e.room_id, e.stream_ordering, e.event_type, e.state_key, e.sender, e.pdu,
                      e.redacted_by, e.sender_device, e.txn_id, p.pdu AS "prev_pdu?", r.pdu AS "redaction_pdu?"
               FROM events e LEFT JOIN events p ON p.event_id = e.replaces_state
               LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE e.event_id = $1"#,
            event_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn events(&self, event_ids: &[String]) -> StorageResult<Vec<EventRow>> {
        Ok(sqlx::query_as!(
            EventRow,
            r#"SELECT e.event_id, e.room_id, e.stream_ordering, e.event_type, e.state_key, e.sender, e.pdu,
                      e.redacted_by, e.sender_device, e.txn_id, p.pdu AS "prev_pdu?", r.pdu AS "redaction_pdu?"
               FROM events e LEFT JOIN events p ON p.event_id = e.replaces_state
               LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE e.event_id = ANY($1) ORDER BY e.stream_ordering"#,
            event_ids
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The room's current state events.
    pub async fn current_state(&self, room_id: &str) -> StorageResult<Vec<EventRow>> {
        Ok(sqlx::query_as!(
            EventRow,
            r#"SELECT e.event_id, e.room_id, e.stream_ordering, e.event_type, e.state_key, e.sender, e.pdu,
                      e.redacted_by, e.sender_device, e.txn_id, p.pdu AS "prev_pdu?", r.pdu AS "redaction_pdu?"
               FROM room_current_state c JOIN events e ON e.event_id = c.event_id
               LEFT JOIN events p ON p.event_id = e.replaces_state
               LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE c.room_id = $1 ORDER BY e.stream_ordering"#,
            room_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// One current state event.
    pub async fn current_state_event(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> StorageResult<Option<EventRow>> {
        Ok(sqlx::query_as!(
            EventRow,
            r#"SELECT e.event_id, e.room_id, e.stream_ordering, e.event_type, e.state_key, e.sender, e.pdu,
                      e.redacted_by, e.sender_device, e.txn_id, p.pdu AS "prev_pdu?", r.pdu AS "redaction_pdu?"
               FROM room_current_state c JOIN events e ON e.event_id = c.event_id
               LEFT JOIN events p ON p.event_id = e.replaces_state
               LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE c.room_id = $1 AND c.event_type = $2 AND c.state_key = $3"#,
            room_id,
            event_type,
            state_key
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The stripped state another server sent with the invite `event_id`, if it was one.
    pub async fn remote_invite_state(&self, event_id: &str) -> StorageResult<Option<serde_json::Value>> {
        Ok(sqlx::query_scalar!("SELECT invite_state FROM remote_invites WHERE event_id = $1", event_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The events a new event of the room builds on (none if this server holds no state).
    pub async fn forward_extremities(&self, room_id: &str) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!("SELECT forward_extremities FROM room_current_snapshot WHERE room_id = $1", room_id)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or_default())
    }

    /// The state after the event `event_id` (`before`: before it), as event ids keyed by
    /// `(type, state_key)`, resolved from the snapshot chain.
    pub async fn state_ids_at(&self, event_id: &str, before: bool) -> StorageResult<Vec<(String, String, String)>> {
        let rows = sqlx::query!(
            r#"WITH RECURSIVE chain(snapshot_id, parent_id, level) AS (
                   SELECT s.snapshot_id, s.parent_id, 0 FROM events e
                   JOIN state_snapshots s ON s.snapshot_id = CASE WHEN $2 THEN e.state_before ELSE e.state_after END
                   WHERE e.event_id = $1
                 UNION ALL
                   SELECT s.snapshot_id, s.parent_id, c.level + 1 FROM chain c
                   JOIN state_snapshots s ON s.snapshot_id = c.parent_id
               )
               SELECT DISTINCT ON (k.key_nid) k.event_type AS "event_type!", k.state_key AS "state_key!",
                      x.event_id AS "event_id!"
               FROM chain c JOIN state_snapshot_entries x ON x.snapshot_id = c.snapshot_id
               JOIN state_keys k ON k.key_nid = x.key_nid
               ORDER BY k.key_nid, c.level"#,
            event_id,
            before
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.event_type, r.state_key, r.event_id)).collect())
    }

    /// Events of a room with `from < stream_ordering <= to`, newest first, at most `limit`.
    pub async fn events_backwards(
        &self,
        room_id: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> StorageResult<Vec<EventRow>> {
        Ok(self.events_backwards_with_relations(room_id, from, to, limit).await?.into_iter().map(|(e, _)| e).collect())
    }

    /// [`Self::events_backwards`], each event with whether others relate to it (name it in
    /// `relates_to`): only those can have aggregations to bundle.
    pub async fn events_backwards_with_relations(
        &self,
        room_id: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> StorageResult<Vec<(EventRow, bool)>> {
        Ok(sqlx::query!(
            r#"SELECT e.event_id, e.room_id, e.stream_ordering, e.event_type, e.state_key, e.sender, e.pdu,
                      e.redacted_by, e.sender_device, e.txn_id, p.pdu AS "prev_pdu?", r.pdu AS "redaction_pdu?",
                      EXISTS (SELECT 1 FROM events x WHERE x.relates_to = e.event_id) AS "related!"
               FROM events e LEFT JOIN events p ON p.event_id = e.replaces_state
               LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE e.room_id = $1 AND e.stream_ordering > $2 AND e.stream_ordering <= $3 AND NOT e.outlier
               ORDER BY e.stream_ordering DESC LIMIT $4"#,
            room_id,
            from,
            to,
            limit
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            let related = r.related;
            (event_row!(r), related)
        })
        .collect())
    }

    /// Events of a room with `from < stream_ordering <= to`, oldest first, at most `limit`.
    pub async fn events_forwards(&self, room_id: &str, from: i64, to: i64, limit: i64) -> StorageResult<Vec<EventRow>> {
        Ok(sqlx::query_as!(
            EventRow,
            r#"SELECT e.event_id, e.room_id, e.stream_ordering, e.event_type, e.state_key, e.sender, e.pdu,
                      e.redacted_by, e.sender_device, e.txn_id, p.pdu AS "prev_pdu?", r.pdu AS "redaction_pdu?"
               FROM events e LEFT JOIN events p ON p.event_id = e.replaces_state
               LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE e.room_id = $1 AND e.stream_ordering > $2 AND e.stream_ordering <= $3 AND NOT e.outlier
               ORDER BY e.stream_ordering ASC LIMIT $4"#,
            room_id,
            from,
            to,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Relations of an event, newest first, with `stream_ordering < before`.
    pub async fn relations(
        &self,
        event_id: &str,
        rel_type: Option<&str>,
        event_type: Option<&str>,
        before: i64,
        after: i64,
        limit: i64,
        forwards: bool,
    ) -> StorageResult<Vec<EventRow>> {
        Ok(sqlx::query_as!(
            EventRow,
            r#"SELECT e.event_id, e.room_id, e.stream_ordering, e.event_type, e.state_key, e.sender, e.pdu,
                      e.redacted_by, e.sender_device, e.txn_id, p.pdu AS "prev_pdu?", r.pdu AS "redaction_pdu?"
               FROM events e LEFT JOIN events p ON p.event_id = e.replaces_state
               LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE e.relates_to = $1 AND ($2::text IS NULL OR e.rel_type = $2)
                 AND ($3::text IS NULL OR e.event_type = $3)
                 AND e.stream_ordering < $4 AND e.stream_ordering > $5 AND NOT e.outlier
               ORDER BY CASE WHEN $7 THEN e.stream_ordering ELSE -e.stream_ordering END LIMIT $6"#,
            event_id,
            rel_type,
            event_type,
            before,
            after,
            limit,
            forwards
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Events of a room nearest to `ts` at or after it (`forwards`) or at or before it:
    /// `(event id, position, origin_server_ts)`, nearest first.
    pub async fn events_near_time(
        &self,
        room_id: &str,
        ts: i64,
        forwards: bool,
        limit: i64,
    ) -> StorageResult<Vec<(String, i64, i64)>> {
        let rows = if forwards {
            sqlx::query!(
                "SELECT event_id, stream_ordering, origin_server_ts FROM events
                 WHERE room_id = $1 AND origin_server_ts >= $2 AND NOT outlier
                 ORDER BY origin_server_ts, stream_ordering LIMIT $3",
                room_id,
                ts,
                limit
            )
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.event_id, r.stream_ordering, r.origin_server_ts))
            .collect()
        } else {
            sqlx::query!(
                "SELECT event_id, stream_ordering, origin_server_ts FROM events
                 WHERE room_id = $1 AND origin_server_ts <= $2 AND NOT outlier
                 ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT $3",
                room_id,
                ts,
                limit
            )
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.event_id, r.stream_ordering, r.origin_server_ts))
            .collect()
        };
        Ok(rows)
    }

    /// Aggregated relations of the given events (threads, edits by the original sender,
    /// references), ignoring redacted relations.
    pub async fn aggregations(&self, event_ids: &[String], user_id: &str) -> StorageResult<Vec<AggregationRow>> {
        Ok(sqlx::query_as!(
            AggregationRow,
            r#"SELECT e.relates_to AS "relates_to!", e.rel_type AS "rel_type!", COUNT(*) AS "count!",
                      bool_or(e.sender = $2) AS "participated!",
                      (array_agg(e.event_id ORDER BY e.stream_ordering DESC))[1] AS "latest!",
                      array_agg(e.event_id ORDER BY e.stream_ordering) AS "event_ids!"
               FROM events e JOIN events o ON o.event_id = e.relates_to
               WHERE e.relates_to = ANY($1) AND e.redacted_by IS NULL
                 AND e.rel_type IN ('m.thread', 'm.replace', 'm.reference')
                 AND (e.rel_type <> 'm.replace' OR (e.sender = o.sender AND e.event_type = o.event_type))
               GROUP BY e.relates_to, e.rel_type"#,
            event_ids,
            user_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The relation an event declares: `(rel_type, parent event id)`.
    pub async fn relation_of(&self, event_id: &str) -> StorageResult<Option<(String, String)>> {
        Ok(sqlx::query!(
            r#"SELECT rel_type AS "rel_type!", relates_to AS "relates_to!" FROM events
               WHERE event_id = $1 AND rel_type IS NOT NULL AND relates_to IS NOT NULL"#,
            event_id
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|r| (r.rel_type, r.relates_to)))
    }

    /// Thread roots of a room (events with at least one `m.thread` relation), latest activity first.
    pub async fn thread_roots(
        &self,
        room_id: &str,
        before: i64,
        limit: i64,
        participated_by: Option<&str>,
    ) -> StorageResult<Vec<(String, i64)>> {
        let rows = sqlx::query!(
            r#"SELECT t.relates_to AS "root!", MAX(t.stream_ordering) AS "latest!"
               FROM events t
               WHERE t.room_id = $1 AND t.rel_type = 'm.thread'
               GROUP BY t.relates_to
               HAVING MAX(t.stream_ordering) < $2
                  AND ($4::text IS NULL OR bool_or(t.sender = $4)
                       OR EXISTS (SELECT 1 FROM events r WHERE r.event_id = t.relates_to AND r.sender = $4))
               ORDER BY MAX(t.stream_ordering) DESC LIMIT $3"#,
            room_id,
            before,
            limit,
            participated_by
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.root, r.latest)).collect())
    }

    /// Count and latest event of a thread (for the root's bundled aggregation).
    pub async fn thread_summary(&self, root: &str) -> StorageResult<(i64, Option<String>)> {
        let row = sqlx::query!(
            r#"SELECT COUNT(*) AS "count!",
                      (SELECT event_id FROM events WHERE relates_to = $1 AND rel_type = 'm.thread'
                       ORDER BY stream_ordering DESC LIMIT 1) AS latest
               FROM events WHERE relates_to = $1 AND rel_type = 'm.thread'"#,
            root
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.count, row.latest))
    }

    /// Resolves a local alias.
    pub async fn alias(&self, alias: &str) -> StorageResult<Option<(String, String)>> {
        Ok(sqlx::query!("SELECT room_id, creator FROM room_aliases WHERE alias = $1", alias)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| (r.room_id, r.creator)))
    }

    pub async fn aliases_of(&self, room_id: &str) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias", room_id)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn insert_alias(&self, alias: &str, room_id: &str, creator: &str, now: i64) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)",
            alias,
            room_id,
            creator,
            now
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Points every alias of `from` at `to` (room upgrades); returns the aliases moved.
    pub async fn move_aliases(&self, from: &str, to: &str) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!("UPDATE room_aliases SET room_id = $2 WHERE room_id = $1 RETURNING alias", from, to)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn delete_alias(&self, alias: &str) -> StorageResult<bool> {
        Ok(sqlx::query!("DELETE FROM room_aliases WHERE alias = $1", alias).execute(&self.pool).await?.rows_affected()
            > 0)
    }

    pub async fn set_public(&self, room_id: &str, public: bool) -> StorageResult<bool> {
        Ok(sqlx::query!("UPDATE rooms SET is_public = $2 WHERE room_id = $1", room_id, public)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    pub async fn is_public(&self, room_id: &str) -> StorageResult<Option<bool>> {
        Ok(sqlx::query_scalar!("SELECT is_public FROM rooms WHERE room_id = $1", room_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Public rooms ordered by joined members (then room id), after `offset`.
    pub async fn public_rooms(&self, offset: i64, limit: i64) -> StorageResult<(Vec<PublicRoomRow>, i64)> {
        let rows = sqlx::query_as!(
            PublicRoomRow,
            r#"SELECT r.room_id, (SELECT COUNT(*) FROM room_memberships m
                                  WHERE m.room_id = r.room_id AND m.membership = 'join') AS "joined!"
               FROM rooms r WHERE r.is_public
               ORDER BY 2 DESC, r.room_id OFFSET $1 LIMIT $2"#,
            offset,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        let total =
            sqlx::query_scalar!(r#"SELECT COUNT(*) AS "n!" FROM rooms WHERE is_public"#).fetch_one(&self.pool).await?;
        Ok((rows, total))
    }

    /// Users matching `term` who share a room with `searcher` or are in a public room: one
    /// listed in the directory, with a public join rule, or with world-readable history.
    pub async fn search_users(
        &self,
        searcher: &str,
        term: &str,
        limit: i64,
    ) -> StorageResult<Vec<(String, Option<String>, Option<String>)>> {
        let pattern = format!("%{}%", term.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let rows = sqlx::query!(
            r#"SELECT u.user_id, u.displayname, u.avatar_url FROM users u
               WHERE NOT u.deactivated
                 AND (u.user_id ILIKE $2 OR u.displayname ILIKE $2)
                 AND (u.user_id = $1 OR EXISTS (
                       SELECT 1 FROM room_memberships m JOIN rooms r USING (room_id)
                       WHERE m.user_id = u.user_id AND m.membership = 'join'
                         AND (r.is_public
                              OR EXISTS (SELECT 1 FROM room_current_state cs JOIN events e USING (event_id)
                                  WHERE cs.room_id = m.room_id AND cs.state_key = ''
                                    AND ((cs.event_type = 'm.room.join_rules'
                                          AND e.pdu::jsonb #>> '{content,join_rule}' = 'public')
                                      OR (cs.event_type = 'm.room.history_visibility'
                                          AND e.pdu::jsonb #>> '{content,history_visibility}' = 'world_readable')))
                              OR EXISTS (SELECT 1 FROM room_memberships s
                                  WHERE s.room_id = m.room_id AND s.user_id = $1 AND s.membership = 'join'))))
               ORDER BY u.user_id LIMIT $3"#,
            searcher,
            pattern,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.user_id, r.displayname, r.avatar_url)).collect())
    }

    /// The event a transaction id produced (outside a write transaction: the fast path).
    pub async fn txn_event(&self, user_id: &str, device_id: &str, txn_id: &str) -> StorageResult<Option<String>> {
        Ok(sqlx::query_scalar!(
            "SELECT event_id FROM event_txns WHERE user_id = $1 AND device_id = $2 AND txn_id = $3",
            user_id,
            device_id,
            txn_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }
}
