//! Sessions: logging in (password, login token, JWT), access-token authentication, refresh
//! tokens, logout and the device list.

// In-memory only, never serialised: iteration order cannot reach the wire.
#![allow(clippy::disallowed_types)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    ServiceError, ServiceResult, accounts::AccountService, jwt::JwtVerifier, passwords::PasswordHasherService,
    rate_limit::RateLimiter, tokens,
};
use crate::{
    config::Config,
    storage::{
        Storage,
        devices::{DeviceRecord, NewTokens},
        now_ms,
    },
};

/// Update a device's "last seen" at most this often.
const LAST_SEEN_INTERVAL: Duration = Duration::from_secs(60);

/// An authenticated client: who, from which device.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: String,
    pub device_id: String,
    pub is_admin: bool,
    /// A guest account: limited to the guest endpoints (see `http::guest`).
    pub is_guest: bool,
}

/// How a client proves who it is at `/login`.
#[derive(Debug)]
pub enum Credentials {
    Password { user: String, password: String },
    LoginToken(String),
    Jwt(String),
}

/// What the client asked for besides the credentials.
#[derive(Debug, Default)]
pub struct LoginRequest {
    pub device_id: Option<String>,
    pub initial_device_display_name: Option<String>,
    pub refresh_token: bool,
    pub ip: Option<String>,
}

/// Tokens handed to a client.
#[derive(Debug)]
pub struct IssuedTokens {
    pub user_id: String,
    pub device_id: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

#[derive(Debug)]
pub struct SessionService {
    storage: Storage,
    passwords: PasswordHasherService,
    server_name: String,
    access_token_lifetime_ms: i64,
    login_token_lifetime_ms: i64,
    jwt: Option<JwtVerifier>,
    jwt_create_users: bool,
    login_per_ip: RateLimiter,
    failed_logins: Arc<RateLimiter>,
    last_seen: Mutex<HashMap<(String, String), Instant>>,
    /// The room engine, for taking deleted devices out of MLS groups; set once the room service
    /// exists (it is built after this one).
    rooms: std::sync::OnceLock<Arc<super::rooms::RoomService>>,
}

impl SessionService {
    pub fn new(
        storage: Storage,
        passwords: PasswordHasherService,
        config: &Config,
        failed_logins: Arc<RateLimiter>,
    ) -> ServiceResult<Self> {
        let rl = &config.rate_limits;
        Ok(Self {
            storage,
            passwords,
            server_name: config.server_name.clone(),
            access_token_lifetime_ms: config.login.access_token_lifetime_secs as i64 * 1000,
            login_token_lifetime_ms: config.login.login_token_lifetime_secs as i64 * 1000,
            jwt: JwtVerifier::from_config(&config.login.jwt)?,
            jwt_create_users: config.login.jwt.create_users,
            login_per_ip: RateLimiter::new(rl.enabled, rl.login_per_ip),
            failed_logins,
            last_seen: Mutex::new(HashMap::new()),
            rooms: std::sync::OnceLock::new(),
        })
    }

    /// Whether JWT login is offered.
    pub fn jwt_enabled(&self) -> bool {
        self.jwt.is_some()
    }

    /// Resolves an access token to its session.
    pub async fn authenticate(&self, access_token: &str, ip: Option<&str>) -> ServiceResult<Session> {
        let hash = tokens::token_hash(access_token);
        let owner =
            self.storage.devices.token_owner(&hash).await?.ok_or(ServiceError::UnknownToken { soft_logout: false })?;
        if owner.deactivated {
            return Err(ServiceError::UnknownToken { soft_logout: false });
        }
        if owner.expires_ts.is_some_and(|exp| exp <= now_ms()) {
            return Err(ServiceError::UnknownToken { soft_logout: true });
        }
        if owner.expires_ts.is_some() {
            // First use of a refreshed pair retires the pair it replaced.
            self.storage.devices.retire_predecessors(&hash).await?;
        }
        self.maybe_touch(&owner.user_id, &owner.device_id, ip).await;
        Ok(Session {
            user_id: owner.user_id,
            device_id: owner.device_id,
            is_admin: owner.is_admin,
            is_guest: owner.is_guest,
        })
    }

