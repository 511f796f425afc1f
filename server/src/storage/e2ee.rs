//! End-to-end encryption keys of Olm/Megolm devices: identity keys, one-time keys and fallback
//! keys (migration 0005).

use serde_json::Value as JsonValue;
use sqlx::PgPool;

use super::StorageResult;

/// A one-time or fallback key as uploaded: `(algorithm, key id, key)`.
pub type UploadedKey = (String, String, JsonValue);

/// A device's identity keys with the device's display name.
#[derive(Debug)]
pub struct DeviceKeysRow {
    pub device_id: String,
    pub keys: JsonValue,
    pub display_name: Option<String>,
}

/// Key counts a device's `/sync` carries.
#[derive(Debug)]
pub struct KeyCounts {
    /// Unclaimed one-time keys per algorithm.
    pub one_time: Vec<(String, i64)>,
    /// Algorithms with a fallback key that no claim has handed out yet.
    pub unused_fallback: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct E2eeStore {
    pool: PgPool,
}

impl E2eeStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores a device's identity keys, replacing earlier ones (a change of the device list,
    /// unless they are the same).
    pub async fn set_device_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &JsonValue,
        now: i64,
    ) -> StorageResult<bool> {
        let done = sqlx::query!(
            "INSERT INTO e2e_device_keys (user_id, device_id, keys, updated_ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, device_id) DO UPDATE SET keys = EXCLUDED.keys, updated_ts = EXCLUDED.updated_ts
             WHERE e2e_device_keys.keys IS DISTINCT FROM EXCLUDED.keys",
            user_id,
            device_id,
            keys,
            now
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Adds one-time keys. A key id uploaded again with the same key is no change; with a
    /// different key it is refused: then nothing is stored and the ids are returned.
    pub async fn add_one_time_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[UploadedKey],
    ) -> StorageResult<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let (algorithms, (ids, values)): (Vec<&str>, (Vec<&str>, Vec<JsonValue>)) =
            keys.iter().map(|(a, i, v)| (a.as_str(), (i.as_str(), v.clone()))).unzip();
        let conflicts = sqlx::query_scalar!(
            r#"SELECT k.algorithm || ':' || k.key_id AS "id!"
               FROM UNNEST($3::text[], $4::text[], $5::jsonb[]) AS n(algorithm, key_id, key_json)
               JOIN e2e_one_time_keys k
                 ON k.user_id = $1 AND k.device_id = $2 AND k.algorithm = n.algorithm AND k.key_id = n.key_id
               WHERE k.key_json <> n.key_json"#,
            user_id,
            device_id,
            &algorithms as &[&str],
            &ids as &[&str],
            &values
        )
        .fetch_all(&mut *tx)
        .await?;
        if !conflicts.is_empty() {
            return Ok(conflicts);
        }
        sqlx::query!(
            "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)
             SELECT $1, $2, n.algorithm, n.key_id, n.key_json
             FROM UNNEST($3::text[], $4::text[], $5::jsonb[]) WITH ORDINALITY AS n(algorithm, key_id, key_json, i)
             ORDER BY n.i
             ON CONFLICT DO NOTHING",
            user_id,
            device_id,
            &algorithms as &[&str],
            &ids as &[&str],
            &values
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Vec::new())
    }

    /// Sets the fallback key of each algorithm given; a new key is unused again.
    pub async fn set_fallback_keys(&self, user_id: &str, device_id: &str, keys: &[UploadedKey]) -> StorageResult<()> {
        let (algorithms, (ids, values)): (Vec<&str>, (Vec<&str>, Vec<JsonValue>)) =
            keys.iter().map(|(a, i, v)| (a.as_str(), (i.as_str(), v.clone()))).unzip();
        sqlx::query!(
            "INSERT INTO e2e_fallback_keys AS f (user_id, device_id, algorithm, key_id, key_json)
             SELECT DISTINCT ON (n.algorithm) $1, $2, n.algorithm, n.key_id, n.key_json
             FROM UNNEST($3::text[], $4::text[], $5::jsonb[]) WITH ORDINALITY AS n(algorithm, key_id, key_json, i)
             ORDER BY n.algorithm, n.i DESC
             ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
                 key_id = EXCLUDED.key_id,
                 key_json = EXCLUDED.key_json,
                 used = f.used AND f.key_id = EXCLUDED.key_id AND f.key_json = EXCLUDED.key_json",
            user_id,
            device_id,
            &algorithms as &[&str],
            &ids as &[&str],
            &values
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Unclaimed one-time keys per algorithm and unused fallback keys, in one round trip.
    pub async fn key_counts(&self, user_id: &str, device_id: &str) -> StorageResult<KeyCounts> {
        let row = sqlx::query!(
            r#"SELECT algorithms AS "algorithms!", counts AS "counts!", unused_fallback AS "unused_fallback!"
               FROM e2e_key_counts($1, $2)"#,
            user_id,
            device_id
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(KeyCounts {
            one_time: row.algorithms.into_iter().zip(row.counts).collect(),
            unused_fallback: row.unused_fallback,
        })
    }

    /// The identity keys of a user's devices (all, or those named), with their display names.
    pub async fn device_keys(&self, user_id: &str, devices: Option<&[String]>) -> StorageResult<Vec<DeviceKeysRow>> {
        Ok(sqlx::query_as!(
            DeviceKeysRow,
            "SELECT k.device_id, k.keys, d.display_name
             FROM e2e_device_keys k JOIN devices d USING (user_id, device_id)
             WHERE k.user_id = $1 AND ($2::text[] IS NULL OR k.device_id = ANY($2))
             ORDER BY k.device_id",
            user_id,
            devices
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The ids (`algorithm:name`) of a device's unclaimed one-time keys, in upload order, and of
    /// its fallback keys.
    pub async fn key_ids(&self, user_id: &str, device_id: &str) -> StorageResult<(Vec<String>, Vec<String>)> {
        let one_time = sqlx::query_scalar!(
            r#"SELECT algorithm || ':' || key_id AS "id!" FROM e2e_one_time_keys
               WHERE user_id = $1 AND device_id = $2 ORDER BY seq"#,
            user_id,
            device_id
        )
        .fetch_all(&self.pool)
        .await?;
        let fallback = sqlx::query_scalar!(
            r#"SELECT algorithm || ':' || key_id AS "id!" FROM e2e_fallback_keys
               WHERE user_id = $1 AND device_id = $2 ORDER BY algorithm"#,
            user_id,
            device_id
        )
        .fetch_all(&self.pool)
        .await?;
        Ok((one_time, fallback))
    }

    /// Hands out one key of `algorithm` for a device: its oldest one-time key, which is then
    /// gone, or else its fallback key, which is then marked used. `(key id, key)`.
    pub async fn claim(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> StorageResult<Option<(String, JsonValue)>> {
        let one_time = sqlx::query!(
            "DELETE FROM e2e_one_time_keys
             WHERE (user_id, device_id, algorithm, key_id) = (
                 SELECT user_id, device_id, algorithm, key_id FROM e2e_one_time_keys
                 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
                 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING key_id, key_json",
            user_id,
            device_id,
            algorithm
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(k) = one_time {
            return Ok(Some((k.key_id, k.key_json)));
        }
        Ok(sqlx::query!(
            "UPDATE e2e_fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
             RETURNING key_id, key_json",
            user_id,
            device_id,
            algorithm
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|k| (k.key_id, k.key_json)))
    }

    /// Those of `others` who are joined to or invited into a room where `user_id` is joined or
    /// invited: whose device keys `user_id` may see.
    pub async fn users_sharing_a_room(&self, user_id: &str, others: &[String]) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            "SELECT DISTINCT theirs.user_id
             FROM room_memberships mine
             JOIN room_memberships theirs USING (room_id)
             WHERE mine.user_id = $1 AND mine.membership IN ('join', 'invite')
               AND theirs.user_id = ANY($2) AND theirs.membership IN ('join', 'invite')",
            user_id,
            others
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Those of `others` who are joined to or invited into a room where a user of `server` is
    /// joined or invited: whose profile and keys that server may learn.
    pub async fn users_sharing_a_room_with_server(
        &self,
        server: &str,
        others: &[String],
    ) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            "SELECT DISTINCT theirs.user_id
             FROM room_memberships theirs
             WHERE theirs.user_id = ANY($2) AND theirs.membership IN ('join', 'invite')
               AND (EXISTS (
                        SELECT 1 FROM room_memberships mine
                        WHERE mine.room_id = theirs.room_id AND mine.membership IN ('join', 'invite')
                          AND substring(mine.user_id from position(':' in mine.user_id) + 1) = $1)
                    -- Invited by a user of that server (into a room this server has not joined).
                    OR (theirs.membership = 'invite'
                        AND substring(theirs.sender from position(':' in theirs.sender) + 1) = $1))",
            server,
            others
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The other servers whose users share a room (joined) with `user_id`: where changes of the
    /// user's devices must go.
    pub async fn servers_sharing_a_room(&self, user_id: &str) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            r#"SELECT DISTINCT substring(theirs.user_id from position(':' in theirs.user_id) + 1) AS "server!"
               FROM room_memberships mine
               JOIN room_memberships theirs USING (room_id)
               WHERE mine.user_id = $1 AND mine.membership = 'join' AND theirs.membership = 'join'"#,
            user_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Notes that a user's device list changed (for users of other servers, whose changes no
    /// trigger sees): a new position of the device-list stream.
    pub async fn note_device_list_change(&self, user_id: &str) -> StorageResult<i64> {
        let mut tx = self.pool.begin().await?;
        let pos = sqlx::query_scalar!(
            "UPDATE stream_heads SET position = position + 1 WHERE stream = 'device_lists' RETURNING position"
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query!("INSERT INTO device_list_changes (stream_id, user_id) VALUES ($1, $2)", pos, user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query!("SELECT pg_notify('poststelle_streams', 'device_lists ' || $1::bigint)", pos)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(pos)
    }

    /// The latest position of the device-list stream that changed the user's devices (0: none).
    pub async fn device_list_position(&self, user_id: &str) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT COALESCE(MAX(stream_id), 0) AS "pos!" FROM device_list_changes WHERE user_id = $1"#,
            user_id
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Whose device lists `user_id`'s clients must fetch again between two tokens, and whose
    /// they may forget. Changed: users sharing a room with `user_id` (and `user_id`) whose devices
    /// changed in `(from_devices, to_devices]`, and users who came to share a room in
    /// `(from_events, to_events]`. Left: users who share no room any more after a leave or ban in
    /// that window.
    pub async fn device_list_updates(
        &self,
        user_id: &str,
        (from_devices, to_devices): (i64, i64),
        (from_events, to_events): (i64, i64),
    ) -> StorageResult<(Vec<String>, Vec<String>)> {
        let row = sqlx::query!(
            r#"WITH mine AS (
                   SELECT room_id, membership, stream_ordering FROM room_memberships WHERE user_id = $1),
               sharing AS (
                   SELECT DISTINCT m.user_id FROM room_memberships m JOIN mine USING (room_id)
                   WHERE mine.membership IN ('join', 'invite') AND m.membership IN ('join', 'invite')),
               changed AS (
                   SELECT c.user_id FROM device_list_changes c
                   WHERE c.stream_id > $2 AND c.stream_id <= $3
                     AND (c.user_id = $1 OR c.user_id IN (SELECT user_id FROM sharing))
                   UNION
                   SELECT m.user_id FROM room_memberships m JOIN mine USING (room_id)
                   WHERE mine.membership IN ('join', 'invite') AND m.membership IN ('join', 'invite')
                     AND m.user_id <> $1
                     AND ((m.stream_ordering > $4 AND m.stream_ordering <= $5)
                          OR (mine.stream_ordering > $4 AND mine.stream_ordering <= $5))),
               gone AS (
                   SELECT m.user_id FROM room_memberships m JOIN mine USING (room_id)
                   WHERE m.user_id <> $1
                     AND ((m.membership IN ('leave', 'ban') AND m.stream_ordering > $4 AND m.stream_ordering <= $5)
                          OR (mine.membership IN ('leave', 'ban') AND mine.stream_ordering > $4
                              AND mine.stream_ordering <= $5))
                     AND m.user_id NOT IN (SELECT user_id FROM sharing))
               SELECT COALESCE((SELECT array_agg(DISTINCT user_id) FROM changed), '{}') AS "changed!",
                      COALESCE((SELECT array_agg(DISTINCT user_id) FROM gone), '{}') AS "left!""#,
            user_id,
            from_devices,
            to_devices,
            from_events,
            to_events
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.changed, row.left))
    }

    /// A user's cross-signing keys by usage (`master`, `self_signing`, `user_signing`).
    pub async fn cross_signing_keys(&self, user_id: &str) -> StorageResult<Vec<(String, JsonValue)>> {
        Ok(sqlx::query!("SELECT usage, key_json FROM e2e_cross_signing_keys WHERE user_id = $1", user_id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.usage, r.key_json))
            .collect())
    }

    /// Stores cross-signing keys `(usage, key)`, replacing earlier ones, in one transaction.
    pub async fn set_cross_signing_keys(
        &self,
        user_id: &str,
        keys: &[(&str, JsonValue)],
        now: i64,
    ) -> StorageResult<()> {
        let mut tx = self.pool.begin().await?;
        for (usage, key) in keys {
            sqlx::query!(
                "INSERT INTO e2e_cross_signing_keys (user_id, usage, key_json, updated_ts) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, usage) DO UPDATE SET key_json = EXCLUDED.key_json, updated_ts = EXCLUDED.updated_ts
                 WHERE e2e_cross_signing_keys.key_json IS DISTINCT FROM EXCLUDED.key_json",
                user_id,
                usage,
                key,
                now
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores a signature of a key (see migration 0008).
    pub async fn add_signature(&self, sig: &KeySignature) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO e2e_key_signatures (user_id, target_key_id, signer_user, signer_key_id, signature)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, target_key_id, signer_user, signer_key_id) DO UPDATE SET signature = EXCLUDED.signature
             WHERE e2e_key_signatures.signature <> EXCLUDED.signature",
            sig.user_id,
            sig.target_key_id,
            sig.signer_user,
            sig.signer_key_id,
            sig.signature
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The uploaded signatures of `user_id`'s keys that `viewer` may see: the owner's own, and
    /// the viewer's.
    pub async fn signatures(&self, user_id: &str, viewer: &str) -> StorageResult<Vec<KeySignature>> {
        Ok(sqlx::query_as!(
            KeySignature,
            "SELECT user_id, target_key_id, signer_user, signer_key_id, signature FROM e2e_key_signatures
             WHERE user_id = $1 AND (signer_user = $1 OR signer_user = $2)",
            user_id,
            viewer
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A signature of a device key or master key, by some user's key.
#[derive(Debug)]
pub struct KeySignature {
    pub user_id: String,
    pub target_key_id: String,
    pub signer_user: String,
    pub signer_key_id: String,
    pub signature: String,
}
