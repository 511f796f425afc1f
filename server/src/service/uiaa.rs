//! User-interactive authentication (UIA): sessions that collect completed stages until one of
//! an endpoint's flows is satisfied. Sessions live in PostgreSQL, so any process can continue
//! them, and are bound to one purpose and (except for registration) one user.

use std::sync::Arc;

use ruma::api::{
    client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
    error::{ErrorKind, StandardErrorBody},
};
use sha2::{Digest, Sha256};

use super::{ServiceError, ServiceResult, passwords::PasswordHasherService, rate_limit::RateLimiter, tokens};
use crate::storage::Storage;

/// How long a UIA session may take to complete.
const SESSION_LIFETIME_MS: i64 = 30 * 60 * 1000;

/// What a UIA-protected operation is; a session cannot be reused for another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Register,
    ChangePassword,
    Deactivate,
    /// Deleting one particular set of devices (a digest of their ids): a session started to
    /// delete some devices cannot be used to delete others.
    DeleteDevices([u8; 8]),
    GetLoginToken,
    /// Replacing the user's cross-signing keys.
    UploadSigningKeys,
}

impl Purpose {
    /// The purpose of deleting exactly `device_ids` (in any order).
    pub fn delete_devices<S: AsRef<str>>(device_ids: &[S]) -> Self {
        let mut ids: Vec<&str> = device_ids.iter().map(AsRef::as_ref).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut hasher = Sha256::new();
        for id in ids {
            hasher.update((id.len() as u64).to_le_bytes());
            hasher.update(id.as_bytes());
        }
        let mut digest = [0u8; 8];
        digest.copy_from_slice(&hasher.finalize()[..8]);
        Self::DeleteDevices(digest)
    }

    /// How the purpose is stored with the session.
    fn key(self) -> String {
        match self {
            Self::Register => "register".to_owned(),
            Self::ChangePassword => "change_password".to_owned(),
            Self::Deactivate => "deactivate".to_owned(),
            Self::DeleteDevices(digest) => format!("delete_devices:{}", hex::encode(digest)),
            Self::GetLoginToken => "get_login_token".to_owned(),
            Self::UploadSigningKeys => "upload_signing_keys".to_owned(),
        }
    }
}

/// A completed authentication.
#[derive(Debug)]
pub struct UiaaPassed {
    pub session_id: String,
}

#[derive(Debug)]
pub struct UiaaService {
    storage: Storage,
    passwords: PasswordHasherService,
    server_name: String,
    failed_logins: Arc<RateLimiter>,
}

impl UiaaService {
    pub fn new(
        storage: Storage,
        passwords: PasswordHasherService,
        server_name: String,
        failed_logins: Arc<RateLimiter>,
    ) -> Self {
        Self { storage, passwords, server_name, failed_logins }
    }

    /// The flows offered to a logged-in user re-authenticating: their password.
    pub fn password_flows() -> Vec<AuthFlow> {
        vec![AuthFlow::new(vec![AuthType::Password])]
    }

    /// Runs one UIA step. `Ok` once a flow is complete; otherwise
    /// `ServiceError::AuthRequired` with the 401 body the client needs for the next step.
    pub async fn authenticate(
        &self,
        purpose: Purpose,
        user_id: Option<&str>,
        auth: Option<&AuthData>,
        flows: &[AuthFlow],
    ) -> ServiceResult<UiaaPassed> {
        let Some(auth) = auth else {
            let session_id = self.new_session(purpose, user_id).await?;
            return Err(self.challenge(flows, session_id, Vec::new(), None));
        };

        let session_id = match auth.session() {
            Some(id) => id.to_owned(),
            None => self.new_session(purpose, user_id).await?,
        };
        let session = self
            .storage
            .uiaa
            .session(&session_id)
            .await?
            .ok_or_else(|| ServiceError::InvalidParam("unknown or expired UIA session".into()))?;
        // As Synapse: a session continued for another operation (or by another user) is refused.
        if session.purpose != purpose.key() || session.user_id.as_deref() != user_id {
            return Err(ServiceError::Forbidden("the UIA session was started for another operation or user".into()));
        }

        let mut completed = session.completed.clone();
        let stage_error = match self.run_stage(&session_id, purpose, user_id, auth).await? {
            Ok(stage) => {
                self.storage.uiaa.complete_stage(&session_id, stage.as_str()).await?;
                if !completed.iter().any(|s| s == stage.as_str()) {
                    completed.push(stage.as_str().to_owned());
                }
                None
            }
            Err(err) => Some(err),
        };

        let done =
            flows.iter().any(|flow| flow.stages.iter().all(|stage| completed.iter().any(|c| c == stage.as_str())));
        if done && stage_error.is_none() {
            return Ok(UiaaPassed { session_id });
        }
        let completed = completed.iter().map(|s| AuthType::from(s.as_str())).collect();
        Err(self.challenge(flows, session_id, completed, stage_error))
    }

