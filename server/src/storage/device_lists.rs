//! Device-list updates between servers (migration 0021): the consumer of the device-list stream
//! that queues `m.device_list_update` EDUs with their `prev_id` chains per destination, and the
//! device lists of other servers' users kept from the updates they send.

use poststelle_federation::device_lists::{self, Held, Step};
use serde_json::{Value as JsonValue, json};
use sqlx::PgPool;

use super::StorageResult;

/// A change of a local device, for the servers sharing a room with its user.
#[derive(Debug)]
pub struct OutboundUpdate {
    pub user_id: String,
    pub stream_id: i64,
    pub destinations: Vec<String>,
    /// The EDU's content without `prev_id`, which depends on the destination.
    pub content: JsonValue,
}

/// A local device as other servers learn it: its keys (if it uploaded any) and display name.
#[derive(Debug)]
pub struct LocalDevice {
    pub keys: Option<JsonValue>,
    pub display_name: Option<String>,
}

/// A received update of one device of another server's user.
#[derive(Debug)]
pub struct RemoteUpdate<'a> {
    pub stream_id: i64,
    pub prev_ids: &'a [i64],
    pub device_id: &'a str,
    pub deleted: bool,
    pub keys: Option<&'a JsonValue>,
    pub display_name: Option<&'a str>,
}

/// A device of another server's user as its server reported it.
#[derive(Debug)]
pub struct RemoteDevice {
    pub device_id: String,
    pub keys: Option<JsonValue>,
    pub display_name: Option<String>,
}

/// The whole device list of another server's user (`/user/devices`).
#[derive(Debug, Default)]
pub struct RemoteSnapshot {
    pub stream_id: i64,
    pub devices: Vec<RemoteDevice>,
    pub master_key: Option<JsonValue>,
    pub self_signing_key: Option<JsonValue>,
}

/// The `stream_consumers` row of the consumer that announces local device changes.
const CONSUMER: &str = "device_lists_federation";

#[derive(Clone, Debug)]
pub struct DeviceListStore {
    pool: PgPool,
}

