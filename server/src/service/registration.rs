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
}

#[derive(Debug)]
pub struct RegistrationService {
    enabled: bool,
    requires_token: bool,
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
        // The username is checked before UIA starts, so clients learn early that it is taken.
        let localpart = match request.username.as_deref() {
            Some(name) => {
                let name = name.to_lowercase();
                self.accounts.check_available(&name).await?;
                name
            }
            None => self.accounts.generate_localpart().await?,
        };
        let passed = self.uiaa.authenticate(Purpose::Register, None, request.auth.as_ref(), &self.flows()).await?;
        let user_id = self.accounts.create(&localpart, request.password, false, None).await?;
        self.storage.uiaa.consume_registration_token(&passed.session_id).await?;
        self.uiaa.finish(passed).await?;
        let tokens = if request.inhibit_login {
            None
        } else {
            Some(self.sessions.issue(user_id.as_str(), request.device).await?)
        };
        Ok((user_id, tokens))
    }

    /// `/register/available`.
    pub async fn check_available(&self, localpart: &str, ip: Option<&str>) -> ServiceResult<()> {
        self.admit(ip)?;
        self.accounts.check_available(localpart).await?;
        Ok(())
    }

    /// `/register/m.login.registration_token/validity`.
    pub async fn token_valid(&self, token: &str, ip: Option<&str>) -> ServiceResult<bool> {
        self.admit(ip)?;
        Ok(self.storage.uiaa.registration_token_valid(token).await?)
    }
}
