//! Registration: the `/register` flow (username check, UIA with dummy or registration-token
//! stages, account creation, first device) and its side endpoints.

use std::sync::Arc;

use ruma::{
    OwnedUserId,
    api::client::uiaa::{AuthData, AuthFlow, AuthType},
};

use super::{
    ServiceError, ServiceResult,
    accounts::AccountService,
    rate_limit::RateLimiter,
    sessions::{IssuedTokens, LoginRequest, SessionService},
    uiaa::{Purpose, UiaaService},
};
use crate::{config::Config, storage::Storage};

/// What a client sends to `/register`.
#[derive(Debug, Default)]
pub struct RegistrationRequest {
    pub username: Option<String>,
    pub password: Option<String>,
    pub auth: Option<AuthData>,
    pub inhibit_login: bool,
    /// The first device (ignored with `inhibit_login`).
    pub device: LoginRequest,
    /// The access token of a guest account to turn into this full account, keeping its user id.
    pub guest_access_token: Option<String>,
}

#[derive(Debug)]
pub struct RegistrationService {
    enabled: bool,
    requires_token: bool,
    allow_guests: bool,
    storage: Storage,
    accounts: Arc<AccountService>,
    sessions: Arc<SessionService>,
    uiaa: Arc<UiaaService>,
    per_ip: RateLimiter,
}

impl RegistrationService {
    pub fn new(
        config: &Config,
        storage: Storage,
        accounts: Arc<AccountService>,
        sessions: Arc<SessionService>,
        uiaa: Arc<UiaaService>,
    ) -> Self {
        let rl = &config.rate_limits;
        Self {
            enabled: config.registration.enabled,
            requires_token: config.registration.requires_token,
            allow_guests: config.registration.allow_guest_access,
            storage,
            accounts,
            sessions,
            uiaa,
            per_ip: RateLimiter::new(rl.enabled, rl.registration_per_ip),
        }
    }

    fn admit(&self, ip: Option<&str>) -> ServiceResult<()> {
        if !self.enabled {
            return Err(ServiceError::RegistrationDisabled);
        }
        self.limit(ip)
    }

    fn limit(&self, ip: Option<&str>) -> ServiceResult<()> {
        match ip.map(|ip| self.per_ip.check(ip)) {
            Some(Err(retry_after_ms)) => Err(ServiceError::RateLimited { retry_after_ms }),
            _ => Ok(()),
        }
    }

    /// The flows `/register` offers.
    fn flows(&self) -> Vec<AuthFlow> {
        if self.requires_token {
            vec![AuthFlow::new(vec![AuthType::RegistrationToken])]
        } else {
            vec![AuthFlow::new(vec![AuthType::Dummy]), AuthFlow::new(vec![AuthType::RegistrationToken])]
        }
    }

    /// One step of `/register`: a 401 challenge until UIA is complete, then the account (and,
    /// unless inhibited, its first device's tokens).
    pub async fn register(&self, request: RegistrationRequest) -> ServiceResult<(OwnedUserId, Option<IssuedTokens>)> {
        self.admit(request.device.ip.as_deref())?;
        // The username (or the guest to upgrade) is checked before UIA starts, so clients learn
        // early that it is taken.
        let upgrading = match request.guest_access_token.as_deref() {
            Some(token) => Some(self.guest_to_upgrade(token, request.username.as_deref()).await?),
            None => None,
        };
        let localpart = match (&upgrading, request.username.as_deref()) {
            (Some(_), _) => String::new(),
            (None, Some(name)) => {
                let name = name.to_lowercase();
                check_not_numeric(&name)?;
                self.accounts.check_available(&name).await?;
                name
            }
            (None, None) => self.accounts.generate_localpart().await?,
        };
        let passed = self.uiaa.authenticate(Purpose::Register, None, request.auth.as_ref(), &self.flows()).await?;
        let user_id = match upgrading {
            Some(guest) => {
                self.accounts.upgrade_guest(&guest, request.password).await?;
                guest
            }
            None => self.accounts.create(&localpart, request.password, false, None).await?,
        };
        self.storage.uiaa.consume_registration_token(&passed.session_id).await?;
        self.uiaa.finish(passed).await?;
        let tokens = if request.inhibit_login {
            None
        } else {
            Some(self.sessions.issue(user_id.as_str(), request.device).await?)
        };
        Ok((user_id, tokens))
    }

    /// The guest account a `guest_access_token` belongs to, which a registration naming
    /// `username` (if any) may turn into a full account: only the guest's own.
    async fn guest_to_upgrade(&self, token: &str, username: Option<&str>) -> ServiceResult<OwnedUserId> {
        let session = self.sessions.authenticate(token, None).await?;
        if !session.is_guest {
            return Err(ServiceError::Forbidden("the guest_access_token is not a guest's".into()));
        }
        let user_id = OwnedUserId::try_from(session.user_id).map_err(|e| ServiceError::Internal(e.to_string()))?;
        if let Some(name) = username
            && super::accounts::qualify(name, self.accounts.server_name()).as_deref() != Some(user_id.as_str())
        {
            return Err(ServiceError::Forbidden("a guest can only upgrade its own account".into()));
        }
        Ok(user_id)
    }

    /// `/register?kind=guest`: a new guest account and its first device.
    pub async fn register_guest(&self, device: LoginRequest) -> ServiceResult<(OwnedUserId, IssuedTokens)> {
        if !self.allow_guests {
            return Err(ServiceError::GuestAccessForbidden("guest access is disabled on this server".into()));
        }
        self.limit(device.ip.as_deref())?;
        let user_id = self.accounts.create_guest().await?;
        let tokens = self.sessions.issue(user_id.as_str(), device).await?;
        Ok((user_id, tokens))
    }

    /// `/register/available`.
    pub async fn check_available(&self, localpart: &str, ip: Option<&str>) -> ServiceResult<()> {
        self.admit(ip)?;
        check_not_numeric(localpart)?;
        self.accounts.check_available(localpart).await?;
        Ok(())
    }

    /// `/register/m.login.registration_token/validity`.
    pub async fn token_valid(&self, token: &str, ip: Option<&str>) -> ServiceResult<bool> {
        self.admit(ip)?;
        Ok(self.storage.uiaa.registration_token_valid(token).await?)
    }
}

/// Numeric localparts are the guests' (as on Synapse), so a guest's user id never was someone
/// else's.
fn check_not_numeric(localpart: &str) -> ServiceResult<()> {
    if !localpart.is_empty() && localpart.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ServiceError::InvalidUsername("numeric user ids are reserved for guest accounts".into()));
    }
    Ok(())
}
