//! The write side of a room: one transaction that holds the room's advisory lock, reads the
//! current state, and persists new events with their state snapshots and stream positions.
//!
//! The advisory lock serialises persistence per room across every `poststelle` process on the
//! database; the `stream_heads` row lock taken last orders positions by commit.

use sqlx::{Postgres, Transaction};

use super::StorageResult;

/// Snapshots deeper than this are written in full, so reading any state walks at most this many
/// snapshot rows.
pub const MAX_SNAPSHOT_CHAIN: i32 = 64;

/// The room as the writer found it under the lock.
#[derive(Clone, Debug)]
pub struct RoomHead {
    pub room_version: String,
    pub snapshot_id: i64,
    pub snapshot_depth: i32,
    pub forward_extremities: Vec<String>,
    pub max_depth: i64,
}

/// A new event, ready to be written.
#[derive(Debug)]
pub struct NewEvent<'a> {
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub depth: i64,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub origin_server_ts: i64,
    pub pdu: &'a str,
    pub state_before: i64,
    pub state_after: i64,
    pub replaces_state: Option<&'a str>,
    pub relates_to: Option<&'a str>,
    pub rel_type: Option<&'a str>,
    pub sender_device: Option<&'a str>,
    pub txn_id: Option<&'a str>,
    pub prev_events: &'a [String],
}

/// An open write transaction on one room.
pub struct RoomWriter {
    tx: Transaction<'static, Postgres>,
    room_id: String,
}

impl std::fmt::Debug for RoomWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomWriter").field("room_id", &self.room_id).finish_non_exhaustive()
    }
}

