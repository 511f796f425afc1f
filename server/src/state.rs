//! `AppState`: every dependency of the HTTP layer, built once in `main` and passed explicitly.

use std::sync::Arc;

use crate::{
    config::Config,
    http::metrics::Metrics,
    service::{
        ServiceResult, account_data::AccountDataService, accounts::AccountService, passwords::PasswordHasherService,
        rate_limit::RateLimiter, registration::RegistrationService, sessions::SessionService, uiaa::UiaaService,
    },
    storage::Storage,
};

#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub storage: Storage,
    pub accounts: Arc<AccountService>,
    pub sessions: Arc<SessionService>,
    pub uiaa: Arc<UiaaService>,
    pub registration: Arc<RegistrationService>,
    pub account_data: Arc<AccountDataService>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(config: Config, storage: Storage) -> ServiceResult<Self> {
        let passwords = PasswordHasherService::new(config.login.argon2_memory_kib, config.login.argon2_iterations)?;
        let rl = &config.rate_limits;
        // Failed password attempts count against the account wherever they happen (login, UIA).
        let failed_logins = Arc::new(RateLimiter::new(rl.enabled, rl.login_failures_per_account));
        let accounts = Arc::new(AccountService::new(storage.clone(), passwords.clone(), &config));
        let sessions =
            Arc::new(SessionService::new(storage.clone(), passwords.clone(), &config, failed_logins.clone())?);
        let uiaa = Arc::new(UiaaService::new(storage.clone(), passwords, config.server_name.clone(), failed_logins));
        let registration = Arc::new(RegistrationService::new(
            &config,
            storage.clone(),
            accounts.clone(),
            sessions.clone(),
            uiaa.clone(),
        ));
        Ok(Self {
            accounts,
            sessions,
            uiaa,
            registration,
            account_data: Arc::new(AccountDataService::new(storage.clone())),
            metrics: Arc::new(Metrics::new()),
            storage,
            config: Arc::new(config),
        })
    }
}
