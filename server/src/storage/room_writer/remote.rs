//! The write side for events from other servers: events outside the timeline (outliers,
//! rejected and soft-failed events), timeline events whose state the caller computed, and
//! moving the room's head and current state to a resolved state.

use super::{RoomHead, RoomWriter, StreamSlot};
use crate::storage::StorageResult;

/// An event stored outside the timeline.
#[derive(Debug)]
pub struct OutlierEvent<'a> {
    pub event_id: &'a str,
    pub depth: i64,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub origin_server_ts: i64,
    pub pdu: &'a str,
    pub prev_events: &'a [String],
    pub auth_events: &'a [String],
    pub rejected: Option<&'a str>,
    pub soft_failed: bool,
    /// The state before it, when known (soft-failed and rejected timeline candidates).
    pub state_before: Option<i64>,
    /// The state after it, when it differs from the state before (a soft-failed state event:
    /// events built on it take their state from it).
    pub state_after: Option<i64>,
    pub received_from: Option<&'a str>,
    /// For a redaction: the event it names.
    pub redacts: Option<&'a str>,
}

/// A received event that joins the timeline, with the state the caller computed for it.
#[derive(Debug)]
pub struct RemoteEvent<'a> {
    pub event_id: &'a str,
    pub depth: i64,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub origin_server_ts: i64,
    pub pdu: &'a str,
    pub prev_events: &'a [String],
    pub auth_events: &'a [String],
    pub state_before: i64,
    pub state_after: i64,
    pub replaces_state: Option<&'a str>,
    pub relates_to: Option<&'a str>,
    pub rel_type: Option<&'a str>,
    pub received_from: Option<&'a str>,
    /// For a redaction: the event it names.
    pub redacts: Option<&'a str>,
}

/// Where the room's head moves to with a write (its position is the write's).
#[derive(Debug)]
pub struct HeadMove<'a> {
    pub snapshot_id: i64,
    pub extremities: &'a [String],
    pub max_depth: i64,
}

/// What is known about a stored event.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct StoredEventInfo {
    pub event_id: String,
    pub room_id: String,
    pub outlier: bool,
    pub rejected: bool,
    pub state_before: Option<i64>,
    pub state_after: Option<i64>,
    pub depth: i64,
    /// Kept out of the timeline by the room's current state, but with its state known.
    pub soft_failed: bool,
}

/// What accepting a run of received events starts from (see [`RoomWriter::run_start`]).
pub struct RunStart {
    pub head: RoomHead,
    pub waiting: Vec<NamingRedaction>,
    pub stored: Vec<StoredEventInfo>,
    /// The room's current `m.room.server_acl` event: id and PDU.
    pub acl: Option<(String, String)>,
}

/// A redaction in the room's timeline that names an event, with the state before it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct NamingRedaction {
    pub event_id: String,
    /// The event it names.
    pub redacts: String,
    pub pdu: String,
    pub state_before: i64,
}

impl StoredEventInfo {
    /// Whether an event may be built on it with the state after it: a timeline event, or a
    /// soft-failed one.
    pub fn has_state(&self) -> bool {
        !self.outlier || (self.soft_failed && !self.rejected)
    }
}

