//! What a `/sync` reads before it looks at any room, in one statement: the streams' positions,
//! the user's memberships with which rooms have new events (and for an incremental sync their
//! newest events, the first batch of their timelines), the push rules and display name the
//! unread counts are evaluated with, and the device's key counts. A woken sync used to read these
//! with seven statements at once, which on a small machine queue behind each other, and then
//! each room's timeline with one more.

use serde::Deserialize;

use super::{EventRow, MembershipRow, RoomStore, SyncPositions};
use crate::storage::{StorageResult, e2ee::KeyCounts};

/// What a room's current state was read at: its state snapshot and how many of its state events
/// are redacted (a redaction changes a state event without changing the snapshot).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct StateVersion {
    pub snapshot_id: i64,
    pub redacted_state: i64,
}

/// A membership as a sync sees it.
#[derive(Clone, Debug, Deserialize)]
pub struct SyncMembership {
    #[serde(flatten)]
    pub row: MembershipRow,
    /// The room has events after the token (every room when there is no token).
    pub active: bool,
    /// For an active joined room: its current state's version.
    pub state_version: Option<StateVersion>,
    /// For an active joined room: the position of the user's read receipt (0 without one).
    pub read_up_to: Option<i64>,
    /// For an active joined room of an incremental sync that asked for them: its newest events
    /// after the token, newest first, at most the batch asked for.
    #[serde(default)]
    pub recent: Option<Vec<RecentEvent>>,
}

/// A timeline event read with the basis, with whether others relate to it.
#[derive(Clone, Debug, Deserialize)]
pub struct RecentEvent {
    #[serde(flatten)]
    pub row: EventRow,
    pub related: bool,
}

impl SyncMembership {
    /// A membership whose room's state version and read receipt were not read with it.
    pub fn without_room_facts(row: &MembershipRow) -> Self {
        Self { row: row.clone(), active: true, state_version: None, read_up_to: None, recent: None }
    }
}

/// The answer of [`RoomStore::sync_basis`].
#[derive(Debug)]
pub struct SyncBasis {
    pub positions: SyncPositions,
    /// The stored `m.push_rules` account data, if the user ever changed a rule.
    pub push_rules: Option<serde_json::Value>,
    pub displayname: Option<String>,
    pub key_counts: KeyCounts,
    /// Not forgotten memberships, in stream order.
    pub memberships: Vec<SyncMembership>,
    /// A membership in one of the user's rooms (theirs included) changed after the token.
    pub members_changed: bool,
}