impl RoomWriter {
    /// Begins a transaction and takes the room's advisory lock (held until commit or rollback).
    pub async fn begin(pool: &sqlx::PgPool, room_id: &str) -> StorageResult<Self> {
        let mut tx = pool.begin().await?;
        sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended('room:' || $1, 0))", room_id)
            .execute(&mut *tx)
            .await?;
        Ok(Self { tx, room_id: room_id.to_owned() })
    }

    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    /// Registers a new room (before its create event is written).
    pub async fn insert_room(&mut self, version: &str, creator: &str, now: i64) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)",
            self.room_id,
            version,
            creator,
            now
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The room's version and current head, or `None` if the room does not exist here.
    pub async fn head(&mut self) -> StorageResult<Option<RoomHead>> {
        let Some(row) = sqlx::query!(
            r#"SELECT r.room_version, s.snapshot_id AS "snapshot_id?", ss.chain_depth AS "chain_depth?"
               FROM rooms r
               LEFT JOIN room_current_snapshot s ON s.room_id = r.room_id
               LEFT JOIN state_snapshots ss ON ss.snapshot_id = s.snapshot_id
               WHERE r.room_id = $1"#,
            self.room_id
        )
        .fetch_optional(&mut *self.tx)
        .await?
        else {
            return Ok(None);
        };
        let extremities = sqlx::query!(
            "SELECT f.event_id, e.depth FROM room_forward_extremities f JOIN events e USING (event_id)
             WHERE f.room_id = $1 ORDER BY e.depth DESC, e.stream_ordering DESC",
            self.room_id
        )
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(Some(RoomHead {
            room_version: row.room_version,
            snapshot_id: row.snapshot_id.unwrap_or(0),
            snapshot_depth: row.chain_depth.unwrap_or(0),
            max_depth: extremities.iter().map(|e| e.depth).max().unwrap_or(0),
            forward_extremities: extremities.into_iter().map(|e| e.event_id).collect(),
        }))
    }

    /// The room's current state: `(type, state_key, event_id)`.
    pub async fn current_state(&mut self) -> StorageResult<Vec<(String, String, String)>> {
        Ok(sqlx::query!(
            "SELECT event_type, state_key, event_id FROM room_current_state WHERE room_id = $1",
            self.room_id
        )
        .fetch_all(&mut *self.tx)
        .await?
        .into_iter()
        .map(|r| (r.event_type, r.state_key, r.event_id))
        .collect())
    }

    /// PDUs by id (as stored), for auth checks.
    pub async fn pdus(&mut self, ids: &[String]) -> StorageResult<Vec<(String, String)>> {
        Ok(sqlx::query!("SELECT event_id, pdu FROM events WHERE event_id = ANY($1)", ids)
            .fetch_all(&mut *self.tx)
            .await?
            .into_iter()
            .map(|r| (r.event_id, r.pdu))
            .collect())
    }

    /// The event an earlier request with this transaction id produced, if any.
    pub async fn txn_event(&mut self, user_id: &str, device_id: &str, txn_id: &str) -> StorageResult<Option<String>> {
        Ok(sqlx::query_scalar!(
            "SELECT event_id FROM event_txns WHERE user_id = $1 AND device_id = $2 AND txn_id = $3",
            user_id,
            device_id,
            txn_id
        )
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// Writes a snapshot: `entries` laid over `parent` (or a full snapshot when `parent` is
    /// `None`). Returns the new snapshot's id.
    pub async fn write_snapshot(
        &mut self,
        parent: Option<(i64, i32)>,
        entries: &[(String, String, String)],
    ) -> StorageResult<(i64, i32)> {
        let depth = parent.map(|(_, d)| d + 1).unwrap_or(0);
        let id = sqlx::query_scalar!(
            "INSERT INTO state_snapshots (room_id, parent_id, chain_depth) VALUES ($1, $2, $3) RETURNING snapshot_id",
            self.room_id,
            parent.map(|(id, _)| id),
            depth
        )
        .fetch_one(&mut *self.tx)
        .await?;
        let (types, (keys, events)): (Vec<&str>, (Vec<&str>, Vec<&str>)) =
            entries.iter().map(|(t, k, e)| (t.as_str(), (k.as_str(), e.as_str()))).unzip();
        sqlx::query!(
            "INSERT INTO state_keys (event_type, state_key)
             SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
            &types as &[&str],
            &keys as &[&str]
        )
        .execute(&mut *self.tx)
        .await?;
        sqlx::query!(
            "INSERT INTO state_snapshot_entries (snapshot_id, key_nid, event_id)
             SELECT $1, k.key_nid, n.event_id
             FROM UNNEST($2::text[], $3::text[], $4::text[]) AS n(event_type, state_key, event_id)
             JOIN state_keys k USING (event_type, state_key)",
            id,
            &types as &[&str],
            &keys as &[&str],
            &events as &[&str]
        )
        .execute(&mut *self.tx)
        .await?;
        Ok((id, depth))
    }

    /// Allocates the next `n` positions of a stream; the row lock orders commits.
    pub async fn allocate_positions(&mut self, stream: &str, n: i64) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!(
            "UPDATE stream_heads SET position = position + $2 WHERE stream = $1 RETURNING position",
            stream,
            n
        )
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// Writes an event at `stream_ordering` and moves the room's head to it.
    pub async fn insert_event(&mut self, e: &NewEvent<'_>, stream_ordering: i64) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO events (event_id, room_id, stream_ordering, depth, event_type, state_key, sender,
                                 origin_server_ts, pdu, state_before, state_after, replaces_state, relates_to,
                                 rel_type, sender_device, txn_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            e.event_id,
            e.room_id,
            stream_ordering,
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
            e.sender_device,
            e.txn_id
        )
        .execute(&mut *self.tx)
        .await?;
        sqlx::query!(
            "DELETE FROM room_forward_extremities WHERE room_id = $1 AND event_id = ANY($2)",
            e.room_id,
            e.prev_events
        )
        .execute(&mut *self.tx)
        .await?;
        sqlx::query!("INSERT INTO room_forward_extremities (room_id, event_id) VALUES ($1, $2)", e.room_id, e.event_id)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query!(
            "INSERT INTO room_current_snapshot (room_id, snapshot_id, last_stream) VALUES ($1, $2, $3)
             ON CONFLICT (room_id) DO UPDATE SET snapshot_id = EXCLUDED.snapshot_id, last_stream = EXCLUDED.last_stream",
            e.room_id,
            e.state_after,
            stream_ordering
        )
        .execute(&mut *self.tx)
        .await?;
        if let Some(state_key) = e.state_key {
            sqlx::query!(
                "INSERT INTO room_current_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = EXCLUDED.event_id",
                e.room_id,
                e.event_type,
                state_key,
                e.event_id
            )
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Records a membership change of `user_id`.
    pub async fn set_membership(
        &mut self,
        user_id: &str,
        membership: &str,
        event_id: &str,
        stream_ordering: i64,
        sender: &str,
    ) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO room_memberships (room_id, user_id, membership, event_id, stream_ordering, sender)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = EXCLUDED.membership,
                 event_id = EXCLUDED.event_id, stream_ordering = EXCLUDED.stream_ordering,
                 sender = EXCLUDED.sender, forgotten = FALSE",
            self.room_id,
            user_id,
            membership,
            event_id,
            stream_ordering,
            sender
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Remembers which event a client transaction produced.
    pub async fn record_txn(
        &mut self,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
        event_id: &str,
        now: i64,
    ) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO event_txns (user_id, device_id, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, $5)",
            user_id,
            device_id,
            txn_id,
            event_id,
            now
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Marks an event of this room redacted (the redaction itself has passed auth).
    pub async fn mark_redacted(&mut self, target: &str, redaction_id: &str) -> StorageResult<()> {
        sqlx::query!(
            "UPDATE events SET redacted_by = $3 WHERE event_id = $1 AND room_id = $2 AND redacted_by IS NULL",
            target,
            self.room_id,
            redaction_id
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Updates the room's directory visibility.
    pub async fn set_public(&mut self, public: bool) -> StorageResult<()> {
        sqlx::query!("UPDATE rooms SET is_public = $2 WHERE room_id = $1", self.room_id, public)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Registers an alias for this room inside the same transaction (createRoom).
    pub async fn insert_alias(&mut self, alias: &str, creator: &str, now: i64) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)",
            alias,
            self.room_id,
            creator,
            now
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Wakes every process waiting on streams (delivered at commit).
    pub async fn notify(&mut self, payload: &str) -> StorageResult<()> {
        sqlx::query!("SELECT pg_notify('poststelle_streams', $1)", payload).execute(&mut *self.tx).await?;
        Ok(())
    }

    pub async fn commit(self) -> StorageResult<()> {
        self.tx.commit().await?;
        Ok(())
    }
}