    async fn maybe_touch(&self, user_id: &str, device_id: &str, ip: Option<&str>) {
        let key = (user_id.to_owned(), device_id.to_owned());
        {
            let mut seen = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.get(&key).is_some_and(|at| at.elapsed() < LAST_SEEN_INTERVAL) {
                return;
            }
            if seen.len() > 100_000 {
                seen.clear();
            }
            seen.insert(key, Instant::now());
        }
        if let Err(e) = self.storage.devices.touch(user_id, device_id, ip).await {
            tracing::warn!(error = %e, user_id, "could not record device last-seen");
        }
    }

    /// `/login`: checks the credentials and issues tokens for a (new or existing) device.
    pub async fn login(
        &self,
        credentials: Credentials,
        request: LoginRequest,
        accounts: &AccountService,
    ) -> ServiceResult<IssuedTokens> {
        if let Some(ip) = &request.ip
            && let Err(ms) = self.login_per_ip.check(ip)
        {
            return Err(ServiceError::RateLimited { retry_after_ms: ms });
        }
        let user_id = match credentials {
            Credentials::Password { user, password } => self.check_password(&user, password).await?,
            Credentials::LoginToken(token) => self
                .storage
                .devices
                .take_login_token(&tokens::token_hash(&token))
                .await?
                .ok_or_else(|| ServiceError::Forbidden("invalid or expired login token".into()))?,
            Credentials::Jwt(token) => {
                let jwt =
                    self.jwt.as_ref().ok_or_else(|| ServiceError::UnknownLoginType("org.matrix.login.jwt".into()))?;
                let localpart = jwt.verify(&token).await?;
                let user_id = accounts.validate_localpart(&localpart)?;
                if self.storage.users.get(user_id.as_str()).await?.is_none() {
                    if !self.jwt_create_users {
                        return Err(ServiceError::Forbidden("no account for this identity".into()));
                    }
                    match accounts.create(&localpart, None, false, None).await {
                        Ok(_) | Err(ServiceError::UserInUse) => {}
                        Err(e) => return Err(e),
                    }
                }
                user_id.to_string()
            }
        };
        let user = self.storage.users.get(&user_id).await?.ok_or(ServiceError::WrongCredentials)?;
        if user.deactivated {
            return Err(ServiceError::UserDeactivated);
        }
        self.issue(&user_id, request).await
    }

    async fn check_password(&self, user: &str, password: String) -> ServiceResult<String> {
        let user_id = super::accounts::qualify(user, &self.server_name).ok_or(ServiceError::WrongCredentials)?;
        if !self.failed_logins.would_allow(&user_id) {
            let retry_after_ms = self.failed_logins.check(&user_id).err().unwrap_or(1000);
            return Err(ServiceError::RateLimited { retry_after_ms });
        }
        let record = self.storage.users.get(&user_id).await?;
        let ok = match record.as_ref().and_then(|u| u.password_hash.clone()) {
            Some(hash) => self.passwords.verify(password, hash).await?,
            None => {
                // Spend the same time on unknown users, so timing does not reveal accounts.
                let _ = self.passwords.hash(password).await;
                false
            }
        };
        if !ok {
            let _ = self.failed_logins.check(&user_id);
            if record.is_some_and(|u| u.deactivated) {
                return Err(ServiceError::UserDeactivated);
            }
            return Err(ServiceError::WrongCredentials);
        }
        Ok(user_id)
    }

    /// Issues tokens for a device of `user_id` (login and registration).
    pub async fn issue(&self, user_id: &str, request: LoginRequest) -> ServiceResult<IssuedTokens> {
        let device_id = match request.device_id.filter(|d| !d.is_empty()) {
            Some(d) if d.len() <= 255 => d,
            Some(_) => return Err(ServiceError::InvalidParam("device_id longer than 255 bytes".into())),
            None => tokens::new_device_id(),
        };
        let access_token = tokens::new_token("pst");
        let refresh_token = request.refresh_token.then(|| tokens::new_token("pstr"));
        let expires_in_ms = request.refresh_token.then_some(self.access_token_lifetime_ms);
        let access_hash = tokens::token_hash(&access_token);
        let refresh_hash = refresh_token.as_deref().map(tokens::token_hash);
        self.storage
            .devices
            .login(
                user_id,
                &device_id,
                request.initial_device_display_name.as_deref(),
                request.ip.as_deref(),
                NewTokens {
                    access_hash: &access_hash,
                    access_expires_ts: expires_in_ms.map(|ms| now_ms() + ms),
                    refresh_hash: refresh_hash.as_deref(),
                },
            )
            .await?;
        tracing::info!(user_id, device_id, "logged in");
        Ok(IssuedTokens {
            user_id: user_id.to_owned(),
            device_id,
            access_token,
            refresh_token,
            expires_in_ms: expires_in_ms.map(|ms| ms as u64),
        })
    }