    /// Ends a session once the protected operation has succeeded.
    pub async fn finish(&self, passed: UiaaPassed) -> ServiceResult<()> {
        self.storage.uiaa.delete_session(&passed.session_id).await?;
        Ok(())
    }

    async fn new_session(&self, purpose: Purpose, user_id: Option<&str>) -> ServiceResult<String> {
        let session_id = tokens::random_alphanumeric(24);
        self.storage.uiaa.create_session(&session_id, &purpose.key(), user_id, SESSION_LIFETIME_MS).await?;
        Ok(session_id)
    }

    fn challenge(
        &self,
        flows: &[AuthFlow],
        session_id: String,
        completed: Vec<AuthType>,
        error: Option<StandardErrorBody>,
    ) -> ServiceError {
        let mut info = UiaaInfo::new(flows.to_vec());
        info.session = Some(session_id);
        info.completed = completed;
        info.auth_error = error.map(Box::new);
        info.params = Some(serde_json::value::to_raw_value(&serde_json::json!({})).expect("static json"));
        ServiceError::AuthRequired(Box::new(info))
    }

    /// Checks one stage; the stage's type when it passed, else the error to report in the 401.
    async fn run_stage(
        &self,
        session_id: &str,
        purpose: Purpose,
        user_id: Option<&str>,
        auth: &AuthData,
    ) -> ServiceResult<Result<AuthType, StandardErrorBody>> {
        let forbidden = |msg: &str| StandardErrorBody::new(ErrorKind::Forbidden, msg.to_owned());
        Ok(match auth {
            AuthData::Dummy(_) => Ok(AuthType::Dummy),
            AuthData::Password(p) => {
                let Some(user_id) = user_id else {
                    return Ok(Err(forbidden("password authentication needs a logged-in user")));
                };
                let claimed = match &p.identifier {
                    UserIdentifier::Matrix(id) => crate::service::accounts::qualify(&id.user, &self.server_name),
                    _ => None,
                };
                if claimed.as_deref() != Some(user_id) {
                    // Someone else's credentials never authorise this user's request: a hard
                    // 403, as Synapse (and Sytest) have it, not a stage to retry.
                    return Err(ServiceError::Forbidden("the identifier does not name the logged-in user".into()));
                }
                if !self.failed_logins.would_allow(user_id) {
                    return Err(ServiceError::RateLimited { retry_after_ms: 1000 });
                }
                let hash = self.storage.users.get(user_id).await?.and_then(|u| u.password_hash);
                let ok = match hash {
                    Some(hash) => self.passwords.verify(p.password.clone(), hash).await?,
                    None => false,
                };
                if ok {
                    Ok(AuthType::Password)
                } else {
                    let _ = self.failed_logins.check(user_id);
                    Err(forbidden("invalid password"))
                }
            }
            AuthData::RegistrationToken(t) if purpose == Purpose::Register => {
                if self.storage.uiaa.reserve_registration_token(session_id, &t.token).await? {
                    Ok(AuthType::RegistrationToken)
                } else {
                    Err(StandardErrorBody::new(
                        ErrorKind::Unauthorized,
                        "invalid, expired or used-up registration token".to_owned(),
                    ))
                }
            }
            AuthData::FallbackAcknowledgement(_) => {
                Err(forbidden("no fallback stage has been completed in this session"))
            }
            other => Err(StandardErrorBody::new(
                ErrorKind::Unrecognized,
                format!(
                    "unsupported authentication stage {}",
                    other.auth_type().map(|t| t.to_string()).unwrap_or_default()
                ),
            )),
        })
    }
}
