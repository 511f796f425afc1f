//! Devices and the tokens that belong to them (access, refresh, login tokens).
//!
//! Tokens are stored only as SHA-256 hashes: a database dump does not let anyone log in.

use sqlx::PgPool;

use super::{StorageResult, now_ms};

#[derive(Clone, Debug)]
pub struct DeviceStore {
    pool: PgPool,
}

#[derive(Clone, Debug)]
pub struct DeviceRecord {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

/// What an access token resolves to.
#[derive(Clone, Debug)]
pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
    pub expires_ts: Option<i64>,
    pub deactivated: bool,
    pub is_admin: bool,
    pub is_guest: bool,
}

/// The hashes of a freshly issued token set.
#[derive(Debug)]
pub struct NewTokens<'a> {
    pub access_hash: &'a [u8],
    pub access_expires_ts: Option<i64>,
    pub refresh_hash: Option<&'a [u8]>,
}

/// What a refresh token resolves to.
#[derive(Debug)]
pub struct RefreshRecord {
    pub id: i64,
    pub user_id: String,
    pub device_id: String,
    pub next_id: Option<i64>,
}

impl DeviceStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates (or takes over) a device and issues its tokens, in one transaction. Logging in
    /// with an existing device id replaces that device's old tokens, as the spec asks.
    pub async fn login(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        ip: Option<&str>,
        tokens: NewTokens<'_>,
    ) -> StorageResult<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
             VALUES ($1, $2, $3, $4, $4, $5)
             ON CONFLICT (user_id, device_id) DO UPDATE
             SET display_name = COALESCE(EXCLUDED.display_name, devices.display_name),
                 last_seen_ts = EXCLUDED.last_seen_ts, last_seen_ip = EXCLUDED.last_seen_ip",
            user_id,
            device_id,
            display_name,
            now,
            ip,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2", user_id, device_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query!("DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2", user_id, device_id)
            .execute(&mut *tx)
            .await?;
        let refresh_id = match tokens.refresh_hash {
            Some(hash) => Some(
                sqlx::query_scalar!(
                    "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)
                     VALUES ($1, $2, $3, $4) RETURNING id",
                    hash,
                    user_id,
                    device_id,
                    now
                )
                .fetch_one(&mut *tx)
                .await?,
            ),
            None => None,
        };
        sqlx::query!(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
            tokens.access_hash,
            user_id,
            device_id,
            now,
            tokens.access_expires_ts,
            refresh_id,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn token_owner(&self, access_hash: &[u8]) -> StorageResult<Option<TokenOwner>> {
        Ok(sqlx::query_as!(
            TokenOwner,
            "SELECT t.user_id, t.device_id, t.expires_ts, u.deactivated, u.is_admin, u.is_guest
             FROM access_tokens t JOIN users u USING (user_id)
             WHERE t.token_hash = $1",
            access_hash
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records when and from where a device was last seen.
    pub async fn touch(&self, user_id: &str, device_id: &str, ip: Option<&str>) -> StorageResult<()> {
        sqlx::query!(
            "UPDATE devices SET last_seen_ts = $3, last_seen_ip = COALESCE($4, last_seen_ip)
             WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id,
            now_ms(),
            ip
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn refresh_token(&self, hash: &[u8]) -> StorageResult<Option<RefreshRecord>> {
        Ok(sqlx::query_as!(
            RefreshRecord,
            "SELECT id, user_id, device_id, next_id FROM refresh_tokens WHERE token_hash = $1",
            hash
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Rotates refresh token `old_id`: issues a new access token and refresh token for the same
    /// device. The old refresh token stays valid until the new pair is first used (so a lost
    /// response can be retried), then goes away together with its access token.
    pub async fn rotate_refresh(
        &self,
        old_id: i64,
        user_id: &str,
        device_id: &str,
        tokens: NewTokens<'_>,
    ) -> StorageResult<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Using `old_id` is a use of the pair that replaced its predecessor: that one retires
        // now (with its access token), as on the first use of the new access token.
        sqlx::query!("DELETE FROM refresh_tokens WHERE next_id = $1", old_id).execute(&mut *tx).await?;
        // A retried refresh replaces the previously issued (never used) successor.
        sqlx::query!(
            "DELETE FROM refresh_tokens WHERE id = (SELECT next_id FROM refresh_tokens WHERE id = $1)",
            old_id
        )
        .execute(&mut *tx)
        .await?;
        let new_id = sqlx::query_scalar!(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)
             VALUES ($1, $2, $3, $4) RETURNING id",
            tokens.refresh_hash.unwrap_or_default(),
            user_id,
            device_id,
            now
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query!("UPDATE refresh_tokens SET next_id = $2 WHERE id = $1", old_id, new_id).execute(&mut *tx).await?;
        sqlx::query!(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
            tokens.access_hash,
            user_id,
            device_id,
            now,
            tokens.access_expires_ts,
            new_id,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Called when an access token from a rotated pair is first used: its predecessor refresh
    /// token (and the access token that came with it) stop working.
    pub async fn retire_predecessors(&self, access_hash: &[u8]) -> StorageResult<()> {
        sqlx::query!(
            "DELETE FROM refresh_tokens
             WHERE next_id = (SELECT refresh_token_id FROM access_tokens WHERE token_hash = $1)",
            access_hash
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Logs out one access token: the device and everything belonging to it go away.
    pub async fn delete_device(&self, user_id: &str, device_id: &str) -> StorageResult<bool> {
        let done = sqlx::query!("DELETE FROM devices WHERE user_id = $1 AND device_id = $2", user_id, device_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delete_devices(&self, user_id: &str, device_ids: &[String]) -> StorageResult<()> {
        sqlx::query!("DELETE FROM devices WHERE user_id = $1 AND device_id = ANY($2)", user_id, device_ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes every device of the user but `keep` (if given).
    pub async fn delete_all_devices(&self, user_id: &str, keep: Option<&str>) -> StorageResult<()> {
        sqlx::query!("DELETE FROM devices WHERE user_id = $1 AND device_id IS DISTINCT FROM $2", user_id, keep)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list(&self, user_id: &str) -> StorageResult<Vec<DeviceRecord>> {
        Ok(sqlx::query_as!(
            DeviceRecord,
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip
             FROM devices WHERE user_id = $1 ORDER BY device_id",
            user_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get(&self, user_id: &str, device_id: &str) -> StorageResult<Option<DeviceRecord>> {
        Ok(sqlx::query_as!(
            DeviceRecord,
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip
             FROM devices WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Renames a device; false when it does not exist.
    pub async fn rename(&self, user_id: &str, device_id: &str, name: Option<&str>) -> StorageResult<bool> {
        let done = sqlx::query!(
            "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id,
            name
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn add_login_token(&self, hash: &[u8], user_id: &str, expires_ts: i64) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
            hash,
            user_id,
            expires_ts
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes a login token (single use); the owner if it was valid and unexpired.
    pub async fn take_login_token(&self, hash: &[u8]) -> StorageResult<Option<String>> {
        Ok(sqlx::query_scalar!(
            "DELETE FROM login_tokens WHERE token_hash = $1 AND expires_ts > $2 RETURNING user_id",
            hash,
            now_ms()
        )
        .fetch_optional(&self.pool)
        .await?)
    }
}