    /// `/refresh`: a new access token and refresh token for the refresh token's device.
    pub async fn refresh(&self, refresh_token: &str) -> ServiceResult<IssuedTokens> {
        let record = self
            .storage
            .devices
            .refresh_token(&tokens::token_hash(refresh_token))
            .await?
            .ok_or(ServiceError::UnknownToken { soft_logout: false })?;
        let access_token = tokens::new_token("pst");
        let new_refresh = tokens::new_token("pstr");
        let access_hash = tokens::token_hash(&access_token);
        let refresh_hash = tokens::token_hash(&new_refresh);
        self.storage
            .devices
            .rotate_refresh(
                record.id,
                &record.user_id,
                &record.device_id,
                NewTokens {
                    access_hash: &access_hash,
                    access_expires_ts: Some(now_ms() + self.access_token_lifetime_ms),
                    refresh_hash: Some(&refresh_hash),
                },
            )
            .await?;
        Ok(IssuedTokens {
            user_id: record.user_id,
            device_id: record.device_id,
            access_token,
            refresh_token: Some(new_refresh),
            expires_in_ms: Some(self.access_token_lifetime_ms as u64),
        })
    }

    /// `/login/get_token`: a short-lived single-use `m.login.token`.
    pub async fn create_login_token(&self, user_id: &str) -> ServiceResult<(String, u64)> {
        let token = tokens::new_token("pstl");
        self.storage
            .devices
            .add_login_token(&tokens::token_hash(&token), user_id, now_ms() + self.login_token_lifetime_ms)
            .await?;
        Ok((token, self.login_token_lifetime_ms as u64))
    }

    /// `/logout`: the session's device goes away with all its tokens.
    pub async fn logout(&self, session: &Session) -> ServiceResult<()> {
        // Other servers learn of it from the device-list stream.
        self.storage.devices.delete_device(&session.user_id, &session.device_id).await?;
        Ok(())
    }

    /// `/logout/all`, and password changes that log out other devices.
    pub async fn logout_all(&self, user_id: &str, keep_device: Option<&str>) -> ServiceResult<()> {
        self.storage.devices.delete_all_devices(user_id, keep_device).await?;
        Ok(())
    }

    pub async fn devices(&self, user_id: &str) -> ServiceResult<Vec<DeviceRecord>> {
        Ok(self.storage.devices.list(user_id).await?)
    }

    pub async fn device(&self, user_id: &str, device_id: &str) -> ServiceResult<DeviceRecord> {
        self.storage
            .devices
            .get(user_id, device_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such device".into()))
    }

    pub async fn rename_device(&self, user_id: &str, device_id: &str, name: Option<&str>) -> ServiceResult<()> {
        if name.is_some_and(|n| n.len() > 256) {
            return Err(ServiceError::InvalidParam("display name longer than 256 bytes".into()));
        }
        let Some(name) = name else {
            // The spec: "If not given, the display name is unchanged."
            return self.device(user_id, device_id).await.map(|_| ());
        };
        if self.storage.devices.rename(user_id, device_id, Some(name)).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound("no such device".into()))
        }
    }

    pub async fn delete_devices(&self, user_id: &str, device_ids: &[String]) -> ServiceResult<()> {
        self.storage.devices.delete_devices(user_id, device_ids).await?;
        if let Some(rooms) = self.rooms.get() {
            for device_id in device_ids {
                rooms.mls_device_deleted(user_id, device_id).await?;
            }
        }
        Ok(())
    }

    /// Connects the room engine (see the `rooms` field).
    pub fn set_rooms(&self, rooms: Arc<super::rooms::RoomService>) {
        let _ = self.rooms.set(rooms);
    }
}
