//! Federation state in PostgreSQL: answered inbound transactions, the outbound queue per
//! destination, and the reads other servers' requests need (PDUs, graph walks, the servers
//! in a room).

use sqlx::PgPool;

use super::{LeaderLock, StorageResult};

/// The advisory lock of the process that sends to other servers.
const SENDER_LOCK: (i32, i32) = (0x6665_6473, 1);

#[derive(Clone, Debug)]
pub struct FederationStore {
    pool: PgPool,
}

/// A stored PDU with where it belongs.
#[derive(Clone, Debug)]
pub struct StoredPdu {
    pub event_id: String,
    pub room_id: String,
    pub pdu: String,
    pub outlier: bool,
    pub rejected: bool,
    /// Out of the timeline but with its state known: events may build on it.
    pub soft_failed: bool,
    pub stream_ordering: i64,
}

impl StoredPdu {
    /// Whether an event may be built on it with the state after it: a timeline event, or a
    /// soft-failed one.
    pub fn has_state(&self) -> bool {
        !self.outlier || (self.soft_failed && !self.rejected)
    }
}

/// One destination's next transaction: PDUs (queued position, event id, PDU) and EDUs
/// (queued position, type, content).
#[derive(Debug, Default)]
pub struct PendingTransaction {
    pub pdus: Vec<(i64, String, String)>,
    pub edus: Vec<(i64, String, serde_json::Value)>,
}

/// What one pass of the federation consumer did ([`FederationStore::queue_local_events`]).
#[derive(Debug)]
pub struct QueuePass {
    /// Where the pass would move the consumer: the last event read, or the stream's head.
    pub upto: i64,
    /// Whether any of the events read is for another server.
    pub wanted: bool,
    /// Whether the pass read as many events as it may: more may follow.
    pub full: bool,
    /// Whether the consumer moved (and the events were queued).
    pub moved: bool,
    /// The destinations ready to send to, after the pass, each with its next transaction when
    /// the pass can tell it: its queue held nothing before, and it queued at most 50 PDUs.
    pub ready: Vec<(String, Option<PendingTransaction>)>,
}