impl DeviceListStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Where the consumer that announces local device changes to other servers stands.
    pub async fn outbound_position(&self) -> StorageResult<i64> {
        super::consumer_position(&self.pool, CONSUMER).await
    }

    /// Changes of local devices after `from` up to `to`: `(stream id, user, device)`, oldest
    /// first. Changes that are no device's are left out.
    pub async fn local_device_changes(
        &self,
        from: i64,
        to: i64,
        server_name: &str,
        limit: i64,
    ) -> StorageResult<Vec<(i64, String, String)>> {
        let rows = sqlx::query!(
            r#"SELECT stream_id, user_id, device_id AS "device_id!" FROM device_list_changes
               WHERE stream_id > $1 AND stream_id <= $2 AND device_id IS NOT NULL
                 AND substring(user_id from position(':' in user_id) + 1) = $3
               ORDER BY stream_id LIMIT $4"#,
            from,
            to,
            server_name,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.stream_id, r.user_id, r.device_id)).collect())
    }

    /// A local device as it is now (`None`: deleted).
    pub async fn local_device(&self, user_id: &str, device_id: &str) -> StorageResult<Option<LocalDevice>> {
        Ok(sqlx::query_as!(
            LocalDevice,
            "SELECT k.keys AS \"keys?\", d.display_name FROM devices d
             LEFT JOIN e2e_device_keys k USING (user_id, device_id)
             WHERE d.user_id = $1 AND d.device_id = $2",
            user_id,
            device_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Queues the updates for their destinations, each with `prev_id` naming the update that
    /// destination was sent before for the user, and moves the consumer from `from` to `to`:
    /// one transaction. `false` if another process moved it first.
    pub async fn queue_updates(&self, from: i64, to: i64, updates: &[OutboundUpdate], now: i64) -> StorageResult<bool> {
        let mut tx = self.pool.begin().await?;
        if !super::advance_consumer(&mut tx, CONSUMER, from, to).await? {
            return Ok(false);
        }
        for update in updates {
            sqlx::query!(
                "INSERT INTO federation_destinations (destination) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                &update.destinations
            )
            .execute(&mut *tx)
            .await?;
            for destination in &update.destinations {
                let prev = sqlx::query_scalar!(
                    "SELECT stream_id FROM device_list_outbound WHERE destination = $1 AND user_id = $2 FOR UPDATE",
                    destination,
                    update.user_id
                )
                .fetch_optional(&mut *tx)
                .await?;
                let mut content = update.content.clone();
                content["prev_id"] = json!(prev.into_iter().collect::<Vec<_>>());
                sqlx::query!(
                    "INSERT INTO federation_outbound_edus (destination, edu_type, content, created_ts)
                     VALUES ($1, 'm.device_list_update', $2, $3)",
                    destination,
                    content,
                    now
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query!(
                    "INSERT INTO device_list_outbound (destination, user_id, stream_id) VALUES ($1, $2, $3)
                     ON CONFLICT (destination, user_id) DO UPDATE SET stream_id = EXCLUDED.stream_id",
                    destination,
                    update.user_id,
                    update.stream_id
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Whether a user of this server shares a joined room with `user_id`: only then does the
    /// user's server send us their updates, so only then is their list kept.
    pub async fn tracked(&self, user_id: &str) -> StorageResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (
                   SELECT 1 FROM room_memberships theirs
                   JOIN room_memberships mine USING (room_id)
                   JOIN users u ON u.user_id = mine.user_id
                   WHERE theirs.user_id = $1 AND theirs.membership = 'join' AND mine.membership = 'join'
               ) AS "tracked!""#,
            user_id
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Applies an update of another server's user to the list held, if it is the next in the
    /// chain (decided under the list's row lock); what was decided.
    pub async fn apply_update(&self, user_id: &str, update: &RemoteUpdate<'_>, now: i64) -> StorageResult<Step> {
        let mut tx = self.pool.begin().await?;
        let held = sqlx::query_as!(
            Held,
            "SELECT stream_id, stale FROM remote_device_lists WHERE user_id = $1 FOR UPDATE",
            user_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        let step = device_lists::step(held, update.stream_id, update.prev_ids);
        if step != Step::Apply {
            return Ok(step);
        }
        if update.deleted {
            sqlx::query!("DELETE FROM remote_devices WHERE user_id = $1 AND device_id = $2", user_id, update.device_id)
                .execute(&mut *tx)
                .await?;
        } else {
            // An update without keys (a new name) keeps the keys held.
            sqlx::query!(
                "INSERT INTO remote_devices (user_id, device_id, keys, display_name) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, device_id) DO UPDATE
                 SET keys = COALESCE(EXCLUDED.keys, remote_devices.keys), display_name = EXCLUDED.display_name",
                user_id,
                update.device_id,
                update.keys,
                update.display_name
            )
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query!(
            "UPDATE remote_device_lists SET stream_id = $2, updated_ts = $3 WHERE user_id = $1",
            user_id,
            update.stream_id,
            now
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(step)
    }

    /// Marks the user's list incomplete (an update showed a gap, or none is held): key queries
    /// go to the user's server until a snapshot replaces it. The list stands at least at
    /// `stream_id`, the update that showed the gap.
    pub async fn mark_stale(&self, user_id: &str, stream_id: i64, now: i64) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO remote_device_lists (user_id, stream_id, stale, updated_ts) VALUES ($1, $2, TRUE, $3)
             ON CONFLICT (user_id) DO UPDATE
             SET stale = TRUE, stream_id = GREATEST(remote_device_lists.stream_id, EXCLUDED.stream_id),
                 updated_ts = EXCLUDED.updated_ts",
            user_id,
            stream_id,
            now
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces the user's list with a snapshot fetched after the update that asked for it, so
    /// the list stands at the later of the two.
    pub async fn replace(&self, user_id: &str, snapshot: &RemoteSnapshot, now: i64) -> StorageResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "INSERT INTO remote_device_lists (user_id, stream_id, stale, master_key, self_signing_key, updated_ts)
             VALUES ($1, $2, FALSE, $3, $4, $5)
             ON CONFLICT (user_id) DO UPDATE
             SET stale = FALSE, stream_id = GREATEST(remote_device_lists.stream_id, EXCLUDED.stream_id),
                 master_key = EXCLUDED.master_key, self_signing_key = EXCLUDED.self_signing_key,
                 updated_ts = EXCLUDED.updated_ts",
            user_id,
            snapshot.stream_id,
            snapshot.master_key,
            snapshot.self_signing_key,
            now
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!("DELETE FROM remote_devices WHERE user_id = $1", user_id).execute(&mut *tx).await?;
        for device in &snapshot.devices {
            sqlx::query!(
                "INSERT INTO remote_devices (user_id, device_id, keys, display_name) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, device_id) DO NOTHING",
                user_id,
                device.device_id,
                device.keys,
                device.display_name
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// New cross-signing keys of a user whose list is held (`m.signing_key_update`).
    pub async fn set_signing_keys(
        &self,
        user_id: &str,
        master_key: Option<&JsonValue>,
        self_signing_key: Option<&JsonValue>,
    ) -> StorageResult<()> {
        sqlx::query!(
            "UPDATE remote_device_lists SET master_key = COALESCE($2, master_key),
                 self_signing_key = COALESCE($3, self_signing_key)
             WHERE user_id = $1",
            user_id,
            master_key,
            self_signing_key
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The held, complete lists of those of `users` this server has one for.
    pub async fn complete_lists(&self, users: &[String]) -> StorageResult<Vec<(String, RemoteSnapshot)>> {
        let lists = sqlx::query!(
            "SELECT user_id, stream_id, master_key, self_signing_key FROM remote_device_lists
             WHERE user_id = ANY($1) AND NOT stale",
            users
        )
        .fetch_all(&self.pool)
        .await?;
        let held: Vec<String> = lists.iter().map(|l| l.user_id.clone()).collect();
        let devices = sqlx::query!(
            "SELECT user_id, device_id, keys, display_name FROM remote_devices WHERE user_id = ANY($1)
             ORDER BY user_id, device_id",
            &held
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(lists
            .into_iter()
            .map(|l| {
                let devices = devices
                    .iter()
                    .filter(|d| d.user_id == l.user_id)
                    .map(|d| RemoteDevice {
                        device_id: d.device_id.clone(),
                        keys: d.keys.clone(),
                        display_name: d.display_name.clone(),
                    })
                    .collect();
                let snapshot = RemoteSnapshot {
                    stream_id: l.stream_id,
                    devices,
                    master_key: l.master_key,
                    self_signing_key: l.self_signing_key,
                };
                (l.user_id, snapshot)
            })
            .collect())
    }
}
