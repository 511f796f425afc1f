//! Accounts and their profiles.

use sqlx::PgPool;

use super::{StorageResult, now_ms};

#[derive(Clone, Debug)]
pub struct UserStore {
    pool: PgPool,
}

/// One account row.
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub created_ts: i64,
    pub is_guest: bool,
}

/// What a new account starts with.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub user_id: &'a str,
    pub localpart: &'a str,
    pub password_hash: Option<&'a str>,
    pub is_admin: bool,
    pub displayname: Option<&'a str>,
}

impl UserStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates the account; `StorageError::Conflict("users_pkey"|"users_localpart_key")` if taken.
    pub async fn create(&self, user: NewUser<'_>) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO users (user_id, localpart, password_hash, is_admin, displayname, created_ts)
             VALUES ($1, $2, $3, $4, $5, $6)",
            user.user_id,
            user.localpart,
            user.password_hash,
            user.is_admin,
            user.displayname,
            now_ms(),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Creates a guest account with the next numeric localpart on `server_name` (its display
    /// name is the localpart, as for other accounts). `None` when that localpart is taken (by an
    /// account older than the rule that keeps numeric names for guests): the caller tries again.
    pub async fn create_guest(&self, server_name: &str) -> StorageResult<Option<String>> {
        Ok(sqlx::query_scalar!(
            "INSERT INTO users (user_id, localpart, is_guest, displayname, created_ts)
             SELECT '@' || n || ':' || $1, n::text, TRUE, n::text, $2
             FROM (SELECT nextval('guest_localpart_seq') AS n) AS next
             ON CONFLICT DO NOTHING
             RETURNING user_id",
            server_name,
            now_ms(),
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Turns an active guest account into a full one with a password; `false` if `user_id` is
    /// not (or no longer) an active guest.
    pub async fn upgrade_guest(&self, user_id: &str, password_hash: Option<&str>) -> StorageResult<bool> {
        let done = sqlx::query!(
            "UPDATE users SET is_guest = FALSE, password_hash = $2
             WHERE user_id = $1 AND is_guest AND NOT deactivated",
            user_id,
            password_hash
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether `user_id` is a guest account of this server.
    pub async fn is_guest(&self, user_id: &str) -> StorageResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1 AND is_guest) AS "guest!""#,
            user_id
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// The guest accounts of this server that are joined to or invited into a room.
    pub async fn guests_in_room(&self, room_id: &str) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            "SELECT m.user_id FROM room_memberships m JOIN users u USING (user_id)
             WHERE m.room_id = $1 AND m.membership IN ('join', 'invite') AND u.is_guest
             ORDER BY m.user_id",
            room_id
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get(&self, user_id: &str) -> StorageResult<Option<UserRecord>> {
        Ok(sqlx::query_as!(
            UserRecord,
            "SELECT user_id, password_hash, is_admin, deactivated, displayname, avatar_url, created_ts, is_guest
             FROM users WHERE user_id = $1",
            user_id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Whether a localpart is taken, by any account ever created (deactivated ones included).
    pub async fn localpart_exists(&self, localpart: &str) -> StorageResult<bool> {
        Ok(sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM users WHERE localpart = $1) AS "exists!""#, localpart)
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> StorageResult<()> {
        sqlx::query!("UPDATE users SET password_hash = $2 WHERE user_id = $1", user_id, hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_admin(&self, user_id: &str, is_admin: bool) -> StorageResult<()> {
        sqlx::query!("UPDATE users SET is_admin = $2 WHERE user_id = $1", user_id, is_admin)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_displayname(&self, user_id: &str, name: Option<&str>) -> StorageResult<()> {
        sqlx::query!("UPDATE users SET displayname = $2 WHERE user_id = $1", user_id, name).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn set_avatar_url(&self, user_id: &str, url: Option<&str>) -> StorageResult<()> {
        sqlx::query!("UPDATE users SET avatar_url = $2 WHERE user_id = $1", user_id, url).execute(&self.pool).await?;
        Ok(())
    }

    /// Deactivates the account in one transaction: flag set, password and profile cleared,
    /// every device (and with it every token) removed.
    pub async fn deactivate(&self, user_id: &str, erase: bool) -> StorageResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "UPDATE users SET deactivated = TRUE, erased = erased OR $2, password_hash = NULL,
                 displayname = NULL, avatar_url = NULL
             WHERE user_id = $1",
            user_id,
            erase
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!("DELETE FROM devices WHERE user_id = $1", user_id).execute(&mut *tx).await?;
        sqlx::query!("DELETE FROM login_tokens WHERE user_id = $1", user_id).execute(&mut *tx).await?;
        sqlx::query!("DELETE FROM openid_tokens WHERE user_id = $1", user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Those of `user_ids` whose account was erased.
    pub async fn erased_among(&self, user_ids: &[String]) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar!("SELECT user_id FROM users WHERE erased AND user_id = ANY($1)", user_ids)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn count(&self) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM users"#).fetch_one(&self.pool).await?)
    }

    /// Stores an OpenID token's hash until `expires`, dropping expired ones.
    pub async fn add_openid_token(&self, hash: &[u8], user_id: &str, expires: i64) -> StorageResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("DELETE FROM openid_tokens WHERE expires_ts < $1", now_ms()).execute(&mut *tx).await?;
        sqlx::query!(
            "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
            hash,
            user_id,
            expires
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user of an unexpired OpenID token.
    pub async fn openid_user(&self, hash: &[u8], now: i64) -> StorageResult<Option<String>> {
        Ok(sqlx::query_scalar!(
            "SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2",
            hash,
            now
        )
        .fetch_optional(&self.pool)
        .await?)
    }
}