impl FederationStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Becomes the one process that sends to other servers, unless another holds that role.
    pub async fn try_lead(&self) -> StorageResult<Option<LeaderLock>> {
        LeaderLock::try_take(&self.pool, SENDER_LOCK).await
    }

    /// The answer given to an inbound transaction before, if any; in the same statement, the
    /// origin's backoff ends (it is up: whatever waits for it goes now).
    pub async fn inbound_txn(&self, origin: &str, txn_id: &str) -> StorageResult<Option<serde_json::Value>> {
        Ok(sqlx::query_scalar!(
            r#"WITH reset AS (
                   UPDATE federation_destinations SET retry_at = 0 WHERE destination = $1 AND retry_at > 0)
               SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2"#,
            origin,
            txn_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records the answer to an inbound transaction without waiting for the WAL flush: what the
    /// transaction carried is stored already (durably, by its own commits). Should this record
    /// be lost in a crash, a retry of the transaction finds its PDUs known, while its EDUs
    /// (typing, receipts, to-device messages) are applied a second time.
    pub async fn record_inbound_txn(
        &self,
        origin: &str,
        txn_id: &str,
        response: &serde_json::Value,
        now: i64,
    ) -> StorageResult<()> {
        // One statement in its own transaction, whose commit does not wait for the WAL flush.
        sqlx::query!(
            r#"WITH lax AS (
                   SELECT set_config('synchronous_commit', 'off', true) AS setting
               )
               INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts)
               SELECT $1, $2, $3, $4 WHERE (SELECT setting FROM lax) IS NOT NULL
               ON CONFLICT DO NOTHING"#,
            origin,
            txn_id,
            response,
            now
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A stored event by id.
    pub async fn pdu(&self, event_id: &str) -> StorageResult<Option<StoredPdu>> {
        Ok(sqlx::query_as!(
            StoredPdu,
            r#"SELECT event_id, room_id, pdu, outlier, rejected IS NOT NULL AS "rejected!", soft_failed, stream_ordering
               FROM events WHERE event_id = $1"#,
            event_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Stored events by id (those that exist).
    pub async fn pdus(&self, event_ids: &[String]) -> StorageResult<Vec<StoredPdu>> {
        Ok(sqlx::query_as!(
            StoredPdu,
            r#"SELECT event_id, room_id, pdu, outlier, rejected IS NOT NULL AS "rejected!", soft_failed, stream_ordering
               FROM events WHERE event_id = ANY($1)"#,
            event_ids
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The ids of the auth chains of the given events (without them).
    pub async fn auth_chain_ids(&self, event_ids: &[String]) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            r#"WITH RECURSIVE chain(event_id) AS (
                   SELECT unnest(auth_events) FROM events WHERE event_id = ANY($1)
                 UNION
                   SELECT unnest(e.auth_events) FROM chain c JOIN events e ON e.event_id = c.event_id
               )
               SELECT event_id AS "event_id!" FROM chain"#,
            event_ids
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Walks `prev_events` back from `latest` without passing `earliest` or going below
    /// `min_depth`: the timeline events a server is missing, oldest first, at most `limit`.
    pub async fn missing_events(
        &self,
        room_id: &str,
        earliest: &[String],
        latest: &[String],
        min_depth: i64,
        limit: i64,
    ) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            r#"WITH RECURSIVE walk(event_id, hops) AS (
                   SELECT unnest(prev_events), 1 FROM events WHERE event_id = ANY($2) AND room_id = $1
                 UNION
                   SELECT unnest(e.prev_events), w.hops + 1 FROM walk w JOIN events e ON e.event_id = w.event_id
                   WHERE e.room_id = $1 AND NOT e.outlier AND e.event_id <> ALL($3) AND e.depth >= $4
                     AND w.hops < $5::bigint
               )
               SELECT e.event_id AS "event_id!" FROM events e
               WHERE e.event_id IN (SELECT event_id FROM walk) AND e.event_id <> ALL($3)
                 AND e.room_id = $1 AND NOT e.outlier AND e.depth >= $4
               ORDER BY e.depth DESC, e.stream_ordering DESC LIMIT $5::bigint"#,
            room_id,
            latest,
            earliest,
            min_depth,
            limit
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .rev()
        .collect())
    }

    /// Timeline events before (and including) `from`, walking `prev_events`, newest first.
    pub async fn backfill(&self, room_id: &str, from: &[String], limit: i64) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            r#"WITH RECURSIVE walk(event_id, hops) AS (
                   SELECT unnest($2::text[]), 0
                 UNION
                   SELECT unnest(e.prev_events), w.hops + 1 FROM walk w JOIN events e ON e.event_id = w.event_id
                   WHERE e.room_id = $1 AND w.hops < $3::bigint
               )
               SELECT e.event_id AS "event_id!" FROM events e
               WHERE e.event_id IN (SELECT event_id FROM walk) AND e.room_id = $1 AND NOT e.outlier
               ORDER BY e.depth DESC, e.stream_ordering DESC LIMIT $3::bigint"#,
            room_id,
            from,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The servers with a member joined in the room at the event at `position`: joined at or
    /// before it, or gone only after it (a user id's server is everything after its first colon:
    /// server names may carry a port).
    pub async fn servers_at(&self, room_id: &str, position: i64) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            r#"SELECT DISTINCT substring(user_id from position(':' in user_id) + 1) AS "server!"
               FROM room_memberships WHERE room_id = $1
                 AND ((membership = 'join' AND stream_ordering <= $2)
                      OR (membership IN ('leave', 'ban') AND stream_ordering > $2))"#,
            room_id,
            position
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether `server` has a member in the room with one of the memberships.
    pub async fn server_in_room(&self, room_id: &str, server: &str, memberships: &[&str]) -> StorageResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM room_memberships WHERE room_id = $1
                   AND substring(user_id from position(':' in user_id) + 1) = $2
                   AND membership = ANY($3)) AS "e!""#,
            room_id,
            server,
            memberships as &[&str]
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// The users of `server` that have a membership in the room (any, also a past one).
    pub async fn server_users(&self, room_id: &str, server: &str) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            "SELECT user_id FROM room_memberships WHERE room_id = $1
               AND substring(user_id from position(':' in user_id) + 1) = $2",
            room_id,
            server
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Where the federation consumer of the events stream stands.
    pub async fn consumer_position(&self) -> StorageResult<i64> {
        super::consumer_position(&self.pool, "federation").await
    }

    /// One pass of the federation consumer of the events stream, in one statement: the local
    /// events after `from` (at most `limit`) are queued for the servers that had a member
    /// joined in the room at each (joined at or before it, or gone only after it) and, for a
    /// membership change, the target's server; the consumer moves to the last event read, or
    /// to the stream's head when fewer than `limit` were there. With nothing to queue, it moves
    /// only once the stretch reaches `idle_stretch`, saving a write per event other servers
    /// sent us. Committed without waiting for the WAL flush: the rows derive from stored
    /// events, and a crash that loses them loses the consumer's move with them, so they are
    /// queued again. A user id's server is everything after its first colon (server names may
    /// carry a port).
    pub async fn queue_local_events(
        &self,
        from: i64,
        server_name: &str,
        limit: i64,
        idle_stretch: i64,
        now: i64,
    ) -> StorageResult<QueuePass> {
        // The parts of one statement do not see each other's rows: the ready destinations are
        // those queued to now that are not backing off (new ones never are), and those whose
        // queues held something before. The queue rows reference their destination, whose
        // row the same statement may add: foreign keys are checked at the statement's end.
        let rows = sqlx::query!(
            r#"WITH lax AS (
                   SELECT set_config('synchronous_commit', 'off', true) AS setting
               ), head AS (
                   SELECT COALESCE((SELECT position FROM stream_heads WHERE stream = 'events'), 0) AS position
               ), local AS (
                   SELECT stream_ordering, event_id, room_id, event_type, state_key FROM events
                   WHERE stream_ordering > $1 AND stream_ordering <= (SELECT position FROM head)
                     AND received_from IS NULL AND substring(sender from position(':' in sender) + 1) = $2
                   ORDER BY stream_ordering LIMIT $3
               ), span AS (
                   SELECT CASE WHEN (SELECT count(*) FROM local) >= $3 THEN (SELECT max(stream_ordering) FROM local)
                               ELSE (SELECT position FROM head) END AS upto
               ), wanted AS (
                   SELECT DISTINCT l.stream_ordering, l.event_id, d.destination FROM local l
                   CROSS JOIN LATERAL (
                       SELECT substring(m.user_id from position(':' in m.user_id) + 1) AS destination
                       FROM room_memberships m WHERE m.room_id = l.room_id
                         AND ((m.membership = 'join' AND m.stream_ordering <= l.stream_ordering)
                              OR (m.membership IN ('leave', 'ban') AND m.stream_ordering > l.stream_ordering))
                       UNION
                       SELECT substring(l.state_key from position(':' in l.state_key) + 1)
                       WHERE l.event_type = 'm.room.member' AND l.state_key LIKE '@%:%'
                   ) d
                   WHERE d.destination <> $2
               ), moved AS (
                   UPDATE stream_consumers SET position = (SELECT upto FROM span)
                   WHERE name = 'federation' AND position = $1 AND (SELECT upto FROM span) > $1
                     AND (EXISTS (SELECT 1 FROM wanted) OR (SELECT upto FROM span) - $1 >= $4)
                     AND (SELECT setting FROM lax) IS NOT NULL
                   RETURNING 1
               ), queued AS (
                   SELECT * FROM wanted WHERE EXISTS (SELECT 1 FROM moved)
               ), known AS (
                   INSERT INTO federation_destinations (destination) SELECT DISTINCT destination FROM queued
                   ON CONFLICT DO NOTHING
               ), pdus AS (
                   INSERT INTO federation_outbound_pdus (destination, stream_ordering, event_id)
                   SELECT destination, stream_ordering, event_id FROM queued ON CONFLICT DO NOTHING
               )
               SELECT (SELECT upto FROM span) AS "upto!", EXISTS (SELECT 1 FROM wanted) AS "wanted!",
                      (SELECT count(*) FROM local) >= $3 AS "full!", EXISTS (SELECT 1 FROM moved) AS "moved!",
                      r.destination, h.positions AS "positions?", h.event_ids AS "event_ids?", h.pdus AS "pdus?"
               FROM (SELECT 1) one
               LEFT JOIN (
                   SELECT q.destination FROM (SELECT DISTINCT destination FROM queued) q
                   LEFT JOIN federation_destinations d USING (destination)
                   WHERE COALESCE(d.retry_at, 0) <= $5
                 UNION
                   SELECT d.destination FROM federation_destinations d
                   WHERE d.retry_at <= $5
                     AND (EXISTS (SELECT 1 FROM federation_outbound_pdus p WHERE p.destination = d.destination)
                          OR EXISTS (SELECT 1 FROM federation_outbound_edus e WHERE e.destination = d.destination))
               ) r ON TRUE
               -- A destination whose queues held nothing before this pass: its next transaction
               -- is what the pass queued for it (this statement does not see its own inserts).
               LEFT JOIN LATERAL (
                   SELECT array_agg(q.stream_ordering ORDER BY q.stream_ordering) AS positions,
                          array_agg(q.event_id ORDER BY q.stream_ordering) AS event_ids,
                          array_agg(e.pdu ORDER BY q.stream_ordering) AS pdus
                   FROM queued q JOIN events e ON e.event_id = q.event_id
                   WHERE q.destination = r.destination
                     AND NOT EXISTS (SELECT 1 FROM federation_outbound_pdus p WHERE p.destination = r.destination)
                     AND NOT EXISTS (SELECT 1 FROM federation_outbound_edus x WHERE x.destination = r.destination)
                   HAVING count(*) BETWEEN 1 AND 50
               ) h ON r.destination IS NOT NULL"#,
            from,
            server_name,
            limit,
            idle_stretch,
            now
        )
        .fetch_all(&self.pool)
        .await?;
        let Some(first) = rows.first() else {
            return Err(super::StorageError::Database(sqlx::Error::RowNotFound));
        };
        let (upto, wanted, full, moved) = (first.upto, first.wanted, first.full, first.moved);
        let ready = rows
            .into_iter()
            .filter_map(|r| {
                let in_hand = match (r.positions, r.event_ids, r.pdus) {
                    (Some(positions), Some(ids), Some(pdus))
                        if positions.len() == ids.len() && ids.len() == pdus.len() =>
                    {
                        let pdus =
                            positions.into_iter().zip(ids).zip(pdus).map(|((p, id), pdu)| (p, id, pdu)).collect();
                        Some(PendingTransaction { pdus, edus: Vec::new() })
                    }
                    _ => None,
                };
                Some((r.destination?, in_hand))
            })
            .collect();
        Ok(QueuePass { upto, wanted, full, moved, ready })
    }

    /// Queues an EDU for destinations.
    pub async fn queue_edu(
        &self,
        destinations: &[String],
        edu_type: &str,
        content: &serde_json::Value,
        now: i64,
    ) -> StorageResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "INSERT INTO federation_destinations (destination) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            destinations
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "INSERT INTO federation_outbound_edus (destination, edu_type, content, created_ts)
             SELECT unnest($1::text[]), $2, $3, $4",
            destinations,
            edu_type,
            content,
            now
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Destinations with something queued that may be tried at `now`.
    pub async fn ready_destinations(&self, now: i64) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            "SELECT d.destination FROM federation_destinations d
             WHERE d.retry_at <= $1
               AND (EXISTS (SELECT 1 FROM federation_outbound_pdus p WHERE p.destination = d.destination)
                    OR EXISTS (SELECT 1 FROM federation_outbound_edus e WHERE e.destination = d.destination))",
            now
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The next transaction for a destination: its oldest 50 PDUs with their JSON and 100 EDUs,
    /// in one round trip (`federation_pending` keeps to the queues' primary keys whatever the
    /// planner's statistics say of a queue).
    pub async fn pending(&self, destination: &str) -> StorageResult<PendingTransaction> {
        let rows = sqlx::query!(
            r#"SELECT is_pdu AS "is_pdu!", pos AS "pos!", name AS "name!", body AS "body!"
               FROM federation_pending($1)"#,
            destination
        )
        .fetch_all(&self.pool)
        .await?;
        let mut pending = PendingTransaction { pdus: Vec::new(), edus: Vec::new() };
        for r in rows {
            if r.is_pdu {
                pending.pdus.push((r.pos, r.name, r.body));
            } else {
                // Stored as JSONB, so it parses.
                let content = serde_json::from_str(&r.body).unwrap_or_default();
                pending.edus.push((r.pos, r.name, content));
            }
        }
        pending.pdus.sort_by_key(|p| p.0);
        pending.edus.sort_by_key(|e| e.0);
        Ok(pending)
    }

    /// A transaction was answered with 200: its PDUs and EDUs leave the queue and the
    /// destination's backoff resets, in one statement. Committed without waiting for the WAL
    /// flush: should a crash lose it, the transaction is sent again under the same id, which
    /// the receiver answers once.
    pub async fn sent(&self, destination: &str, pdus: &[i64], edus: &[i64]) -> StorageResult<()> {
        sqlx::query!(
            r#"WITH lax AS (
                   SELECT set_config('synchronous_commit', 'off', true) AS setting
               ), pdus AS (
                   -- Bounded by the last PDU sent (the queue's oldest are sent first), so that
                   -- the scan stops there however long the queue and whatever the planner's
                   -- statistics say of it.
                   DELETE FROM federation_outbound_pdus WHERE destination = $1 AND stream_ordering = ANY($2)
                     AND stream_ordering <= (SELECT max(p) FROM unnest($2::bigint[]) p)
               ), edus AS (
                   DELETE FROM federation_outbound_edus WHERE destination = $1 AND position = ANY($3)
               )
               UPDATE federation_destinations SET failures = 0, retry_at = 0, last_error = NULL
               WHERE destination = $1 AND (SELECT setting FROM lax) IS NOT NULL"#,
            destination,
            pdus,
            edus
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A transaction failed: back off exponentially (from 2 s, at most an hour).
    pub async fn failed(&self, destination: &str, error: &str, now: i64) -> StorageResult<()> {
        sqlx::query!(
            "UPDATE federation_destinations SET failures = failures + 1, last_error = $2,
                 retry_at = $3 + LEAST(3600000, 2000 * (2 ^ LEAST(failures, 12))::bigint)
             WHERE destination = $1",
            destination,
            error,
            now
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
