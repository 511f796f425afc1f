//! The MLS hub's writes inside a room's write transaction: the group's state moves with the
//! commit event that changes it, under the room's lock, so exactly one commit per epoch is
//! accepted and nothing is half-applied.

use super::RoomWriter;
use crate::storage::StorageResult;

/// A room's group as the hub last stored it, without its state (which is read only when the
/// process does not hold the group in memory already).
#[derive(Debug)]
pub struct StoredGroup {
    pub algorithm: String,
    pub epoch: i64,
    /// Changes with every write of the state (see migration 0021).
    pub state_serial: i64,
    pub pending_proposals: Vec<String>,
}

/// A commit to record with the group's new state.
#[derive(Debug)]
pub struct AcceptedCommitRow<'a> {
    pub epoch: i64,
    pub event_id: &'a str,
    pub sha256: &'a [u8],
    pub sender: &'a str,
    pub state: &'a [u8],
    pub group_info: &'a str,
}

/// A Welcome to deliver once the transaction commits.
#[derive(Debug)]
pub struct WelcomeRow<'a> {
    pub epoch: i64,
    pub sender: &'a str,
    pub sender_device: &'a str,
    pub recipients: &'a serde_json::Value,
    pub content: &'a serde_json::Value,
}

impl RoomWriter {
    /// The room's group, if the hub tracks one.
    pub async fn mls_group(&mut self) -> StorageResult<Option<StoredGroup>> {
        let row = sqlx::query!(
            "SELECT algorithm, epoch, state_serial, pending_proposals FROM mls_groups WHERE room_id = $1",
            self.room_id
        )
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.map(|r| StoredGroup {
            algorithm: r.algorithm,
            epoch: r.epoch,
            state_serial: r.state_serial,
            pending_proposals: serde_json::from_value(r.pending_proposals).unwrap_or_default(),
        }))
    }

    /// The group's stored state, if it is still the one numbered `state_serial`.
    pub async fn mls_group_state(&mut self, state_serial: i64) -> StorageResult<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar!(
            "SELECT state FROM mls_groups WHERE room_id = $1 AND state_serial = $2",
            self.room_id,
            state_serial
        )
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// The event of an accepted commit with these bytes, for idempotent resubmission.
    pub async fn mls_commit_by_hash(&mut self, sha256: &[u8]) -> StorageResult<Option<(i64, String)>> {
        Ok(sqlx::query!(
            "SELECT epoch, event_id FROM mls_commits WHERE room_id = $1 AND sha256 = $2",
            self.room_id,
            sha256
        )
        .fetch_optional(&mut *self.tx)
        .await?
        .map(|r| (r.epoch, r.event_id)))
    }

    /// Whether an event is a commit this hub accepted.
    pub async fn mls_commit_event_known(&mut self, event_id: &str) -> StorageResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM mls_commits WHERE room_id = $1 AND event_id = $2) AS "known!""#,
            self.room_id,
            event_id
        )
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// Starts the room's group at epoch 0 (the creator's GroupInfo, no commit yet); returns the
    /// state's serial.
    pub async fn create_mls_group(
        &mut self,
        algorithm: &str,
        c: &AcceptedCommitRow<'_>,
        now: i64,
    ) -> StorageResult<i64> {
        let serial = sqlx::query_scalar!(
            "INSERT INTO mls_groups (room_id, algorithm, epoch, state, group_info, updated_ts)
             VALUES ($1, $2, 0, $3, $4, $5) RETURNING state_serial",
            self.room_id,
            algorithm,
            c.state,
            c.group_info,
            now
        )
        .fetch_one(&mut *self.tx)
        .await?;
        self.insert_mls_commit(c).await?;
        Ok(serial)
    }

    /// Moves the group from `epoch - 1` to `c.epoch`; `Conflict` if it is not at `epoch - 1`.
    /// Returns the new state's serial.
    pub async fn advance_mls_group(&mut self, c: &AcceptedCommitRow<'_>, now: i64) -> StorageResult<i64> {
        let serial = sqlx::query_scalar!(
            "UPDATE mls_groups SET epoch = $2::bigint, state = $3, group_info = $4, pending_proposals = '[]',
                 updated_ts = $5, state_serial = nextval('mls_group_state_serial')
             WHERE room_id = $1 AND epoch = $2::bigint - 1 RETURNING state_serial",
            self.room_id,
            c.epoch,
            c.state,
            c.group_info,
            now
        )
        .fetch_optional(&mut *self.tx)
        .await?
        .ok_or_else(|| crate::storage::StorageError::Conflict("the group is not at the commit's epoch".into()))?;
        self.insert_mls_commit(c).await?;
        Ok(serial)
    }

    async fn insert_mls_commit(&mut self, c: &AcceptedCommitRow<'_>) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO mls_commits (room_id, epoch, event_id, sha256, sender) VALUES ($1, $2, $3, $4, $5)",
            self.room_id,
            c.epoch,
            c.event_id,
            c.sha256,
            c.sender
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Queues a Welcome for delivery after the commit.
    pub async fn queue_mls_welcome(&mut self, w: &WelcomeRow<'_>, now: i64) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO mls_welcome_outbox (room_id, epoch, sender, sender_device, recipients, content, created_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            self.room_id,
            w.epoch,
            w.sender,
            w.sender_device,
            w.recipients,
            w.content,
            now
        )
        .execute(&mut *self.tx)
        .await?;
        // Wakes the dispatcher of whichever process runs it, at the commit.
        sqlx::query!("SELECT pg_notify('poststelle_streams', 'mls_welcome')").execute(&mut *self.tx).await?;
        Ok(())
    }
}

impl RoomWriter {
    /// Stores the group's state with new server proposals queued in it (no epoch change);
    /// returns the new state's serial.
    pub async fn set_mls_proposals(&mut self, state: &[u8], proposals: &[String], now: i64) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!(
            "UPDATE mls_groups SET state = $2, pending_proposals = $3, updated_ts = $4,
                 state_serial = nextval('mls_group_state_serial')
             WHERE room_id = $1 RETURNING state_serial",
            self.room_id,
            state,
            serde_json::json!(proposals),
            now
        )
        .fetch_one(&mut *self.tx)
        .await?)
    }
}
