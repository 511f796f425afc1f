//! The write side of a room: one transaction that holds the room's advisory lock, reads the
//! current state, and persists new events with their state snapshots and stream positions.
//!
//! The advisory lock serialises persistence per room across every `poststelle` process on the
//! database; the `stream_heads` row lock taken last orders positions by commit.

use sqlx::{Postgres, Transaction};

use super::StorageResult;

mod mls;
mod remote;
pub use mls::{AcceptedCommitRow, StoredGroup, WelcomeRow};
pub use remote::{
    HeadMove, NamingRedaction, OutlierEvent, RemoteEvent, RunStart, StoredEventInfo, insert_outliers_detached,
    reserve_outlier_positions,
};

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
    /// For the transaction keys asked about: `(index among them, event it produced)`.
    pub known_txns: Vec<(usize, String)>,
    /// The algorithm of the room's MLS group, if it has one (read here to save a round trip
    /// per received event).
    pub mls_algorithm: Option<String>,
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
    /// What the transaction is recorded under for idempotency (see `Txn::key`).
    pub txn_key: Option<&'a str>,
    pub prev_events: &'a [String],
    pub auth_events: &'a [String],
    /// For a redaction: the event it names.
    pub redacts: Option<&'a str>,
}

/// An open write transaction on one room.
/// The advisory lock key of a room: the first 8 bytes of SHA-256 over `room:` and its id, the
/// same in every process.
fn room_lock_key(room_id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new().chain_update(b"room:").chain_update(room_id.as_bytes()).finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Where an event goes in the events stream.
#[derive(Clone, Copy, Debug)]
pub enum StreamSlot {
    /// The first of `n` positions, allocated by this insert (the transaction's first event).
    FirstOf(i64),
    /// A position allocated earlier in the transaction, or reserved below the timeline for
    /// history fetched from other servers.
    At(i64),
}

/// Where an inserted event went.
#[derive(Clone, Copy, Debug)]
pub struct InsertedEvent {
    pub position: i64,
    /// The last position allocated, when this insert allocated them.
    pub last_allocated: Option<i64>,
}

pub struct RoomWriter {
    tx: Transaction<'static, Postgres>,
    room_id: String,
    /// The newest events position this transaction allocated (and notified at its commit).
    notified_upto: i64,
    /// Whether it wrote events of ours that came back from another server (an invite it
    /// countersigned, a join or leave through a resident server): the federation sender
    /// queues those as it queues local events.
    wrote_own_events: bool,
}

impl std::fmt::Debug for RoomWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomWriter").field("room_id", &self.room_id).finish_non_exhaustive()
    }
}