impl RoomStore {
    /// One statement for everything a sync needs before its rooms; `since` is the token's events
    /// position (`None`: an initial sync, every room active). With `since` and `timeline_batch`,
    /// each active joined room's newest events after `since`, at most `timeline_batch`.
    pub async fn sync_basis(
        &self,
        user_id: &str,
        device_id: &str,
        since: Option<i64>,
        timeline_batch: Option<i64>,
    ) -> StorageResult<SyncBasis> {
        let r = sqlx::query!(
            r#"WITH heads AS (
                   SELECT COALESCE((SELECT position FROM stream_heads WHERE stream = 'events'), 0) AS events,
                          COALESCE((SELECT position FROM stream_heads WHERE stream = 'receipts'), 0) AS receipts,
                          COALESCE((SELECT position FROM stream_heads WHERE stream = 'to_device'), 0) AS to_device,
                          COALESCE((SELECT MAX(stream_id) FROM account_data WHERE user_id = $1), 0) AS account_data,
                          COALESCE((SELECT position FROM stream_heads WHERE stream = 'device_lists'), 0)
                              AS device_lists,
                          COALESCE((SELECT position FROM stream_heads WHERE stream = 'presence'), 0) AS presence),
               mine AS (
                   SELECT m.room_id, m.user_id, m.membership, m.event_id, m.stream_ordering, m.forgotten,
                          s.snapshot_id,
                          m.membership = 'join' AND ($3::bigint IS NULL OR (s.last_stream > $3 AND EXISTS (
                              SELECT 1 FROM events e WHERE e.room_id = m.room_id
                                AND e.stream_ordering > $3 AND e.stream_ordering <= h.events))) AS active
                   FROM room_memberships m CROSS JOIN heads h
                   LEFT JOIN room_current_snapshot s ON s.room_id = m.room_id
                   WHERE m.user_id = $1 AND NOT m.forgotten)
               SELECT h.events AS "events!", h.receipts AS "receipts!", h.to_device AS "to_device!",
                      h.account_data AS "account_data!", h.device_lists AS "device_lists!",
                      h.presence AS "presence!",
                      (SELECT content FROM account_data
                       WHERE user_id = $1 AND room_id = '' AND data_type = 'm.push_rules') AS "push_rules?",
                      (SELECT displayname FROM users WHERE user_id = $1) AS "displayname?",
                      k.algorithms AS "algorithms!", k.counts AS "counts!", k.unused_fallback AS "unused_fallback!",
                      COALESCE((SELECT json_agg(json_build_object(
                                    'room_id', m.room_id, 'user_id', m.user_id, 'membership', m.membership,
                                    'event_id', m.event_id, 'stream_ordering', m.stream_ordering,
                                    'forgotten', m.forgotten, 'active', m.active,
                                    'state_version', CASE WHEN m.active AND m.snapshot_id IS NOT NULL THEN
                                        json_build_object('snapshot_id', m.snapshot_id, 'redacted_state',
                                            (SELECT count(*) FROM events x WHERE x.room_id = m.room_id
                                             AND x.redacted_by IS NOT NULL AND x.state_key IS NOT NULL)) END,
                                    'read_up_to', CASE WHEN m.active THEN COALESCE(
                                        (SELECT MAX(e.stream_ordering) FROM receipts r JOIN events e USING (event_id)
                                         WHERE r.room_id = m.room_id AND r.user_id = $1
                                           AND r.receipt_type IN ('m.read', 'm.read.private')), 0) END,
                                    'recent', CASE WHEN m.active AND $3::bigint IS NOT NULL AND $4::bigint IS NOT NULL
                                        THEN (SELECT COALESCE(json_agg(t ORDER BY t.stream_ordering DESC), '[]') FROM (
                                            SELECT e.event_id, e.room_id, e.stream_ordering, e.event_type, e.state_key,
                                                   e.sender, e.pdu, e.redacted_by, e.sender_device, e.txn_id,
                                                   p.pdu AS prev_pdu, r.pdu AS redaction_pdu,
                                                   EXISTS (SELECT 1 FROM events x WHERE x.relates_to = e.event_id)
                                                       AS related
                                            FROM events e LEFT JOIN events p ON p.event_id = e.replaces_state
                                            LEFT JOIN events r ON r.event_id = e.redacted_by
                                            WHERE e.room_id = m.room_id AND e.stream_ordering > $3
                                              AND e.stream_ordering <= (SELECT events FROM heads) AND NOT e.outlier
                                            ORDER BY e.stream_ordering DESC LIMIT $4) t) END)
                                  ORDER BY m.stream_ordering) FROM mine m), '[]')
                          AS "memberships!: sqlx::types::Json<Vec<SyncMembership>>",
                      $3::bigint IS NOT NULL AND EXISTS (
                          SELECT 1 FROM room_memberships o JOIN room_memberships m USING (room_id)
                          WHERE o.user_id = $1 AND m.stream_ordering > $3 AND m.stream_ordering <= h.events)
                          AS "members_changed!"
               FROM heads h CROSS JOIN e2e_key_counts($1, $2) k"#,
            user_id,
            device_id,
            since,
            timeline_batch
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(SyncBasis {
            positions: SyncPositions {
                events: r.events,
                receipts: r.receipts,
                to_device: r.to_device,
                account_data: r.account_data,
                device_lists: r.device_lists,
                presence: r.presence,
            },
            push_rules: r.push_rules,
            displayname: r.displayname,
            key_counts: KeyCounts {
                one_time: r.algorithms.into_iter().zip(r.counts).collect(),
                unused_fallback: r.unused_fallback,
            },
            memberships: r.memberships.0,
            members_changed: r.members_changed,
        })
    }

    /// The room's current state events with the version they were read at, in one statement.
    pub async fn current_state_versioned(&self, room_id: &str) -> StorageResult<(Option<StateVersion>, Vec<EventRow>)> {
        let rows = sqlx::query!(
            r#"WITH version AS (
                   SELECT (SELECT snapshot_id FROM room_current_snapshot WHERE room_id = $1) AS snapshot_id,
                          (SELECT count(*) FROM events WHERE room_id = $1
                           AND redacted_by IS NOT NULL AND state_key IS NOT NULL) AS redacted_state)
               SELECT v.snapshot_id AS "snapshot_id?", v.redacted_state AS "redacted_state!",
                      e.event_id, e.room_id, e.stream_ordering, e.event_type, e.state_key, e.sender, e.pdu,
                      e.redacted_by, e.sender_device, e.txn_id, p.pdu AS "prev_pdu?", r.pdu AS "redaction_pdu?"
               FROM version v CROSS JOIN room_current_state c JOIN events e ON e.event_id = c.event_id
               LEFT JOIN events p ON p.event_id = e.replaces_state
               LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE c.room_id = $1 ORDER BY e.stream_ordering"#,
            room_id
        )
        .fetch_all(&self.pool)
        .await?;
        let version = rows.first().and_then(|r| {
            r.snapshot_id.map(|snapshot_id| StateVersion { snapshot_id, redacted_state: r.redacted_state })
        });
        let events = rows.into_iter().map(|r| event_row!(r)).collect();
        Ok((version, events))
    }
}