impl RoomWriter {
    /// Stores events outside the timeline, each at a fresh negative position; events already
    /// stored are left as they are. Many at once (an auth chain, a room's state) in one statement.
    pub async fn insert_outliers(&mut self, events: &[OutlierEvent<'_>]) -> StorageResult<()> {
        if events.len() > 1 {
            return self.insert_many_outliers(events).await;
        }
        for e in events {
            sqlx::query!(
                r#"WITH pos AS (
                       UPDATE stream_heads SET position = position - 1 WHERE stream = 'outliers' RETURNING position)
                   INSERT INTO events (event_id, room_id, stream_ordering, depth, event_type, state_key, sender,
                                       origin_server_ts, pdu, state_before, state_after, prev_events, auth_events,
                                       outlier, rejected, soft_failed, received_from, redacts)
                   SELECT $1, $2, pos.position, $3, $4, $5, $6, $7, $8, $9::bigint,
                          COALESCE($15::bigint, $9::bigint), $10, $11, TRUE, $12, $13, $14, $16
                   FROM pos
                   ON CONFLICT (event_id) DO NOTHING"#,
                e.event_id,
                self.room_id,
                e.depth,
                e.event_type,
                e.state_key,
                e.sender,
                e.origin_server_ts,
                e.pdu,
                e.state_before,
                e.prev_events,
                e.auth_events,
                e.rejected,
                e.soft_failed,
                e.received_from,
                e.state_after,
                e.redacts
            )
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// [`Self::insert_outliers`] for many, in one statement that also takes their positions.
    async fn insert_many_outliers(&mut self, events: &[OutlierEvent<'_>]) -> StorageResult<()> {
        insert_outlier_rows(&mut self.tx, &self.room_id, events, None).await
    }

    /// Writes a received timeline event at its stream position without moving the room's head
    /// (see [`Self::set_head`]). An outlier of the same id becomes this timeline event (rows that
    /// refer to it stay valid). A negative position (reserved by
    /// [`Self::reserve_history_positions`]) places it in the history before the timeline.
    pub async fn insert_remote_event(
        &mut self,
        e: &RemoteEvent<'_>,
        slot: StreamSlot,
    ) -> StorageResult<super::InsertedEvent> {
        let (allocate, at) = match slot {
            StreamSlot::FirstOf(n) => (n, 0),
            StreamSlot::At(position) => (0, position),
        };
        let row = sqlx::query!(
            r#"WITH alloc AS (
                   UPDATE stream_heads SET position = position + $18
                   WHERE stream = 'events' AND $18::bigint > 0
                   RETURNING position),
               pos AS (SELECT COALESCE((SELECT position - $18 + 1 FROM alloc), $3) AS p),
               promoted AS (
                   UPDATE events SET stream_ordering = pos.p, outlier = FALSE, backfilled = pos.p < 0,
                       rejected = NULL, soft_failed = FALSE, state_before = $10, state_after = $11, replaces_state = $12, relates_to = $13,
                       rel_type = $14, redacts = $19
                   FROM pos WHERE event_id = $1 AND outlier),
               event AS (
                   INSERT INTO events (event_id, room_id, stream_ordering, depth, event_type, state_key, sender,
                                       origin_server_ts, pdu, state_before, state_after, replaces_state, relates_to,
                                       rel_type, prev_events, auth_events, received_from, backfilled, redacts)
                   SELECT $1, $2, pos.p, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, pos.p < 0, $19
                   FROM pos
                   WHERE NOT EXISTS (SELECT 1 FROM events WHERE event_id = $1))
               SELECT pos.p AS "position!", (SELECT position FROM alloc) AS "last?",
                      (SELECT pg_notify('poststelle_streams',
                                        CASE WHEN $17::text IS NULL THEN 'events ' ELSE 'remote_events ' END || position)
                       FROM alloc) IS NULL AS "notified?"
               FROM pos"#,
            e.event_id,
            self.room_id,
            at,
            e.depth,
            e.event_type,
            e.state_key,
            e.sender,
            e.origin_server_ts,
            e.pdu,
            e.state_before,
            e.state_after,
            e.replaces_state,
            e.relates_to,
            e.rel_type,
            e.prev_events,
            e.auth_events,
            e.received_from,
            allocate,
            e.redacts
        )
        .fetch_one(&mut *self.tx)
        .await?;
        self.notified_upto = self.notified_upto.max(row.last.unwrap_or(0));
        self.wrote_own_events |= e.received_from.is_none();
        Ok(super::InsertedEvent { position: row.position, last_allocated: row.last })
    }

    /// Writes received events that are new to this server and state no state (messages and
    /// the like) into the timeline in one statement, at fresh positions in the order given, and
    /// announces the last one (delivered at commit). Returns the last position. With `head`,
    /// the room's head moves to the last one in the same statement (as [`Self::set_head`]).
    pub async fn insert_new_remote_messages<'e>(
        &mut self,
        events: &[RemoteEvent<'e>],
        head: Option<HeadMove<'_>>,
    ) -> StorageResult<i64> {
        let column = |pick: fn(&RemoteEvent<'e>) -> &'e str| events.iter().map(pick).collect::<Vec<&str>>();
        let optional = |pick: fn(&RemoteEvent<'e>) -> Option<&'e str>| events.iter().map(pick).collect::<Vec<_>>();
        let number = |pick: fn(&RemoteEvent<'e>) -> i64| events.iter().map(pick).collect::<Vec<i64>>();
        // The graph's edges differ in length per event, so they travel as JSON arrays.
        let edges = |pick: fn(&RemoteEvent<'e>) -> &'e [String]| {
            events.iter().map(|e| serde_json::to_string(pick(e)).unwrap_or_else(|_| "[]".into())).collect::<Vec<_>>()
        };
        let (ids, types, senders, pdus) =
            (column(|e| e.event_id), column(|e| e.event_type), column(|e| e.sender), column(|e| e.pdu));
        let (relates_to, rel_types, from) =
            (optional(|e| e.relates_to), optional(|e| e.rel_type), optional(|e| e.received_from));
        let (depths, ts, snapshots) = (number(|e| e.depth), number(|e| e.origin_server_ts), number(|e| e.state_before));
        let (prevs, auths) = (edges(|e| e.prev_events), edges(|e| e.auth_events));
        let row = sqlx::query!(
            r#"WITH alloc AS (
                   UPDATE stream_heads SET position = position + cardinality($2::text[])
                   WHERE stream = 'events' RETURNING position),
               event AS (
                   INSERT INTO events (event_id, room_id, stream_ordering, depth, event_type, sender,
                                       origin_server_ts, pdu, state_before, state_after, relates_to, rel_type,
                                       prev_events, auth_events, received_from)
                   SELECT r.event_id, $1, alloc.position - cardinality($2::text[]) + r.n, r.depth, r.event_type,
                          r.sender, r.ts, r.pdu, r.snapshot, r.snapshot, r.relates_to, r.rel_type,
                          ARRAY(SELECT jsonb_array_elements_text(r.prevs::jsonb)),
                          ARRAY(SELECT jsonb_array_elements_text(r.auths::jsonb)), r.received_from
                   FROM alloc, UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::text[],
                                      $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[])
                        WITH ORDINALITY AS r(event_id, depth, event_type, sender, ts, pdu, snapshot, relates_to,
                                             rel_type, prevs, auths, received_from, n)),
               head AS (
                   INSERT INTO room_current_snapshot AS h (room_id, snapshot_id, last_stream, forward_extremities,
                                                           max_depth)
                   SELECT $1, $14, alloc.position, $15, $16 FROM alloc WHERE $14::bigint IS NOT NULL
                   ON CONFLICT (room_id) DO UPDATE SET snapshot_id = EXCLUDED.snapshot_id,
                       last_stream = GREATEST(h.last_stream, EXCLUDED.last_stream),
                       forward_extremities = EXCLUDED.forward_extremities,
                       max_depth = GREATEST(h.max_depth, EXCLUDED.max_depth))
               SELECT position AS "position!",
                      pg_notify('poststelle_streams', 'remote_events ' || position) IS NULL AS "notified?"
               FROM alloc"#,
            self.room_id,
            &ids as &[&str],
            &depths,
            &types as &[&str],
            &senders as &[&str],
            &ts,
            &pdus as &[&str],
            &snapshots,
            &relates_to as &[Option<&str>],
            &rel_types as &[Option<&str>],
            &prevs,
            &auths,
            &from as &[Option<&str>],
            head.as_ref().map(|h| h.snapshot_id),
            head.as_ref().map_or(&[][..], |h| h.extremities),
            head.as_ref().map_or(0, |h| h.max_depth)
        )
        .fetch_one(&mut *self.tx)
        .await?;
        self.notified_upto = self.notified_upto.max(row.position);
        Ok(row.position)
    }

    /// The accepted redactions of this room (in the timeline: neither rejected nor soft-failed)
    /// that name one of `targets`, in stream order: a redaction may arrive before the event it
    /// names, and applies when that event is written (in the timeline, as an outlier, or
    /// soft-failed). One statement for many targets (a join's state).
    pub async fn redactions_naming(&mut self, targets: &[String]) -> StorageResult<Vec<NamingRedaction>> {
        Ok(sqlx::query_as!(
            NamingRedaction,
            r#"SELECT event_id, redacts AS "redacts!", pdu, state_before AS "state_before!" FROM events
               WHERE redacts = ANY($1) AND room_id = $2 AND NOT outlier AND rejected IS NULL AND NOT soft_failed
               ORDER BY stream_ordering"#,
            targets,
            self.room_id
        )
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// What accepting a run of received events starts from, in one round trip: the room's
    /// head (`None` for a room unknown here), the redactions in its timeline that name one of
    /// `run` (as [`Self::redactions_naming`]), what is stored of `named` (as
    /// [`Self::stored_events`]) and the room's current server ACL event.
    pub async fn run_start(&mut self, run: &[String], named: &[String]) -> StorageResult<Option<RunStart>> {
        let Some(row) = sqlx::query!(
            r#"SELECT r.room_version, s.snapshot_id AS "snapshot_id?", ss.chain_depth AS "chain_depth?",
                      s.forward_extremities AS "forward_extremities?", s.max_depth AS "max_depth?",
                      (SELECT g.algorithm FROM mls_groups g WHERE g.room_id = r.room_id) AS "mls_algorithm?",
                      (SELECT COALESCE(json_agg(json_build_object('event_id', e.event_id, 'redacts', e.redacts,
                                                                  'pdu', e.pdu, 'state_before', e.state_before)
                                                ORDER BY e.stream_ordering), '[]')
                       FROM events e
                       WHERE e.redacts = ANY($2) AND e.room_id = $1 AND NOT e.outlier AND e.rejected IS NULL
                         AND NOT e.soft_failed) AS "waiting!: sqlx::types::Json<Vec<NamingRedaction>>",
                      (SELECT COALESCE(json_agg(json_build_object('event_id', e.event_id, 'room_id', e.room_id,
                                                                  'outlier', e.outlier,
                                                                  'rejected', e.rejected IS NOT NULL,
                                                                  'state_before', e.state_before,
                                                                  'state_after', e.state_after, 'depth', e.depth,
                                                                  'soft_failed', e.soft_failed)), '[]')
                       FROM events e WHERE e.event_id = ANY($3)) AS "stored!: sqlx::types::Json<Vec<StoredEventInfo>>",
                      acl.event_id AS "acl_event_id?", acl.pdu AS "acl_pdu?"
               FROM rooms r
               LEFT JOIN room_current_snapshot s ON s.room_id = r.room_id
               LEFT JOIN state_snapshots ss ON ss.snapshot_id = s.snapshot_id
               LEFT JOIN LATERAL (
                   SELECT e.event_id, e.pdu FROM room_current_state c JOIN events e ON e.event_id = c.event_id
                   WHERE c.room_id = r.room_id AND c.event_type = 'm.room.server_acl' AND c.state_key = ''
               ) acl ON TRUE
               WHERE r.room_id = $1"#,
            self.room_id,
            run,
            named
        )
        .fetch_optional(&mut *self.tx)
        .await?
        else {
            return Ok(None);
        };
        let head = RoomHead {
            room_version: row.room_version,
            snapshot_id: row.snapshot_id.unwrap_or(0),
            snapshot_depth: row.chain_depth.unwrap_or(0),
            max_depth: row.max_depth.unwrap_or(0),
            forward_extremities: row.forward_extremities.unwrap_or_default(),
            known_txns: Vec::new(),
            mls_algorithm: row.mls_algorithm,
        };
        let acl = row.acl_event_id.zip(row.acl_pdu);
        Ok(Some(RunStart { head, waiting: row.waiting.0, stored: row.stored.0, acl }))
    }

    /// Reserves `n` positions below everything stored for events fetched from the room's
    /// history, returning the lowest; the caller gives the oldest event the lowest position.
    pub async fn reserve_history_positions(&mut self, n: i64) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!(
            "UPDATE stream_heads SET position = position - $1 WHERE stream = 'outliers' RETURNING position",
            n
        )
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// Moves the room's head: its current snapshot, forward extremities (deepest first) and
    /// the position of its last event.
    pub async fn set_head(
        &mut self,
        snapshot_id: i64,
        extremities: &[String],
        max_depth: i64,
        last_stream: i64,
    ) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO room_current_snapshot AS h (room_id, snapshot_id, last_stream, forward_extremities, max_depth)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (room_id) DO UPDATE SET snapshot_id = EXCLUDED.snapshot_id,
                 last_stream = GREATEST(h.last_stream, EXCLUDED.last_stream),
                 forward_extremities = EXCLUDED.forward_extremities,
                 max_depth = GREATEST(h.max_depth, EXCLUDED.max_depth)",
            self.room_id,
            snapshot_id,
            last_stream,
            extremities,
            max_depth
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Applies changes to the current state: `(type, state_key, Some(event))` sets an entry,
    /// `None` removes it.
    pub async fn change_current_state(&mut self, changes: &[(String, String, Option<String>)]) -> StorageResult<()> {
        let (set, removed): (Vec<_>, Vec<_>) = changes.iter().partition(|(_, _, e)| e.is_some());
        if !set.is_empty() {
            let (types, (keys, ids)): (Vec<&str>, (Vec<&str>, Vec<&str>)) =
                set.iter().map(|(t, k, e)| (t.as_str(), (k.as_str(), e.as_deref().unwrap_or_default()))).unzip();
            sqlx::query!(
                "INSERT INTO room_current_state (room_id, event_type, state_key, event_id)
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[])
                 ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = EXCLUDED.event_id",
                self.room_id,
                &types as &[&str],
                &keys as &[&str],
                &ids as &[&str]
            )
            .execute(&mut *self.tx)
            .await?;
        }
        if removed.is_empty() {
            return Ok(());
        }
        let (types, keys): (Vec<&str>, Vec<&str>) = removed.iter().map(|(t, k, _)| (t.as_str(), k.as_str())).unzip();
        sqlx::query!(
            "DELETE FROM room_current_state c USING UNNEST($2::text[], $3::text[]) AS d(event_type, state_key)
             WHERE c.room_id = $1 AND c.event_type = d.event_type AND c.state_key = d.state_key",
            self.room_id,
            &types as &[&str],
            &keys as &[&str]
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Which of these events are stored (in any room), and how.
    pub async fn stored_events(&mut self, ids: &[String]) -> StorageResult<Vec<StoredEventInfo>> {
        Ok(sqlx::query_as!(
            StoredEventInfo,
            r#"SELECT event_id, room_id, outlier, rejected IS NOT NULL AS "rejected!", state_before, state_after, depth,
                      soft_failed
               FROM events WHERE event_id = ANY($1)"#,
            ids
        )
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// The events an event built on `prev` replaces as forward extremities: `prev`, and behind
    /// each soft-failed (or rejected) event among them its own prev events, walking back until
    /// an event that is neither. (What a soft-failed event built on stays replaced by whatever
    /// is accepted on top of it.)
    pub async fn replaced_through_soft_failed(&mut self, prev: &[String]) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            r#"WITH RECURSIVE walk(event_id) AS (
                   SELECT unnest($1::text[])
                 UNION
                   SELECT unnest(e.prev_events) FROM walk w
                   JOIN events e ON e.event_id = w.event_id AND e.room_id = $2
                   WHERE e.soft_failed OR e.rejected IS NOT NULL
               )
               SELECT event_id AS "event_id!" FROM walk"#,
            prev,
            self.room_id
        )
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// The state a snapshot stands for: `(type, state_key, event_id)`.
    pub async fn snapshot_state(&mut self, snapshot_id: i64) -> StorageResult<Vec<(String, String, String)>> {
        let rows = sqlx::query!(
            r#"WITH RECURSIVE chain(snapshot_id, parent_id, level) AS (
                   SELECT snapshot_id, parent_id, 0 FROM state_snapshots WHERE snapshot_id = $1
                 UNION ALL
                   SELECT s.snapshot_id, s.parent_id, c.level + 1 FROM chain c
                   JOIN state_snapshots s ON s.snapshot_id = c.parent_id
               )
               SELECT DISTINCT ON (k.key_nid) k.event_type AS "event_type!", k.state_key AS "state_key!",
                      x.event_id AS "event_id!"
               FROM chain c JOIN state_snapshot_entries x ON x.snapshot_id = c.snapshot_id
               JOIN state_keys k ON k.key_nid = x.key_nid
               ORDER BY k.key_nid, c.level"#,
            snapshot_id
        )
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows.into_iter().map(|r| (r.event_type, r.state_key, r.event_id)).collect())
    }

    /// How many ancestors a snapshot has (0 for a full one).
    pub async fn snapshot_depth(&mut self, snapshot_id: i64) -> StorageResult<i32> {
        Ok(sqlx::query_scalar!("SELECT chain_depth FROM state_snapshots WHERE snapshot_id = $1", snapshot_id)
            .fetch_one(&mut *self.tx)
            .await?)
    }

    /// The ids in the auth chains of the given events (without them), as far as stored.
    pub async fn auth_chain_ids(&mut self, ids: &[String]) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            r#"WITH RECURSIVE chain(event_id) AS (
                   SELECT unnest(auth_events) FROM events WHERE event_id = ANY($1)
                 UNION
                   SELECT unnest(e.auth_events) FROM chain c JOIN events e ON e.event_id = c.event_id
               )
               SELECT event_id AS "event_id!" FROM chain"#,
            ids
        )
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// Keeps the stripped state another server sent with an invite of `user_id`.
    pub async fn remember_invite_state(
        &mut self,
        user_id: &str,
        event_id: &str,
        invite_state: &serde_json::Value,
    ) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO remote_invites (room_id, user_id, event_id, invite_state) VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_id, user_id) DO UPDATE SET event_id = EXCLUDED.event_id,
                 invite_state = EXCLUDED.invite_state",
            self.room_id,
            user_id,
            event_id,
            invite_state
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Registers a room this server learns of from another server (a join or an invite), if
    /// it is not known yet.
    pub async fn ensure_room(&mut self, version: &str, creator: &str, now: i64) -> StorageResult<()> {
        super::insert_room_if_unknown(&mut self.tx, &self.room_id, version, creator, now).await
    }
}

/// Writes outliers of a room (see [`RoomWriter::insert_outliers`]) on the given connection:
/// below the position `top` reserved for them by [`reserve_outlier_positions`], or at
/// positions taken now. The rows travel as parallel arrays, one per column (no JSON document of
/// every event to build and parse); each event's lists of ids, which differ in length, travel
/// as one short JSON array per event, read back per row (slices of one long array per row
/// would cost time quadratic in the rows).
async fn insert_outlier_rows(
    conn: &mut sqlx::PgConnection,
    room_id: &str,
    events: &[OutlierEvent<'_>],
    top: Option<i64>,
) -> StorageResult<()> {
    let n = events.len();
    let (mut ids, mut depths, mut types, mut keys, mut senders, mut stamps, mut pdus) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut rejected, mut soft_failed, mut before, mut after, mut from, mut redacts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut prevs, mut auths) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let ids_json = |ids: &[String]| serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned());
    for e in events {
        ids.push(e.event_id);
        depths.push(e.depth);
        types.push(e.event_type);
        keys.push(e.state_key);
        senders.push(e.sender);
        stamps.push(e.origin_server_ts);
        pdus.push(e.pdu);
        rejected.push(e.rejected);
        soft_failed.push(e.soft_failed);
        before.push(e.state_before);
        after.push(e.state_after.or(e.state_before));
        from.push(e.received_from);
        redacts.push(e.redacts);
        prevs.push(ids_json(e.prev_events));
        auths.push(ids_json(e.auth_events));
    }
    let count = i64::try_from(n).unwrap_or(i64::MAX);
    sqlx::query!(
        r#"WITH pos AS (
               UPDATE stream_heads SET position = position - $16
               WHERE stream = 'outliers' AND $18::bigint IS NULL
               RETURNING position + $16 AS top),
           at AS (SELECT COALESCE((SELECT top FROM pos), $18::bigint) AS top)
           INSERT INTO events (event_id, room_id, stream_ordering, depth, event_type, state_key, sender,
                               origin_server_ts, pdu, state_before, state_after, prev_events, auth_events,
                               outlier, rejected, soft_failed, received_from, redacts)
           SELECT r.event_id, $1, at.top - r.i, r.depth, r.event_type, r.state_key, r.sender,
                  r.origin_server_ts, r.pdu, r.state_before, r.state_after,
                  ARRAY(SELECT x FROM jsonb_array_elements_text(r.prevs::jsonb) WITH ORDINALITY AS t(x, o) ORDER BY o),
                  ARRAY(SELECT x FROM jsonb_array_elements_text(r.auths::jsonb) WITH ORDINALITY AS t(x, o) ORDER BY o),
                  TRUE, r.rejected, r.soft_failed, r.received_from, r.redacts
           FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[],
                       $9::text[], $10::text[], $11::text[], $12::boolean[], $13::bigint[], $14::bigint[],
                       $15::text[], $17::text[])
                WITH ORDINALITY AS r(event_id, depth, event_type, state_key, sender, origin_server_ts, pdu,
                                     prevs, auths, rejected, soft_failed,
                                     state_before, state_after, received_from, redacts, i),
                at
           ORDER BY r.i
           ON CONFLICT (event_id) DO NOTHING"#,
        room_id,
        &ids as &[&str],
        &depths,
        &types as &[&str],
        &keys as &[Option<&str>],
        &senders as &[&str],
        &stamps,
        &pdus as &[&str],
        &prevs,
        &auths,
        &rejected as &[Option<&str>],
        &soft_failed,
        &before as &[Option<i64>],
        &after as &[Option<i64>],
        &from as &[Option<&str>],
        count,
        &redacts as &[Option<&str>],
        top
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Reserves `n` positions below the timeline for outliers, in a statement of its own (the
/// counter's row stays locked only for it); returns the position they lie below.
pub async fn reserve_outlier_positions(pool: &sqlx::PgPool, n: usize) -> StorageResult<i64> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    Ok(sqlx::query_scalar!(
        r#"UPDATE stream_heads SET position = position - $1 WHERE stream = 'outliers'
           RETURNING position + $1 AS "top!""#,
        n
    )
    .fetch_one(pool)
    .await?)
}

/// Writes outliers of a room in a transaction of their own, without the room's lock, at the
/// positions below `top` (reserved by [`reserve_outlier_positions`]): a join's thousands of
/// state events are written on several connections at once. Outliers are what other servers
/// sent, checked; a join that fails after them leaves them stored, as a later attempt would
/// store them. The commit does not wait for the WAL flush: the join's own commit comes later
/// and flushes it too.
pub async fn insert_outliers_detached(
    pool: &sqlx::PgPool,
    room_id: &str,
    events: &[OutlierEvent<'_>],
    top: i64,
) -> StorageResult<()> {
    let mut tx = pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off").await?;
    insert_outlier_rows(&mut tx, room_id, events, Some(top)).await?;
    tx.commit().await?;
    Ok(())
}