impl RoomWriter {
    /// Begins a transaction and takes the room's advisory lock (held until commit or rollback),
    /// in one round trip.
    pub async fn begin(pool: &sqlx::PgPool, room_id: &str) -> StorageResult<Self> {
        let statement = format!("BEGIN; SELECT pg_advisory_xact_lock({})", room_lock_key(room_id));
        let tx = pool.begin_with(sqlx::AssertSqlSafe(statement)).await?;
        Ok(Self { tx, room_id: room_id.to_owned(), notified_upto: 0, wrote_own_events: false })
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

    /// The room's version and current head, or `None` if the room does not exist here; with the
    /// events that earlier requests with the given `(user, device, transaction key)`s produced.
    pub async fn head(&mut self, txn_keys: &[(&str, &str, &str)]) -> StorageResult<Option<RoomHead>> {
        let (users, (devices, txns)): (Vec<&str>, (Vec<&str>, Vec<&str>)) =
            txn_keys.iter().map(|(u, d, t)| (*u, (*d, *t))).unzip();
        let Some(row) = sqlx::query!(
            r#"SELECT r.room_version, s.snapshot_id AS "snapshot_id?", ss.chain_depth AS "chain_depth?",
                      s.forward_extremities AS "forward_extremities?", s.max_depth AS "max_depth?",
                      x.indexes AS "txn_indexes?", x.event_ids AS "txn_events?",
                      (SELECT g.algorithm FROM mls_groups g WHERE g.room_id = r.room_id) AS "mls_algorithm?"
               FROM rooms r
               LEFT JOIN room_current_snapshot s ON s.room_id = r.room_id
               LEFT JOIN state_snapshots ss ON ss.snapshot_id = s.snapshot_id
               LEFT JOIN LATERAL (
                   -- One primary-key lookup per key: as a join, the planner's guess of 100 keys
                   -- made it scan the whole table instead.
                   SELECT array_agg(f.i ORDER BY f.i) AS indexes, array_agg(f.event_id ORDER BY f.i) AS event_ids
                   FROM (
                       SELECT k.i, (SELECT t.event_id FROM event_txns t
                                    WHERE t.user_id = k.user_id AND t.device_id = k.device_id
                                      AND t.txn_id = k.txn_id) AS event_id
                       FROM UNNEST($2::text[], $3::text[], $4::text[])
                            WITH ORDINALITY AS k(user_id, device_id, txn_id, i)
                   ) f
                   WHERE f.event_id IS NOT NULL
               ) x ON TRUE
               WHERE r.room_id = $1"#,
            self.room_id,
            &users as &[&str],
            &devices as &[&str],
            &txns as &[&str]
        )
        .fetch_optional(&mut *self.tx)
        .await?
        else {
            return Ok(None);
        };
        // `WITH ORDINALITY` counts from 1.
        let known_txns = row
            .txn_indexes
            .unwrap_or_default()
            .into_iter()
            .zip(row.txn_events.unwrap_or_default())
            .filter_map(|(i, event_id)| Some((usize::try_from(i).ok()?.checked_sub(1)?, event_id)))
            .collect();
        Ok(Some(RoomHead {
            room_version: row.room_version,
            snapshot_id: row.snapshot_id.unwrap_or(0),
            snapshot_depth: row.chain_depth.unwrap_or(0),
            max_depth: row.max_depth.unwrap_or(0),
            forward_extremities: row.forward_extremities.unwrap_or_default(),
            known_txns,
            mls_algorithm: row.mls_algorithm,
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

    /// Writes a snapshot: `entries` laid over `parent` (or a full snapshot when `parent` is
    /// `None`). Returns the new snapshot's id.
    pub async fn write_snapshot(
        &mut self,
        parent: Option<(i64, i32)>,
        entries: &[(String, String, String)],
    ) -> StorageResult<(i64, i32)> {
        insert_snapshot(&mut self.tx, &self.room_id, parent, entries).await
    }

    /// Writes an event, moves the room's head to it and records the client transaction that
    /// produced it, in one statement. The transaction's first event also allocates the positions
    /// of all its events and announces the last one to every process (delivered at commit): the
    /// `stream_heads` row lock taken there orders commits.
    pub async fn insert_event(&mut self, e: &NewEvent<'_>, slot: StreamSlot, now: i64) -> StorageResult<InsertedEvent> {
        let (allocate, at) = match slot {
            StreamSlot::FirstOf(n) => (n, 0),
            StreamSlot::At(position) => (0, position),
        };
        let row = sqlx::query!(
            r#"WITH alloc AS (
                   UPDATE stream_heads SET position = position + $20
                   WHERE stream = 'events' AND $20::bigint > 0
                   RETURNING position),
               pos AS (SELECT COALESCE((SELECT position - $20 + 1 FROM alloc), $3) AS p),
               event AS (
                   INSERT INTO events (event_id, room_id, stream_ordering, depth, event_type, state_key, sender,
                                       origin_server_ts, pdu, state_before, state_after, replaces_state, relates_to,
                                       rel_type, sender_device, txn_id, prev_events, auth_events, redacts)
                   SELECT $1, $2, pos.p, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $21, $22
                   FROM pos),
               state AS (
                   INSERT INTO room_current_state (room_id, event_type, state_key, event_id)
                   SELECT $2, $5, $6, $1 WHERE $6::text IS NOT NULL
                   ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = EXCLUDED.event_id),
               txn AS (
                   INSERT INTO event_txns (user_id, device_id, txn_id, event_id, created_ts)
                   SELECT $7, $15, $18, $1, $19 WHERE $18::text IS NOT NULL AND $15::text IS NOT NULL),
               head AS (
                   INSERT INTO room_current_snapshot AS h (room_id, snapshot_id, last_stream, forward_extremities,
                                                           max_depth)
                   SELECT $2, $11, pos.p, ARRAY[$1], $4 FROM pos
                   ON CONFLICT (room_id) DO UPDATE SET
                       snapshot_id = EXCLUDED.snapshot_id,
                       last_stream = EXCLUDED.last_stream,
                       forward_extremities = ARRAY[$1] || ARRAY(
                           SELECT x.id FROM unnest(h.forward_extremities) WITH ORDINALITY AS x(id, n)
                           WHERE x.id <> ALL($17) ORDER BY x.n),
                       max_depth = GREATEST(h.max_depth, EXCLUDED.max_depth))
               SELECT pos.p AS "position!", (SELECT position FROM alloc) AS "last?",
                      (SELECT pg_notify('poststelle_streams', 'events ' || position) FROM alloc) IS NULL AS "notified?"
               FROM pos"#,
            e.event_id,
            e.room_id,
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
            e.sender_device,
            e.txn_id,
            e.prev_events,
            e.txn_key,
            now,
            allocate,
            e.auth_events,
            e.redacts
        )
        .fetch_one(&mut *self.tx)
        .await?;
        self.notified_upto = self.notified_upto.max(row.last.unwrap_or(0));
        Ok(InsertedEvent { position: row.position, last_allocated: row.last })
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

    /// Records the membership changes of a state change at one position:
    /// `(user, membership, event id, sender)`, one per user.
    pub async fn set_memberships(
        &mut self,
        changes: &[(String, String, String, String)],
        stream_ordering: i64,
    ) -> StorageResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let column = |pick: fn(&(String, String, String, String)) -> &str| changes.iter().map(pick).collect::<Vec<_>>();
        let (users, memberships) = (column(|c| &c.0), column(|c| &c.1));
        let (events, senders) = (column(|c| &c.2), column(|c| &c.3));
        sqlx::query!(
            "INSERT INTO room_memberships (room_id, user_id, membership, event_id, stream_ordering, sender)
             SELECT $1, u, m, e, $5, s FROM UNNEST($2::text[], $3::text[], $4::text[], $6::text[]) AS c(u, m, e, s)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = EXCLUDED.membership,
                 event_id = EXCLUDED.event_id, stream_ordering = EXCLUDED.stream_ordering,
                 sender = EXCLUDED.sender, forgotten = FALSE",
            self.room_id,
            &users as &[&str],
            &memberships as &[&str],
            &events as &[&str],
            stream_ordering,
            &senders as &[&str]
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

    /// Marks the point [`Self::rollback_to_savepoint`] returns to (one at a time), so that one
    /// step of a transaction that writes many events can fail alone.
    pub async fn savepoint(&mut self) -> StorageResult<()> {
        sqlx::query("SAVEPOINT step").execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Keeps what was written since [`Self::savepoint`].
    pub async fn release_savepoint(&mut self) -> StorageResult<()> {
        sqlx::query("RELEASE SAVEPOINT step").execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Undoes what was written since [`Self::savepoint`]; the transaction goes on.
    pub async fn rollback_to_savepoint(&mut self) -> StorageResult<()> {
        sqlx::query("ROLLBACK TO SAVEPOINT step").execute(&mut *self.tx).await?;
        Ok(())
    }

    /// The newest events position allocated so far: waiters woken after the commit see it.
    pub fn notified_upto(&self) -> i64 {
        self.notified_upto
    }

    /// Whether events of ours were written as received ones (see the field).
    pub fn wrote_own_events(&self) -> bool {
        self.wrote_own_events
    }

    pub async fn commit(self) -> StorageResult<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// Writes a room's state snapshot (`parent` and the entries that differ from it, or all of
/// them) on the given connection.
async fn insert_snapshot(
    conn: &mut sqlx::PgConnection,
    room_id: &str,
    parent: Option<(i64, i32)>,
    entries: &[(String, String, String)],
) -> StorageResult<(i64, i32)> {
    let depth = parent.map(|(_, d)| d + 1).unwrap_or(0);
    let id = sqlx::query_scalar!(
        "INSERT INTO state_snapshots (room_id, parent_id, chain_depth) VALUES ($1, $2, $3) RETURNING snapshot_id",
        room_id,
        parent.map(|(id, _)| id),
        depth
    )
    .fetch_one(&mut *conn)
    .await?;
    let (types, (keys, events)): (Vec<&str>, (Vec<&str>, Vec<&str>)) =
        entries.iter().map(|(t, k, e)| (t.as_str(), (k.as_str(), e.as_str()))).unzip();
    sqlx::query!(
        "INSERT INTO state_keys (event_type, state_key)
         SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
        &types as &[&str],
        &keys as &[&str]
    )
    .execute(&mut *conn)
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
    .execute(&mut *conn)
    .await?;
    Ok((id, depth))
}

/// Writes a full state snapshot of a stored room in a transaction of its own, without the
/// room's lock, so that it can be written beside a locked transaction's other work (a join's
/// state beside its outliers). Nothing refers to it until a locked transaction names it; one
/// that never does leaves an unused snapshot. The commit does not wait for the WAL flush: the
/// commit of a transaction that names the snapshot comes later and flushes it too.
pub async fn write_detached_snapshot(
    pool: &sqlx::PgPool,
    room_id: &str,
    entries: &[(String, String, String)],
) -> StorageResult<i64> {
    let mut tx = pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off").await?;
    let (id, _) = insert_snapshot(&mut tx, room_id, None, entries).await?;
    tx.commit().await?;
    Ok(id)
}

/// Registers a room learnt from another server if it is unknown, in a statement of its own: a
/// room must exist before anything of it is written beside its locked transaction.
pub async fn ensure_room_committed(
    pool: &sqlx::PgPool,
    room_id: &str,
    version: &str,
    creator: &str,
    now: i64,
) -> StorageResult<()> {
    insert_room_if_unknown(&mut *pool.acquire().await?, room_id, version, creator, now).await
}

/// Registers a room this server learns of from another server, if it is not known yet.
async fn insert_room_if_unknown(
    conn: &mut sqlx::PgConnection,
    room_id: &str,
    version: &str,
    creator: &str,
    now: i64,
) -> StorageResult<()> {
    sqlx::query!(
        "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)
         ON CONFLICT (room_id) DO NOTHING",
        room_id,
        version,
        creator,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}
