//! User-interactive authentication sessions, registration tokens and admin-registration nonces.

use sqlx::PgPool;

use super::{StorageResult, now_ms};

#[derive(Clone, Debug)]
pub struct UiaaStore {
    pool: PgPool,
}

#[derive(Clone, Debug)]
pub struct UiaaSessionRecord {
    pub session_id: String,
    pub purpose: String,
    pub user_id: Option<String>,
    pub completed: Vec<String>,
    pub registration_token: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RegistrationTokenRecord {
    pub token: String,
    pub uses_allowed: Option<i32>,
    pub pending: i32,
    pub completed: i32,
    pub expiry_time: Option<i64>,
}

impl UiaaStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn create_session(
        &self,
        session_id: &str,
        purpose: &str,
        user_id: Option<&str>,
        lifetime_ms: i64,
    ) -> StorageResult<()> {
        let now = now_ms();
        sqlx::query!(
            "INSERT INTO uiaa_sessions (session_id, purpose, user_id, created_ts, expires_ts)
             VALUES ($1, $2, $3, $4, $5)",
            session_id,
            purpose,
            user_id,
            now,
            now + lifetime_ms
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session if it exists and has not expired.
    pub async fn session(&self, session_id: &str) -> StorageResult<Option<UiaaSessionRecord>> {
        Ok(sqlx::query_as!(
            UiaaSessionRecord,
            "SELECT session_id, purpose, user_id, completed, registration_token
             FROM uiaa_sessions WHERE session_id = $1 AND expires_ts > $2",
            session_id,
            now_ms()
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn complete_stage(&self, session_id: &str, stage: &str) -> StorageResult<()> {
        sqlx::query!(
            "UPDATE uiaa_sessions SET completed = array_append(completed, $2)
             WHERE session_id = $1 AND NOT ($2 = ANY(completed))",
            session_id,
            stage
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_session(&self, session_id: &str) -> StorageResult<()> {
        sqlx::query!("DELETE FROM uiaa_sessions WHERE session_id = $1", session_id).execute(&self.pool).await?;
        Ok(())
    }

    /// Drops expired sessions (and releases the registration tokens they held).
    pub async fn purge_expired(&self) -> StorageResult<u64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "UPDATE registration_tokens r SET pending = pending - s.n
             FROM (SELECT registration_token, count(*)::int AS n FROM uiaa_sessions
                   WHERE expires_ts <= $1 AND registration_token IS NOT NULL
                   GROUP BY registration_token) s
             WHERE r.token = s.registration_token",
            now_ms()
        )
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query!("DELETE FROM uiaa_sessions WHERE expires_ts <= $1", now_ms()).execute(&mut *tx).await?;
        sqlx::query!("DELETE FROM admin_register_nonces WHERE created_ts <= $1", now_ms() - 60_000)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Reserves one use of `token` for the session: fails (false) if the token is unknown,
    /// expired or used up. Pending uses count against `uses_allowed`.
    pub async fn reserve_registration_token(&self, session_id: &str, token: &str) -> StorageResult<bool> {
        let mut tx = self.pool.begin().await?;
        let reserved = sqlx::query!(
            "UPDATE registration_tokens SET pending = pending + 1
             WHERE token = $1
               AND (expiry_time IS NULL OR expiry_time > $2)
               AND (uses_allowed IS NULL OR pending + completed < uses_allowed)",
            token,
            now_ms()
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if reserved {
            sqlx::query!("UPDATE uiaa_sessions SET registration_token = $2 WHERE session_id = $1", session_id, token)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(reserved)
    }

    /// Turns the session's pending token use into a completed one.
    pub async fn consume_registration_token(&self, session_id: &str) -> StorageResult<()> {
        sqlx::query!(
            "UPDATE registration_tokens SET pending = pending - 1, completed = completed + 1
             WHERE token = (SELECT registration_token FROM uiaa_sessions WHERE session_id = $1)",
            session_id
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether a token could be used now (`/register/m.login.registration_token/validity`).
    pub async fn registration_token_valid(&self, token: &str) -> StorageResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM registration_tokens WHERE token = $1
                 AND (expiry_time IS NULL OR expiry_time > $2)
                 AND (uses_allowed IS NULL OR pending + completed < uses_allowed)) AS "valid!""#,
            token,
            now_ms()
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn create_registration_token(&self, t: &RegistrationTokenRecord) -> StorageResult<()> {
        sqlx::query!(
            "INSERT INTO registration_tokens (token, uses_allowed, expiry_time) VALUES ($1, $2, $3)",
            t.token,
            t.uses_allowed,
            t.expiry_time
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn registration_tokens(&self) -> StorageResult<Vec<RegistrationTokenRecord>> {
        Ok(sqlx::query_as!(
            RegistrationTokenRecord,
            "SELECT token, uses_allowed, pending, completed, expiry_time
             FROM registration_tokens ORDER BY token"
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn registration_token(&self, token: &str) -> StorageResult<Option<RegistrationTokenRecord>> {
        Ok(sqlx::query_as!(
            RegistrationTokenRecord,
            "SELECT token, uses_allowed, pending, completed, expiry_time
             FROM registration_tokens WHERE token = $1",
            token
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Changes limits of a token; `None` leaves a field alone, `Some(None)` clears it.
    pub async fn update_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<Option<i32>>,
        expiry_time: Option<Option<i64>>,
    ) -> StorageResult<Option<RegistrationTokenRecord>> {
        Ok(sqlx::query_as!(
            RegistrationTokenRecord,
            "UPDATE registration_tokens SET
                 uses_allowed = CASE WHEN $2 THEN $3 ELSE uses_allowed END,
                 expiry_time = CASE WHEN $4 THEN $5 ELSE expiry_time END
             WHERE token = $1
             RETURNING token, uses_allowed, pending, completed, expiry_time",
            token,
            uses_allowed.is_some(),
            uses_allowed.flatten(),
            expiry_time.is_some(),
            expiry_time.flatten()
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn delete_registration_token(&self, token: &str) -> StorageResult<bool> {
        Ok(sqlx::query!("DELETE FROM registration_tokens WHERE token = $1", token)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    pub async fn add_admin_nonce(&self, nonce: &str) -> StorageResult<()> {
        sqlx::query!("INSERT INTO admin_register_nonces (nonce, created_ts) VALUES ($1, $2)", nonce, now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Consumes a nonce issued less than a minute ago.
    pub async fn take_admin_nonce(&self, nonce: &str) -> StorageResult<bool> {
        Ok(sqlx::query!(
            "DELETE FROM admin_register_nonces WHERE nonce = $1 AND created_ts > $2",
            nonce,
            now_ms() - 60_000
        )
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }
}
